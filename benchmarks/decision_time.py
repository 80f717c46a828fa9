"""When an MLP's layers are decided: the kept widths against the step at which θ may first move.

The measurement behind docs/method.md §6zzi (P3's initialisations at 60,000 examples: from
N(0, 0.01²) LeNet-300-100 keeps 54-65 first-layer units, from kaiming's 90-91). For each
``--inits`` and ``--seeds``, and each ``--arms``, one run of the default rule on Fashion-MNIST
(LeNet-300-100 unless ``--widths``; 10 epochs, batch 100, Adam 1e-3, 1 thread; ``--set`` for
other settings) in which the warm-up of Eq. (10w) is

- ``rule``: as shipped (θ moves once the data term has stopped falling fast);
- ``at<STEP>`` (e.g. ``at1200``): ended at that optimiser step whatever the data term does;
  everything after it (release, evidence test, merge moves, settle) is the shipped rule;
- ``fresh<STEP>``: as ``at<STEP>``, with θ's evidence averages (m, its square, se and the
  decision d of Eq. (10s)) emptied before step STEP's evidence enters them, so that every
  decision reads only evidence measured from that step on. At 60,000 examples ``fresh601``
  decides on examples the network has trained on (the first epoch is steps 1-600), where
  ``at601`` carries the first epoch's, held-out, evidence in its average for about a window:
  the pair separates where the evidence comes from at the same decision time (§6zzi);
- ``never``: never ended, so no layer is released and θ never moves (the final settle still
  runs): the network trained as the gates' evidence sees it at full width. Every 300 steps it
  records, per gated layer, how many units θ's evidence m (Eq. (10s): the running average of
  the per-example θ-gradient, the price less the value) favours keeping (m < 0).

Each run records the summary's widths, share of the weights kept and test error (before and
after the settle), the share of the removed units removed in the run's first quarter (P2), the
warm-up step, the removals per layer split into gate collapses, merge moves (Eq. (14)) and the
final settle (Eq. (15)), and,
at the end, the first layer's effective dimension on the posterior-mode network: how many
singular directions of its weights, and of its centred activations on 5,000 training
examples, hold 90% of their energy.

Usage: ``.venv/bin/python benchmarks/decision_time.py [--inits kaiming normal] [--seeds 0 1]
[--arms rule at1200 at3000] [--widths 300,100] [--train-subset N] [--set key=value ...]
[--jobs 2] [--dataset fashion-mnist] --name NAME`` → ``results/NAME.json`` and its table in
``README.md``. A LeNet-300-100 run on the full set takes about a minute.
"""

from __future__ import annotations

import argparse
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import add_overrides_option, parse_overrides  # noqa: E402

from bayesprune.config import positive  # noqa: E402
from bayesprune.models.network import INITS  # noqa: E402

TRACE_EVERY = 300  # steps between the "never" arm's counts of units worth keeping
ENERGY = 0.9  # the share of the energy the effective dimension's directions hold


def arm_type(text: str) -> str:
    """``rule``, ``never``, ``at<STEP>`` or ``fresh<STEP>`` with STEP ≥ 1."""
    match = re.fullmatch(r"(?:at|fresh)(\d+)", text)
    if text in ("rule", "never") or (match and int(match.group(1)) >= 1):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r}: an arm is rule, never, at<STEP> or fresh<STEP> (e.g. at1200, fresh601)"
    )


def directions(matrix: torch.Tensor, energy: float = ENERGY) -> int:
    """How many singular directions of ``matrix`` hold ``energy`` of its squared norm."""
    s2 = torch.linalg.svdvals(matrix).square()
    share = torch.cumsum(s2, 0) / s2.sum()
    return int((share < energy).sum()) + 1


