"""Command line: ``bayesprune train`` and ``bayesprune inspect``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from bayesprune.data import DATASETS, DataError, load_dataset
from bayesprune.guides.gate_guide import POSTERIORS
from bayesprune.inference.elbo import ESTIMATORS, IMPLEMENTATIONS
from bayesprune.inference.elbo_fast import FAST_ESTIMATORS
from bayesprune.inference.trainer import TrainConfig, Trainer
from bayesprune.inspection import DRAWS
from bayesprune.runs import RunError

ARCHS = ("mlp", "lenet5", "vgg16")
EXIT_FAILED_RUN = 3  # the run finished its epochs but collapsed or diverged (summary "status")


class UsageError(Exception):
    """A mistake the user can fix; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        msg = f"widths must be comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _number(kind, ok, requirement: str):
    """An argparse type: a ``kind`` number for which ``ok(value)`` holds."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must {requirement}, got {text}")
        return value

    return parse


def _positive(kind):
    return _number(kind, lambda v: v > 0, "be positive")


_non_negative = _number(int, lambda v: v >= 0, "be a non-negative integer")
_open_unit_interval = _number(float, lambda v: 0 < v < 1, "lie in (0, 1)")


def _warmup_tolerance(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return _number(float, lambda v: 0 < v <= 1, "lie in (0, 1] or be 'none'")(text)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = _Parser(prog="bayesprune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train and prune a network")
    t.add_argument(
        "--arch",
        default="mlp",
        choices=ARCHS,
        help="mlp (LeNet-300-100 by default), lenet5 (LeNet-5-Caffe) or vgg16 (CIFAR VGG16-BN)",
    )
    t.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help="mlp hidden widths, e.g. 300,100 (LeNet-300-100, the default)",
    )
    t.add_argument(
        "--width-mult",
        type=_positive(float),
        default=1.0,
        help="scale every hidden layer (quick runs, starting-width studies)",
    )
    t.add_argument("--dataset", default="teacher", choices=DATASETS)
    t.add_argument("--data-dir", default=None, help="root folder with torchvision's layout")
    t.add_argument("--epochs", type=_positive(int), default=d.epochs)
    t.add_argument("--batch-size", type=_positive(int), default=d.batch_size)
    t.add_argument("--lr", type=_positive(float), default=d.lr, help="Adam learning rate (weights)")
    t.add_argument(
        "--lr-schedule",
        default=d.lr_schedule,
        choices=("constant", "cosine"),
        help="learning-rate schedule of the weights",
    )
    t.add_argument(
        "--lr-theta",
        type=_positive(float),
        default=d.lr_theta,
        help="θ step per example seen and unit of evidence (Eq. (10)); Adam lr with adam",
    )
    t.add_argument("--theta-optimizer", default=d.theta_optimizer, choices=("sgd", "adam"))
    t.add_argument(
        "--theta-window",
        type=_positive(float),
        default=d.theta_window,
        help="examples over which the gate evidence is averaged (Eq. (10))",
    )
    t.add_argument(
        "--warmup-tolerance",
        type=_warmup_tolerance,
        default=d.warmup_tolerance,
        help="θ moves once a block of examples improves the data term by less than this "
        "fraction of all learnt so far (Eq. (10w)); 'none': from the first step",
    )
    t.add_argument(
        "--release",
        default=d.release,
        choices=("ordered", "together"),
        help="after the warm-up, release the layers' θ from the output back, one evidence "
        "window apart (Eq. (10o)), or all together",
    )
    t.add_argument(
        "--temperature",
        type=_positive(float),
        default=d.temperature,
        help="prior temperature τ (scale on every prior term); default: 0.03·(N/60000)^½",
    )
    t.add_argument(
        "--train-subset",
        type=_positive(int),
        default=d.train_subset,
        help="train on a fixed random subset of this many training examples (seeded)",
    )
    t.add_argument(
        "--rho", type=_open_unit_interval, default=d.rho, help="spike/slab variance ratio"
    )
    t.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS)
    t.add_argument(
        "--elbo",
        default=d.elbo,
        choices=IMPLEMENTATIONS,
        help="how GatedELBO evaluates the objective: fast (no traces), traced (poutine.trace, "
        "the reference; needed by the exact and score estimators), auto: fast where it applies",
    )
    t.add_argument("--weights", default=d.weights, choices=("point", "gaussian"))
    t.add_argument("--posterior", default=d.posterior, choices=POSTERIORS)
    t.add_argument(
        "--check-every",
        type=_positive(int),
        default=d.check_every,
        help="steps between pruning checks",
    )
    t.add_argument(
        "--patience",
        type=_positive(int),
        default=d.patience,
        help="consecutive checks with θ = 0 before a unit is removed (default: enough to span "
        "the evidence window, ⌈window / (batch · check-every)⌉ + 1)",
    )
    t.add_argument(
        "--trace-every",
        type=_non_negative,
        default=d.trace_every,
        help="append θ, weight norms and θ-gradients to traces.jsonl every this many steps",
    )
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--init", default="kaiming", choices=("kaiming", "xavier", "normal"))
    t.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=_positive(int), default=None, help="torch threads")
    t.add_argument("--out", default=None, help="run directory (must be new or empty)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    i = sub.add_parser("inspect", help="posterior of a run as ArviZ netCDF, summary and figures")
    i.add_argument("run_dir", help="a run directory written by bayesprune train")
    i.add_argument("--epoch", type=_positive(int), default=None, help="checkpoint (default: last)")
    i.add_argument("--draws", type=_positive(int), default=DRAWS, help="posterior draws")
    i.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    return parser


def _run_dir(args) -> Path:
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"run directory {out} exists and is not empty; choose another --out")
        return out
    base = Path("runs") / f"{args.dataset}-{args.arch}-seed{args.seed}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def train(args) -> int:
    import torch

    from bayesprune.models.network import build_network
    from bayesprune.report import inspect_run

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.elbo == "fast" and args.estimator not in FAST_ESTIMATORS:
        raise UsageError(f"--estimator {args.estimator} needs --elbo traced (or auto)")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        msg = f"--device {args.device!r} is not a torch device (cpu, cuda, cuda:0)"
        raise UsageError(msg) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to torch here")
    out = _run_dir(args)
    data = load_dataset(args.dataset, args.data_dir)
    torch.manual_seed(args.seed)
    try:
        net = build_network(
            args.arch, data.in_shape, data.num_classes, args.widths, args.width_mult, args.init
        )
    except ValueError as err:
        raise UsageError(f"--arch {args.arch} on {args.dataset}: {err}") from None
    widths = net.widths
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    print(
        f"bayesprune: training {args.arch} {list(widths)} on {data.name} -> {out}", file=sys.stderr
    )
    try:
        trainer = Trainer(net, data, config, out=out)
    except DataError as err:
        raise UsageError(f"--train-subset: {err}") from None
    summary = trainer.fit(progress=not args.no_progress)
    inspect_run(out, show_summary=False)
    keys = (
        "status", "architecture", "test_error", "weights_kept_fraction", "gates_binary_fraction"
    )
    print(json.dumps({k: summary[k] for k in keys}))
    if summary["status"] != "finished":
        print(f"bayesprune: run {summary['status']}: {summary['status_reason']}", file=sys.stderr)
        return EXIT_FAILED_RUN
    return 0


def inspect(args) -> int:
    from bayesprune.report import inspect_run

    files = inspect_run(args.run_dir, epoch=args.epoch, draws=args.draws, seed=args.seed)
    print(f"bayesprune: wrote {', '.join(str(p) for p in files.values())}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return inspect(args) if args.command == "inspect" else train(args)
    except (UsageError, DataError, RunError) as err:
        print(f"bayesprune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
