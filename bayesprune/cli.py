"""Command line: ``bayesprune train``, ``inspect``, ``export``, ``bench`` and ``baseline``."""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from bayesprune.bench import (
    BENCH_MEMORY_FORMATS,
    bench_run,
    check_run_model,
    format_table,
    write_bench,
)
from bayesprune.config import (
    INSPECT_DRAWS,
    OPTION_GROUPS,
    PREDATING,
    TrainConfig,
    add_config_arguments,
    groups_need_merges,
    positive,
    seed_type,
    training_device,
)
from bayesprune.data import DATASETS, STANDARDISE, DataError, file_records, load_dataset
from bayesprune.distributed import (
    ACCELERATORS,
    STRATEGIES,
    fit_distributed,
    local_rank,
    process_rank,
    require_lightning,
    stopped_mid_run,
)
from bayesprune.export import (
    EXPORT_FORMATS,
    ExportError,
    UncheckedExportWarning,
    check_export_path,
    export_model,
    input_note,
    load_model_record,
    onnx_checkable,
    unchecked_onnx_note,
)
from bayesprune.inference.elbo_fast import FAST_ESTIMATORS
from bayesprune.inference.trainer import Trainer, TrainingInterrupted
from bayesprune.models.network import ARCHITECTURES, DEFAULT_WIDTHS, INITS, build_network
from bayesprune.runs import (
    RunError,
    atomic_write_text,
    check_resumable,
    first_line,
    held_run_directories,
    hold_run_directory,
    new_or_empty,
    read_config,
    recorded_status,
    release_run_directory,
    run_data_dir,
    run_directory,
    written_name,
)

ARCHS = tuple(ARCHITECTURES)
EXIT_FAILED_RUN = 3  # the run finished its epochs but collapsed or diverged (summary "status")


class UsageError(Exception):
    """A mistake the user can fix; reported as one line with exit code 2."""


class _ReaderGone:
    """``sys.stdout`` and ``sys.stderr`` for a command: once the reader of a pipe has gone
    (``bayesprune train … | head``: ``BrokenPipeError``), what the command prints there goes
    nowhere and the command goes on. Its output is its files; a run that stopped there would end
    "running" in its summary, a half-written ``inspect`` would exit 2. The descriptor is pointed
    at the null device, so that later writes and flushes, the interpreter's own at exit
    included, have nowhere to fail; :func:`main` flushes through the guard before it gives the
    stream back (output still buffered then meets the pipe only at that flush)."""

    def __init__(self, stream):
        self.stream, self.gone = stream, False

    def _guard(self, call, *args):
        if self.gone:
            return None
        try:
            return call(*args)
        except BrokenPipeError:
            self.gone = True
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self.stream.fileno())
                os.close(null)
            except (OSError, ValueError, io.UnsupportedOperation):
                pass  # not a descriptor (a test's stream): nothing is flushed to it later
            return None

    def write(self, text: str) -> int:
        written = self._guard(self.stream.write, text)
        return len(text) if written is None else written

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def __getattr__(self, name):  # isatty, fileno, encoding…: the stream's own
        return getattr(self.stream, name)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append "(default: X)" only where the help does not already speak of its default and
    there is a value to show (not on a switch such as --no-progress: "default: False")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.nargs == 0 or "default" in text:  # 0: a switch
            return text
        return super()._get_help_string(action)


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