def trainer_class(arm: str):
    """A Trainer whose warm-up (Eq. (10w)) ends as ``arm`` says, counting in ``self.trace``."""
    from bayesprune.inference.trainer import Trainer

    if arm == "rule":
        return Trainer
    at = None if arm == "never" else int(re.sub(r"\D", "", arm))
    fresh = arm.startswith("fresh")

    class Forced(Trainer):
        trace: list

        def warmed_up(self, data, examples):
            if self.warm_step is not None:
                return True
            if at is not None and self.step + 1 >= at:
                self.warm_step = self.step + 1
                if fresh:
                    self.empty_evidence()
                return True
            if at is None and (self.step + 1) % TRACE_EVERY == 0:
                self.trace.append({"step": self.step + 1, **self.keep_counts()})
            return False

        def empty_evidence(self) -> None:
            """θ's running averages as at the start of a run: every decision after this reads
            evidence measured from this step on (called before the step's evidence enters)."""
            for p in self.guide.theta_parameters():
                for key, value in self.optim.gates.state.get(p, {}).items():
                    if torch.is_tensor(value) and key != "evidence_was_on":  # (was at θ = 1)
                        value.zero_()

        def keep_counts(self) -> dict[str, int]:
            state = self.optim.gates.state
            counts = {}
            for name, p in zip(self.net.gated, self.guide.theta_parameters(), strict=True):
                evidence = state.get(p, {}).get("evidence")
                if evidence is not None:
                    counts[name] = int((evidence < 0).sum())
            return counts

    return Forced


def measure(
    init: str, seed: int, arm: str, widths, subset, overrides: dict,
    dataset: str = "fashion-mnist",
) -> dict:  # fmt: skip
    """One run; its widths, errors, removals by kind, and the first layer's dimension."""
    from torch import nn

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.export import deterministic_network
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    config = TrainConfig(seed=seed, train_subset=subset, **overrides)
    torch.manual_seed(seed)  # as the command line does before it builds the network
    net = build_network("mlp", data.in_shape, data.num_classes, widths, 1.0, init)
    trainer = trainer_class(arm)(net, data, config)
    trainer.trace = []
    summary = trainer.fit(progress=False)
    removed: dict[str, dict[str, int]] = {}
    for event in summary["prune_events"]:
        kind = next((k for k in ("merged", "settled") if event.get(k)), "gates")
        layer = removed.setdefault(event["layer"], {"gates": 0, "merged": 0, "settled": 0})
        layer[kind] += event["removed"]
    mode = deterministic_network(trainer.guide).eval()
    first = next(m for m in mode if isinstance(m, nn.Linear))
    relu = next(i for i, m in enumerate(mode) if isinstance(m, nn.ReLU))
    x = trainer.data.x_train
    sample = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:5000]
    with torch.no_grad():
        h = mode[: relu + 1](x[sample])
        dims = {"weights": directions(first.weight), "activations": directions(h - h.mean(0))}
    before = summary.get("before_settle") or {}
    return {
        "init": init,
        "seed": seed,
        "arm": arm,
        "dataset": dataset,
        "train_subset": subset,
        "overrides": overrides,
        "initial_widths": summary["initial_widths"],
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "before_settle": {k: before[k] for k in ("widths", "test_error") if k in before},
        "weights_kept_fraction": summary["weights_kept_fraction"],
        "pruned_early_fraction": summary["pruned_early_fraction"],
        "warmup_step": summary["warmup_step"],
        "release_steps": summary["release_steps"],
        "removed": removed,
        "first_layer_directions": dims,
        "keep_trace": trainer.trace,
        "status": summary["status"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--inits", nargs="+", choices=INITS, default=["kaiming", "normal"])
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0, 1])
    parser.add_argument("--arms", nargs="+", type=arm_type, default=["rule", "at1200", "at3000"])
    parser.add_argument("--widths", default=None, help="e.g. 600,200 (default: 300,100)")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    add_overrides_option(parser)
    parser.add_argument("--name", required=True, help="results/<name>.json")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    widths = None if args.widths is None else tuple(int(w) for w in args.widths.split(","))
    overrides = parse_overrides(args.set)
    started_at = commit()
    jobs = [
        (init, seed, arm, widths, args.train_subset, overrides, args.dataset)
        for init in args.inits
        for seed in args.seeds
        for arm in args.arms
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    for run in runs:
        print(run["init"], run["seed"], run["arm"], run["widths"], run["test_error"],
              run["removed"], run["first_layer_directions"])  # fmt: skip
    result = {"decision_time": runs, "commit": started_at, "cpu": cpu_model(), "threads": 1}
    write(args.name, result, args.results_dir)
    return result


if __name__ == "__main__":
    main()