def build_parser() -> argparse.ArgumentParser:
    from bayesprune import __version__

    parser = _Parser(
        prog="bayesprune",
        description="Train a network and prune it at the same time (Bernoulli gates with a "
        "variational posterior, in Pyro); then export, bench, inspect the run, or compare it "
        "with its dense twin. `bayesprune COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"bayesprune {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        parser_class=_Parser,
        metavar="{train,export,bench,inspect,baseline}",
    )
    t = sub.add_parser(
        "train",
        help="train and prune a network",
        formatter_class=_DefaultsFormatter,
        usage="%(prog)s [-h] [--dataset DATASET] [--arch ARCH] [--out OUT] [OPTION ...]",
    )
    groups = {key: t.add_argument_group(*text) for key, text in OPTION_GROUPS.items()}
    data, run, distributed = groups["data"], groups["run"], groups["distributed"]
    data.add_argument(
        "--arch",
        default="mlp",
        choices=ARCHS,
        help="mlp (LeNet-300-100 by default), lenet5 (LeNet-5-Caffe) or vgg16 (CIFAR VGG16-BN, "
        "32×32 images) (default: mlp)",
    )
    data.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help="mlp hidden widths, e.g. 300,100 (LeNet-300-100, the default); lenet5: conv1,conv2,"
        "fc1 (20,50,500 by default); vgg16 takes --width-mult instead",
    )
    data.add_argument(
        "--width-mult",
        type=positive(float),
        default=1.0,
        help="scale every hidden layer (quick runs, starting-width studies)",
    )
    data.add_argument(
        "--dataset",
        default="teacher",
        choices=DATASETS,
        help="teacher: the embedded synthetic data (4 inputs, labels from a 10-5 network); npz: "
        "your own arrays, x_train, y_train, x_test, y_test in one numpy.savez file given as "
        "--data-dir; the others are read from --data-dir (Fashion-MNIST also from Debian's "
        "package)",
    )
    data.add_argument(
        "--data-dir",
        default=None,
        help="root folder with torchvision's layout; with --dataset npz, the .npz file",
    )
    data.add_argument(
        "--standardise",
        default=None,
        choices=STANDARDISE,
        help="--dataset npz: all, one mean and standard deviation over all training values (as "
        "the MNIST loaders do); feature, one pair per input value (tabular features of "
        "different scales); none, the inputs as given (default: all)",
    )
    add_config_arguments(t, groups)  # one flag per TrainConfig field, in its group
    data.add_argument("--init", default="kaiming", choices=INITS, help="initialisation")
    run.add_argument(
        "--threads",
        type=positive(int),
        default=None,
        help="torch threads (default: torch's, the core count; with --resume the run's own); "
        "the pruning decisions depend on it: give it for a run to be repeated elsewhere",
    )
    run.add_argument(
        "--out",
        default=None,
        help="run directory, new or empty (default: runs/DATASET-ARCH-seedSEED, with -2, -3, … "
        "appended if it exists)",
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its newest checkpoint with its own settings "
        "(training flags that differ from them are refused)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-report",
        action="store_true",
        help="skip the figures and the ArviZ export at the end of the run (training.png, "
        "inspect/; about 10 s): `bayesprune inspect RUN_DIR` writes them later",
    )
    distributed.add_argument(
        "--strategy",
        default="single",
        choices=STRATEGIES,
        help="single: one process (the default); ddp: data-parallel processes on PyTorch "
        "Lightning, pruning in lock-step (pip install 'bayesprune[distributed]')",
    )
    distributed.add_argument(
        "--devices",
        type=positive(int),
        default=1,
        help="processes with --strategy ddp (one per GPU with --accelerator gpu)",
    )
    distributed.add_argument(
        "--accelerator",
        default="cpu",
        choices=ACCELERATORS,
        help="with --strategy ddp: cpu (gloo) or gpu (nccl, one device per process)",
    )
    e = sub.add_parser("export", help="the pruned network as a file that loads without bayesprune")
    e.add_argument("run_dir", help="a finished run directory (its model.pt)")
    e.add_argument(
        "--format",
        required=True,
        choices=tuple(EXPORT_FORMATS),
        help="pt2 (torch.export), torchscript, onnx (pip install 'bayesprune[onnx]') or "
        "safetensors (weights and layer list, no code)",
    )
    e.add_argument("--out", default=None, help="file to write (default: RUN_DIR/model.<ext>)")
    b = sub.add_parser(
        "bench",
        help="latency, throughput, size: pruned against dense",
        formatter_class=_DefaultsFormatter,
    )
    b.add_argument("run_dir", help="a finished run directory")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--batch", type=_batches, default="1,256", help="batch sizes, e.g. 1,256")
    b.add_argument("--threads", type=positive(int), default=1, help="torch threads")
    b.add_argument(
        "--memory-format",
        default="contiguous",
        choices=BENCH_MEMORY_FORMATS,
        help="layout both networks' convolutions (and inputs) run in: contiguous, as model.pt "
        "and the exports load, or channels-last (NHWC; on CPUs oneDNN's convolutions run faster "
        "so, for the pruned network and the dense one alike)",
    )
    i = sub.add_parser(
        "inspect",
        help="posterior of a run as ArviZ netCDF, summary and figures",
        formatter_class=_DefaultsFormatter,
    )
    i.add_argument("run_dir", help="a run directory written by bayesprune train")
    i.add_argument("--epoch", type=positive(int), default=None, help="checkpoint (default: last)")
    i.add_argument("--draws", type=positive(int), default=INSPECT_DRAWS, help="posterior draws")
    i.add_argument("--seed", type=seed_type, default=0, help="seed of the posterior draws")
    i.add_argument(
        "--all",
        action="store_true",
        help="print every survivor's rows (default: a digest per layer and the units below "
        "θ = 1; the whole table is in RUN_DIR/inspect/survivors.csv)",
    )
    d = sub.add_parser(
        "baseline",
        help="train the dense network a run started from, with its recipe, and compare",
        formatter_class=_DefaultsFormatter,
    )
    d.add_argument("run_dir", help="a run directory written by bayesprune train")
    d.add_argument(
        "--data-dir",
        default=None,
        help="where the run's data are now, if they moved since it trained (the same files, "
        "checked by SHA-256; default: the location its config.json records)",
    )
    d.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the run's)")
    d.add_argument(
        "--threads",
        type=positive(int),
        default=None,
        help="torch threads (default: the run's, so that the wall times compare)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _run_dir(args) -> tuple[Path, list[Path]]:
    """The run directory, made (and checked writable) now; and the directories this call
    created, innermost first."""
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a directory; choose another --out")
        if not new_or_empty(out):
            raise UsageError(f"run directory {out} exists and is not empty; choose another --out")
    else:
        base = Path("runs") / f"{args.dataset}-{args.arch}-seed{args.seed}"
        out, k = base, 1
        while out.exists():
            k += 1
            out = base.with_name(f"{base.name}-{k}")
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:  # find out now, not after the data are loaded, that the directory cannot be written
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write run directory {out}: {err.strerror or err}") from None
    return out, made


def _remove_empty(folders: list[Path]) -> None:
    """Remove these directories, innermost first, while they are empty (never anything else)."""
    for folder in folders:
        try:
            folder.rmdir()  # fails, and stops here, on a directory that is not empty
        except OSError:
            return


RUN_ARGS = ("arch", "dataset", "data_dir", "standardise", "widths", "width_mult", "init")
# ProjectedSGD's parts (Eqs. (10t), (10s), (14t), (14e), (10e)): inert under --theta-optimizer adam
ADAM_INERT = ("theta_transit", "theta_confidence", "merge_budget", "merge_price", "producer_price")


def _device(name: str, purpose: str = "to train on"):
    device = training_device(name)
    if device is None:
        raise UsageError(f"--device {name!r} is not a device {purpose} (cpu, cuda, cuda:0)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available to torch here")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise UsageError(f"--device {name}: torch sees {count} CUDA device(s) (cuda:0 .. "
                             f"cuda:{count - 1})")  # fmt: skip
    return device


def train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume is not None:
        return resume(args, _resume_flags(getattr(args, "argv", None)))
    if args.temperature is not None and args.price_scale != 1:
        raise UsageError("--price-scale multiplies the default τ(N): drop it or --temperature")
    if args.elbo == "fast" and args.estimator not in FAST_ESTIMATORS:
        raise UsageError(f"--estimator {args.estimator} needs --elbo traced (or auto)")
    if args.evidence == "held-out" and getattr(args, "strategy", "single") == "ddp":
        raise UsageError("--evidence held-out runs in one process: drop --strategy ddp")
    if args.merge == "off" and args.merge_groups != "off" and "merge_groups" in _resume_flags(
        getattr(args, "argv", None)
    ):
        # the default (auto) has nothing to act on without merge moves; asked for, it is refused
        # as TrainConfig refuses on
        raise UsageError(groups_need_merges(args.merge_groups))
    _distributed_device(args, args.batch_size)
    _device(args.device)
    out, made = _run_dir(args) if process_rank() == 0 else (None, [])  # others write nothing
    try:
        if out is not None:  # held to the command's end: its report and summary included
            hold_run_directory(out)
        try:
            config = TrainConfig.from_dict(vars(args))
        except ValueError as err:  # settings each valid alone that do not go together
            raise UsageError(str(err)) from None
        data, net = _data_and_network(args)
        _distributed_last_batch(args, config.train_subset or len(data.x_train), config.batch_size)
        with _data_note_unwarned():  # said below, the command line's way
            trainer = Trainer(net, data, config, out=out)  # checks the data: before the line
    except BaseException:
        _remove_empty(made)  # made by this command a moment ago, and still empty: no trace
        raise
    if out is not None:
        print(
            f"bayesprune: training {args.arch} {list(net.widths)} on {data.name} -> {out}",
            file=sys.stderr,
        )
        single = [name for name, width in zip(net.gated, net.widths, strict=True) if width == 1]
        if args.width_mult < 1 and single:  # (0.001 built 784-1-1 without a word)
            print(
                f"bayesprune: note: --width-mult {args.width_mult} leaves {', '.join(single)} "
                "one unit wide (each width times the factor, rounded, is at least 1)",
                file=sys.stderr,
            )
        if config.estimator == "exact":  # one forward pass per unit and step: say it up front
            print(
                f"bayesprune: note: --estimator exact runs the network twice per gated unit and "
                f"step ({sum(net.widths)} units here: {2 * sum(net.widths)} extra forward passes "
                f"a step); it is meant for checking the estimators on small networks",
                file=sys.stderr,
            )
    if out is not None and trainer.data_note:
        print(f"bayesprune: note: {trainer.data_note}", file=sys.stderr)
    examples = len(trainer.data.x_train)  # (after --train-subset and any held-out share)
    if out is not None and config.batch_size > examples:
        print(
            f"bayesprune: note: --batch-size {config.batch_size} is more than the {examples} "
            "training examples: every step takes all of them (full-batch training, "
            f"{config.epochs} steps in all)",
            file=sys.stderr,
        )
    inert = [
        f"--{key.replace('_', '-')}"
        for key in ADAM_INERT
        if getattr(config, key) != TrainConfig.__dataclass_fields__[key].default
    ]
    if out is not None and config.theta_optimizer == "adam" and inert:
        print(
            f"bayesprune: note: {', '.join(inert)} "
            f"{'has' if len(inert) == 1 else 'have'} no effect with --theta-optimizer adam: "
            "θ moves freely under Adam (no transit limit, no evidence test, no evidence "
            "average to price merges and producers by)",
            file=sys.stderr,
        )
    cap_default = TrainConfig.__dataclass_fields__["group_cap"].default
    if out is not None and config.group_cap != cap_default and config.merge_groups != "auto":
        print(
            f"bayesprune: note: --group-cap {config.group_cap} has no effect with --merge-groups "
            f"{config.merge_groups}: it caps auto's groups only (Eq. (14x)); on always tries up "
            "to half a layer",
            file=sys.stderr,
        )
    if out is not None and config.merge == "on" and trainer.merges is None:  # merges_apply
        print(
            "bayesprune: note: no merge moves in this run (Eq. (14) needs point-mass weights "
            "and the coupled or structured posterior): units leave only when their gates close",
            file=sys.stderr,
        )
    if out is not None and config.settle == "on" and trainer.settler is None:  # merges_apply
        print(
            "bayesprune: note: no final settle in this run (Eq. (15) needs point-mass weights "
            "and the coupled or structured posterior)",
            file=sys.stderr,
        )
    run = {k: getattr(args, k) for k in RUN_ARGS}
    run["threads"] = torch.get_num_threads()  # what --resume runs with unless told otherwise
    return _fit(trainer, out, args, run)


@contextmanager
def _data_note_unwarned():
    """The Trainer's warning about its data (inputs that are not standardised, features of very
    different scales, constant inputs, test classes absent from training), held back (the
    command line prints it as a note); every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="the training inputs|the test labels", category=UserWarning
        )
        yield


def _data_and_network(args):
    """The training data and the network to train, or a one-line error (before anything is
    written to the run directory)."""
    if args.data_dir is not None and args.dataset == "teacher":
        raise UsageError("--data-dir: the teacher data are made in memory, not read from a folder")
    if args.standardise is not None and args.dataset != "npz":
        raise UsageError(
            f"--standardise is for --dataset npz: the {args.dataset} data are standardised by "
            "their loader"
        )
    if args.dataset == "npz" and args.standardise is None:
        args.standardise = "all"  # recorded as what the run did
    if args.data_dir is not None:  # recorded as a full path: --resume may run from elsewhere
        args.data_dir = str(Path(args.data_dir).resolve())
    data = load_dataset(args.dataset, args.data_dir, args.standardise)
    if args.train_subset is not None:
        try:
            data.check_subset(args.train_subset)
            data.subset(args.train_subset, seed=args.seed).check_classes()  # as the run draws it
        except DataError as err:
            raise UsageError(f"--train-subset: {err} ({data.name})") from None
    torch.manual_seed(args.seed)
    too_large = (
        f"--arch {args.arch} on {args.dataset}: not enough memory for a network of that size "
        f"(widths {args.widths or 'default'}, --width-mult {args.width_mult}, "
        f"{data.num_classes} classes)"
    )
    try:
        with _refuse_out_of_memory(too_large):
            net = build_network(
                args.arch, data.in_shape, data.num_classes, args.widths, args.width_mult, args.init
            )
    except ValueError as err:
        raise UsageError(f"--arch {args.arch} on {args.dataset}: {err}") from None
    return data, net


# what --resume may be given with: how to run, never what to train
RESUME_FLAGS = {
    "resume", "threads", "no_progress", "no_report", "strategy", "devices", "accelerator"
}  # (and --device: resume() moves the run there)


def _resume_flags(argv: list[str] | None) -> dict:
    """The training settings given on the command line beside ``--resume`` (name: value)."""
    if argv is None:
        return {}
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_parser = sub.choices["train"]
    for action in train_parser._actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return {k: v for k, v in given.items() if k not in RESUME_FLAGS and k != "command"}


def _shown(value) -> str:
    """A setting as it is written on the command line."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _resume_conflicts(given: dict, raw: dict, out: Path) -> None:
    """Refuse a setting given with ``--resume`` that differs from the run's own (the same
    command line with ``--resume`` added is accepted: it asks for what the run does)."""
    run = raw.get("run") or {}
    recorded_config = {**PREDATING, **raw}  # what an older run trained with (from_record)
    differ = []
    for name, value in sorted(given.items()):
        if name == "out":
            recorded, same = str(out), Path(value).resolve() == out.resolve()
        elif name == "data_dir":  # the same folder, however it is written, or the run's data
            recorded = run.get(name)  # moved there: resume checks the files by their SHA-256
            same = recorded is not None
        else:
            recorded = run.get(name) if name in RUN_ARGS else recorded_config.get(name)
            if name == "widths" and recorded is None:  # the architecture's own
                recorded = list(DEFAULT_WIDTHS.get(run.get("arch"), ())) or None
            mine = list(value) if isinstance(value, tuple) else value
            same = mine == recorded
        if not same:
            flag = name.replace("_", "-")
            differ.append(f"--{flag} {_shown(value)} (the run's: {_shown(recorded)})")
    if differ:
        raise UsageError(
            f"--resume continues the run with its own settings; these differ: {'; '.join(differ)} "
            "(a run with other settings is a new run: --out)"
        )


def _distributed_device(args, batch_size: int) -> None:
    """With --strategy ddp the accelerator sets each process's device (cuda:LOCAL_RANK); every
    process needs an example of every batch of ``batch_size``."""
    if getattr(args, "strategy", "single") != "ddp":
        if getattr(args, "devices", 1) != 1:
            raise UsageError("--devices needs --strategy ddp")
        if getattr(args, "accelerator", "cpu") != "cpu":  # as --devices: not silently ignored
            raise UsageError("--accelerator needs --strategy ddp (a single process: --device)")
        return
    try:
        require_lightning()
    except ImportError as err:
        raise UsageError(str(err)) from None
    if batch_size < args.devices:
        raise UsageError(
            f"the batch size {batch_size} is smaller than --devices {args.devices}: every "
            "process needs an example of every batch"
        )
    if args.accelerator == "gpu":
        if not torch.cuda.is_available():
            raise UsageError("--accelerator gpu: no CUDA device is available to torch here")
    if getattr(args, "device", "cpu") not in (None, "cpu"):  # ddp sets it per process
        raise UsageError(
            f"--device {args.device} does not apply with --strategy ddp: --accelerator (cpu or "
            "gpu) sets each process's device"
        )
    args.device = "cpu" if args.accelerator == "cpu" else f"cuda:{local_rank()}"


def _distributed_last_batch(args, examples: int, batch_size: int) -> None:
    """Refuse data-parallel epochs whose last batch holds fewer examples than processes: every
    process needs an example of every batch, and the batch was skipped without a word (one
    example an epoch, with the step count and a cosine schedule counting it)."""
    last = examples % batch_size
    if getattr(args, "strategy", "single") == "ddp" and 0 < last < args.devices:
        raise UsageError(
            f"{examples} training examples at batch {batch_size} leave a last batch of {last}, "
            f"fewer than --devices {args.devices}: every process needs an example of every "
            "batch; choose a batch size (or --train-subset) that leaves none or enough"
        )


def _fit(trainer, out: Path, args, run: dict | None = None) -> int:
    if getattr(args, "strategy", "single") == "ddp":
        try:
            summary = fit_distributed(
                trainer,
                args.devices,
                args.accelerator,
                progress=not args.no_progress,
                run=run,
                threads=args.threads,
            )
        except _Stopped as stop:
            began = trainer.writer is not None and (trainer.writer.path / "summary.json").exists()
            epochs = out is not None and any((out / "checkpoints").glob("epoch_*.pt"))
            if out is not None and began and process_rank() == 0:
                # as a single process marks its summary (Trainer.interrupt), without a
                # checkpoint of this step: the run resumes from its last epoch's
                trainer.mark_interrupted(
                    stop.signum,
                    detail="data-parallel: "
                    + ("resumes from the last epoch's checkpoint" if epochs
                       else "no epoch had ended, nothing to resume from"),  # fmt: skip
                )
            if out is not None and (epochs or not began):
                print(
                    f"bayesprune: stopped by {signal.Signals(stop.signum).name}; the processes "
                    f"stop at once (no checkpoint of this step); continue from the last epoch's "
                    f"checkpoint with: bayesprune train --resume {out} [--strategy ddp ...]",
                    file=sys.stderr,
                )
            elif out is not None:  # no epoch ended: there is no checkpoint to go on from
                print(
                    f"bayesprune: stopped by {signal.Signals(stop.signum).name} before the "
                    f"first epoch ended; a data-parallel run keeps no checkpoint of a step, so "
                    f"there is nothing to resume: start it again with another --out (or remove "
                    f"{out})",
                    file=sys.stderr,
                )
            return 128 + stop.signum
        if summary is None:  # not process 0: it reports
            return 0
        return _report(trainer, out, summary, figures=not args.no_report)
    try:
        with warnings.catch_warnings():  # a failed or collapsed run: said below, and exit 3
            warnings.filterwarnings("ignore", message="the run ", category=RuntimeWarning)
            summary = trainer.fit(progress=not args.no_progress, run=run, write_summary=False)
    except TrainingInterrupted as stop:
        saved = "the last epoch's checkpoint stands" if stop.where else "state saved"
        print(
            f"bayesprune: interrupted ({stop}); {saved}, continue with: "
            f"bayesprune train --resume {out}",
            file=sys.stderr,
        )
        return 128 + stop.signum
    return _report(trainer, out, summary, figures=not args.no_report)


def _per_layer(counts: dict) -> str:
    """``{"fc1": 3, "fc2": 1}`` as the final lines say it: "3 in fc1, 1 in fc2"."""
    return ", ".join(f"{k} in {name}" for name, k in counts.items())


def _report(trainer, out: Path, summary: dict, figures: bool = True) -> int:
    """inspect the finished run (unless ``figures`` is False), write the final summary.json
    last, print its one-line digest."""
    if figures and not trainer.diverged:
        from bayesprune.report import inspect_run

        inspect_run(out, show_summary=False, summary=summary)
    trainer.writer.summary(summary)  # the last file: a run cut short before it reads "running"
    keys = (
        "status",
        "architecture",
        "test_error",
        "weights_kept_fraction",
        "gates_binary_fraction",
    )
    print(json.dumps({k: summary[k] for k in keys}))
    if summary["status"] == "finished":  # the same in words, and where the files are
        print(
            f"bayesprune: {summary['initial_architecture']} -> {summary['architecture']}: "
            f"{100 * summary['weights_kept_fraction']:.1f}% of the weights kept, test error "
            f"{100 * summary['test_error']:.2f}%; run directory {out}",
            file=sys.stderr,
        )
        if summary.get("removed_at_end"):  # why the last epoch's line shows more units
            gone = _per_layer(summary["removed_at_end"])
            print(
                f"bayesprune: units found collapsed (θ = 0) at the last pruning check were "
                f"removed after the last epoch's line ({gone})",
                file=sys.stderr,
            )
        settled = {name: k for name, k in (summary.get("settled") or {}).items() if k}
        if settled:  # why the last epoch's line shows more units and another error
            before = summary["before_settle"]
            gone = _per_layer(settled)
            print(
                f"bayesprune: the final settle (Eq. (15)) removed units whose silencing lowered "
                f"the objective on training examples ({gone}): test error "
                f"{100 * before['test_error']:.2f}% before it",
                file=sys.stderr,
            )
        outside = {  # in the network still, out of the deployed posterior mode (θ < ½)
            name: int(physical) - int(deployed)
            for name, physical, deployed in zip(
                trainer.net.gated, trainer.net.widths, summary["widths"], strict=False
            )
            if int(physical) > int(deployed)
        }
        if outside:
            listed = _per_layer(outside)
            print(
                f"bayesprune: units still in the network below θ = ½ (on their way out, or at "
                f"θ = 0 awaiting the check that removes them) are left out of the deployed "
                f"network and of {summary['architecture']} ({listed})",
                file=sys.stderr,
            )
    if summary.get("note"):
        print(f"bayesprune: note: {summary['note']}", file=sys.stderr)
    if summary["status"] != "finished":
        print(
            f"bayesprune: run {summary['status']}: {summary['status_reason']} (does the network "
            f"learn without gates? bayesprune baseline {shlex.quote(str(out))} trains its dense "
            "twin)",
            file=sys.stderr,
        )
        return EXIT_FAILED_RUN
    return 0


def resume(args, given: dict | None = None) -> int:
    """Continue an interrupted run from its newest complete checkpoint (``given``: settings
    named on the command line beside ``--resume``, refused where they differ from the run's)."""
    out = Path(args.resume)
    raw = read_config(out)
    if process_rank() == 0:  # refused while another process writes the run (in a data-
        hold_run_directory(out)  # parallel launch process 0 holds it, the others only read)
    check_resumable(out)  # an ended run or a damaged summary, before the data are read
    given = dict(given or {})
    device = given.pop("device", None)  # how to run, like --threads: the run goes on there
    run = raw.get("run") or {}
    if "standardise" in given and isinstance(run, dict) and run.get("dataset") != "npz":
        raise UsageError(
            f"--standardise is for --dataset npz: run {out} trained on {run.get('dataset')}, "
            "standardised by its loader"
        )
    _resume_conflicts(given, raw, out)
    if not isinstance(run, dict) or "dataset" not in run:
        raise UsageError(
            f"{out}/config.json does not say which data the run used (a run started from "
            "Python): continue it from Python with Trainer.resume(out, data), data the Dataset "
            "it was given"
        )
    _resume_threads(args, run.get("threads"))
    try:
        config = TrainConfig.from_record(raw)
    except ValueError as err:  # a config.json edited by hand
        raise UsageError(f"{out}/config.json: {err}") from None
    if device is not None:
        config = replace(config, device=device)
    _distributed_device(args, config.batch_size)
    if args.strategy == "ddp":
        if config.evidence != "train":  # refused before a process is launched
            raise UsageError(
                f"run {out} measures its evidence on held-out examples, which data-parallel "
                "training does not: resume it without --strategy ddp"
            )
        config = replace(config, device=args.device)
    _device(config.device)
    recorded_dir = run.get("data_dir")
    # the run's data files, moved: the same files or a refusal (check_run_data); the recorded
    # location gone and no new one given: one line naming --data-dir
    data_dir = run_data_dir(out, run, given.get("data_dir"))
    moved = recorded_dir is not None and Path(data_dir).resolve() != Path(recorded_dir).resolve()
    data = load_dataset(run["dataset"], data_dir, run.get("standardise"))
    _distributed_last_batch(args, config.train_subset or len(data.x_train), config.batch_size)
    writes = process_rank() == 0  # with --strategy ddp the other processes write nothing
    with _data_note_unwarned(), warnings.catch_warnings():  # said at the start (and in the
        # summary's note); a thread count other than the run's is noted by _resume_threads
        warnings.filterwarnings("ignore", message="this process computes with")
        # the data files hashed by the loader just now, checked against the run's
        trainer = Trainer.resume(out, data, config=config, write=writes)
    if moved and writes:  # later resumes and `bayesprune baseline` read them there
        raw["run"]["data_dir"] = data_dir
        if isinstance(raw.get("data"), dict):  # the loader's record of the files, as read now
            raw["data"].update(source=data.meta.get("source"), files=data.meta.get("files", []))
        atomic_write_text(out / "config.json", json.dumps(raw, indent=2) + "\n")
        print(
            f"bayesprune: note: the run's data files are now read from {data_dir} (the same "
            f"files by SHA-256; config.json said {recorded_dir} and now says this)",
            file=sys.stderr,
        )
    if writes:
        print(
            f"bayesprune: resuming {out} at step {trainer.step} (epoch {trainer.epoch}, "
            f"{trainer.resumed_from.name})",
            file=sys.stderr,
        )
    code = _fit(trainer, out, args)
    if writes:
        _stale_baseline_note(out)
    return code


def _stale_baseline_note(out: Path) -> None:
    """A ``baseline.json`` made while the run was stopped compares its twin with no run (its
    ``run_status`` says "interrupted"): once the resumed run has ended, say so (it is kept as
    it was: bayesprune deletes nothing of a run's)."""
    from bayesprune.baseline import BASELINE_FILE

    try:
        made = json.loads((out / BASELINE_FILE).read_text()).get("run_status")
        now = recorded_status(out)
    except (OSError, ValueError, AttributeError, RunError):
        return
    if made not in (None, now) and now in ("finished", "collapsed", "failed"):
        print(
            f"bayesprune: note: {out / BASELINE_FILE} was made while the run was {made}: "
            f"bayesprune baseline {shlex.quote(str(out))} compares the twin with the run as it "
            "ended",
            file=sys.stderr,
        )


def _resume_threads(args, recorded) -> None:
    """A resumed run computes with the thread count its start recorded, unless ``--threads``
    says otherwise: a merge round's large products are split across threads, and with another
    count they round differently, so the run would part from the uninterrupted one in the last
    bits (docs/method.md §6zm). A different ``--threads`` is honoured, with a note."""
    if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 1:
        return  # a run recorded before the thread count was
    if args.threads is None:
        args.threads = recorded  # (the data-parallel processes read it too)
        torch.set_num_threads(recorded)
    elif args.threads != recorded and process_rank() == 0:
        print(
            f"bayesprune: note: resuming with --threads {args.threads} where the run started "
            f"with {recorded}: products split across threads round differently, so the result "
            "can differ from an uninterrupted run in the last bits",
            file=sys.stderr,
        )


def _batches(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    if max(sizes) > MAX_BATCH:  # (beyond it torch's sizes overflow before memory runs out)
        raise argparse.ArgumentTypeError(f"batch sizes must be at most {MAX_BATCH}, got {text!r}")
    return sizes


MAX_BATCH = 2**31 - 1


@contextmanager
def _refuse_out_of_memory(what: str):
    """An allocation that fails inside is one line (exit 2): ``what``, torch's reason, and
    that nothing was written; any other error passes."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not _out_of_memory(err):
            raise
        raise UsageError(f"{what} ({first_line(err)}); nothing was written") from None


def _out_of_memory(err: BaseException) -> bool:
    """Whether an error is an allocation that failed (a GPU's out-of-memory error, the CPU
    allocator's refusal), and not another error that mentions memory."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _model_path(run_dir: str, command: str) -> Path:
    """``RUN_DIR/model.pt`` of a run that finished: one whose summary.json says ``collapsed``
    (a network at chance level), ``running`` (killed after model.pt, before its summary) or
    anything but ``finished`` is refused, naming the status and its reason. A folder with a
    model.pt and no summary.json (a network copied on its own) is taken as it is here; ``export``
    needs no more, ``bench`` then asks for the run's summary and config itself."""
    folder = run_directory(run_dir)
    path = folder / "model.pt"
    if not path.is_file():
        raise UsageError(f"{run_dir} has no model.pt: {command} needs a finished run")
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except FileNotFoundError:
        return path
    except (OSError, ValueError):
        summary = None
    status = summary.get("status") if isinstance(summary, dict) else None
    if status != "finished":
        if not isinstance(summary, dict):
            why = "its summary.json cannot be read"
        elif status is None:
            why = "its summary.json records no status"
        elif status == "running":
            why = (
                "its summary.json says running: it has not finished, or was stopped after "
                f"model.pt was written (a command-line run finishes with: bayesprune train "
                f"--resume {run_dir})"
            )
        else:
            reason = summary.get("status_reason")
            why = f"its status is {status}" + (f" ({reason})" if reason else "")
        raise UsageError(f"{run_dir}: {why}; {command} needs a finished run")
    return path


EXPORTS = "exports.json"  # in a run directory: SHA-256 of each export written to its default name


def _sha256(path: Path) -> str:
    return file_records([path])[0]["sha256"]


def _exports(folder: Path) -> dict:
    """``exports.json`` of a run directory ({} if absent or not a JSON object)."""
    try:
        record = json.loads((folder / EXPORTS).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _earlier_export(path: Path) -> bool:
    """Whether ``path`` (a default export name in a run directory) is, byte for byte, the file
    an earlier ``bayesprune export`` wrote there."""
    return _exports(path.parent).get(path.name) == _sha256(path)


def _record_export(path: Path) -> None:
    record = _exports(path.parent)
    record[path.name] = _sha256(path)
    atomic_write_text(path.parent / EXPORTS, json.dumps(record, indent=2) + "\n")


def export(args) -> int:
    model = _model_path(args.run_dir, "export")
    default = model.with_suffix(EXPORT_FORMATS[args.format])
    if args.out is not None and not args.out.strip():
        raise UsageError("--out is empty: name the file to write (or leave --out out)")
    try:
        out = check_export_path(args.format, args.out if args.out is not None else default)
    except ValueError as err:
        raise UsageError(f"--out {err}") from None
    # an earlier export of this format to its default place is replaced; any other file is not
    if out.exists() and out.resolve() != default.resolve():
        raise UsageError(f"--out {out} exists; choose a new file (nothing was overwritten)")
    if out.exists() and not _earlier_export(out):
        why = (
            "was changed since this run's `bayesprune export` wrote it, or was not written by it"
            if (out.parent / EXPORTS).exists()
            else "is not recorded as an export of this run (no exports.json: exports made "
            "before bayesprune kept that record are not recognised)"
        )
        raise UsageError(
            f"{out} exists and {why}: move it away or give --out (nothing was overwritten)"
        )

    try:
        module, record = load_model_record(model)
        # a model.pt copied in from another run would go out with this run's input recipe (a
        # lone model.pt, no config.json beside it, has none: its note says so)
        if (Path(args.run_dir) / "config.json").is_file():
            check_run_model(Path(args.run_dir), record, module)
        in_shape = record["in_shape"]
        with warnings.catch_warnings():  # said below as a note line; other warnings as they are
            warnings.simplefilter("ignore", UncheckedExportWarning)
            path = export_model(model, args.format, out)
    except (ExportError, ValueError, RunError) as err:
        raise UsageError(str(err)) from None
    if args.format == "onnx" and not onnx_checkable():
        print(f"bayesprune: note: {unchecked_onnx_note(path)}", file=sys.stderr)
    if path.resolve() == default.resolve():
        _record_export(path)
    shape = ", ".join(["batch", *map(str, in_shape)])
    print(
        f"bayesprune: wrote {path} ({path.stat().st_size:,} bytes); input ({shape}) float32, "
        f"{input_note(Path(args.run_dir))}",
        file=sys.stderr,
    )
    return 0


def bench(args) -> int:
    _model_path(args.run_dir, "bench")
    torch.set_num_threads(args.threads)
    device = str(_device(args.device, "to bench on"))  # cuda:N stays cuda:N
    too_large = f"--batch {max(args.batch)}: not enough memory on {device} for a batch of that size"
    try:
        with _refuse_out_of_memory(too_large):
            result = bench_run(
                args.run_dir, device, args.batch, write=False, memory_format=args.memory_format
            )
    except ValueError as err:  # model.pt is not a bayesprune model (load_model_record)
        raise UsageError(str(err)) from None
    print(format_table(result), flush=True)  # shown even where bench.json cannot be written
    print(f"bayesprune: wrote {write_bench(args.run_dir, result)}", file=sys.stderr)
    return 0


def inspect(args) -> int:
    from bayesprune.report import inspect_run

    files = inspect_run(
        args.run_dir, epoch=args.epoch, draws=args.draws, seed=args.seed, show_all=args.all
    )
    print(f"bayesprune: wrote {', '.join(str(p) for p in files.values())}", file=sys.stderr)
    return 0


def baseline(args) -> int:
    from bayesprune.baseline import (
        TwinInterrupted,
        format_comparison,
        prepare_twin,
        train_twin,
        verdict,
        write_baseline,
    )

    recorded = read_config(Path(args.run_dir)).get("device") or "cpu"  # (a missing folder too)
    if args.device is None:
        try:
            device = str(_device(str(recorded)))
        except UsageError as err:
            raise UsageError(f"the run trained on {recorded}, {str(err).split(': ', 1)[-1]}; "
                             "give --device (e.g. --device cpu)") from None  # fmt: skip
    else:
        device = str(_device(args.device))
    # every refusal before the line
    twin = prepare_twin(args.run_dir, device, args.threads, data_dir=args.data_dir)
    print(
        f"bayesprune: training the dense twin of {args.run_dir} (its network before any gate, "
        "its recipe)",
        file=sys.stderr,
    )
    try:
        result = train_twin(twin, progress=not args.no_progress)
    except TwinInterrupted as stop:
        name = signal.Signals(stop.signum).name
        print(f"bayesprune: {_twin_stopped(name)}", file=sys.stderr)
        return 128 + stop.signum
    print(format_comparison(result), flush=True)
    if "run" not in result:
        print(
            f"bayesprune: note: the run has not ended (its status: {result['run_status']}): "
            "only its dense twin is shown",
            file=sys.stderr,
        )
    if result["held_out_by_the_run"]:
        print(
            f"bayesprune: note: the run held out {result['held_out_by_the_run']} of its "
            f"{result['train_examples']} training examples for its evidence; the dense twin "
            "trained on all of them",
            file=sys.stderr,
        )
    line = verdict(result)
    if line:
        print(f"bayesprune: {line}", file=sys.stderr)
    print(f"bayesprune: wrote {write_baseline(args.run_dir, result)}", file=sys.stderr)
    return 0


def _twin_stopped(name: str) -> str:
    return f"stopped by {name}; nothing was written (the twin trains again from its start)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # SIGINT and SIGTERM: one line and 130/143 wherever they land (the training loop installs
    # its own handlers, which finish the step and write a checkpoint)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    held = held_run_directories()  # the run directories this command holds are let go at its end
    streams = (sys.stdout, sys.stderr)  # (None where the descriptor is closed: left so)
    sys.stdout, sys.stderr = (None if s is None else _ReaderGone(s) for s in streams)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:
            raise UsageError(
                "no command: bayesprune train|export|bench|inspect|baseline (bayesprune --help, "
                "bayesprune train --help)"
            )
        args = parser.parse_args(argv)
        args.argv = argv
        commands = {
            "inspect": inspect,
            "export": export,
            "bench": bench,
            "train": train,
            "baseline": baseline,
        }
        return commands[args.command](args)
    except (UsageError, DataError, RunError) as err:
        print(f"bayesprune: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk filled up, a folder vanished...: files are atomic, so
        where = f" ({written_name(err.filename)})" if err.filename else ""  # what was written
        resumes = " (a started run resumes with --resume)" if argv[:1] == ["train"] else ""
        print(
            f"bayesprune: error: {err.strerror or err}{where}; the files written so far are "
            f"complete{resumes}",
            file=sys.stderr,
        )
        return 2
    except (_Stopped, ImportError) as err:
        # a signal that lands while a C extension initialises (matplotlib's backend, when the
        # run is inspected) reaches us as that import's ImportError, caused by _Stopped
        stop = err if isinstance(err, _Stopped) else err.__cause__
        if not isinstance(stop, _Stopped):
            raise
        name = signal.Signals(stop.signum).name
        if (argv or [])[:1] == ["baseline"]:
            said = _twin_stopped(name)
        else:
            said = (f"stopped by {name} outside the training loop; every file written is "
                    "complete (a started run resumes with --resume)")  # fmt: skip
        print(f"bayesprune: {said}", file=sys.stderr)
        return 128 + stop.signum
    finally:
        for guarded in (sys.stdout, sys.stderr):
            if isinstance(guarded, _ReaderGone):
                guarded.flush()  # what is still buffered, through the guard
        sys.stdout, sys.stderr = streams
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for path in held_run_directories() - held:
            release_run_directory(path)


class _Stopped(BaseException):  # like KeyboardInterrupt: no "except Exception" swallows it
    def __init__(self, signum: int):
        self.signum = signum


def _stop(signum, frame):
    raise _Stopped(signum)


def script_main(argv: list[str] | None = None) -> int:
    """:func:`main` as the ``bayesprune`` script and ``python -m bayesprune.cli`` run it.

    After a data-parallel run was stopped mid-run (a signal, a lost peer, an error), the process
    ends with ``os._exit`` once its last line is out: the interpreter's finalisation once aborted
    such a process after everything was written (SIGABRT instead of 143), most likely releasing a
    collective the stop had cut short, still held by gloo's worker thread
    (``distributed.stopped_mid_run``; docs/method.md §6zza). The
    files are complete by then (each is written atomically) and the hold on the run directory
    goes with the process. Elsewhere: ``main``'s exit code, returned."""
    try:
        code = main(argv)
    except BaseException as end:
        if not stopped_mid_run():
            raise
        if isinstance(end, SystemExit):  # another process of the run is gone (fit_distributed)
            code = end.code if isinstance(end.code, int) else int(end.code is not None)
        else:  # the process's own error: its trace, as Python would print it
            traceback.print_exc()
            code = 1
    if stopped_mid_run():
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):  # a reader gone, a stream closed: exit all the same
                pass
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(script_main())
