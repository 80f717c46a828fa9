"""Data-parallel throughput: 1 and 2 processes on the CPU (issue 13, deliverable 5).

Trains LeNet-5 on a 6,000-example Fashion-MNIST subset for 2 epochs (global batch 100, 1 thread
per process) with ``bayesprune train`` three ways: one process without Lightning
(``--strategy single``), and ``--strategy ddp --devices 1`` and ``2`` (gloo). The evidence rule
keeps θ still for the first two blocks of 6,000 examples, so every step runs at full width;
the script checks that no unit was removed. Throughput = examples trained / the run's training
wall time (``train_wall_seconds``: the steps, without the per-epoch evaluation and
checkpoints). Writes ``benchmarks/results/ddp.json`` as
``{"lenet5": {"examples_per_s": {"1": …, "2": …}, …}}`` and its table in ``README.md``.

Run it on an otherwise idle machine: two processes on two cores leave nothing for anything else.

Usage: ``.venv/bin/python benchmarks/ddp.py [--subset 6000] [--epochs 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def train(out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bayesprune.cli", "train", *flags, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (median kept)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    base = ["--arch", "lenet5", "--dataset", "fashion-mnist", "--epochs", str(args.epochs)]
    base += ["--train-subset", str(args.subset), "--threads", "1", "--no-progress"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    settings = {
        "single": ["--strategy", "single"],
        "1": ["--strategy", "ddp", "--devices", "1"],
        "2": ["--strategy", "ddp", "--devices", "2"],
    }
    root = Path(tempfile.mkdtemp(prefix="bayesprune-ddp-"))
    runs: dict[str, list[dict]] = {k: [] for k in settings}
    for r in range(args.repeats):  # interleaved, so that a slow spell hits every setting
        for key, flags in settings.items():
            s = train(root / f"{key}-{r}", base + flags)
            if s["widths"] != s["initial_widths"]:
                raise SystemExit(f"{key}: units were removed ({s['widths']}): not full width")
            examples = args.subset * args.epochs
            runs[key].append(
                {
                    "train_wall_seconds": s["train_wall_seconds"],
                    "examples_per_s": examples / s["train_wall_seconds"],
                    "step_seconds_full_width": s["step_seconds_full_width"],
                    "test_error": s["test_error"],
                }
            )
            print(key, r, f"{runs[key][-1]['examples_per_s']:.0f} examples/s", flush=True)
    # the median: on a shared 2-core machine single runs stray both ways (every run is kept)
    best = {k: statistics.median(v["examples_per_s"] for v in runs[k]) for k in runs}
    result = {
        "lenet5": {
            "examples_per_s": {"1": best["1"], "2": best["2"]},
            "single_process_examples_per_s": best["single"],
            "speedup_2_over_1": best["2"] / best["1"],
            "runs": runs,
        },
        "subset": args.subset,
        "epochs": args.epochs,
        "global_batch": 100,
        "threads_per_process": 1,
        **environment(),
    }
    speedup = result["lenet5"]["speedup_2_over_1"]
    print(json.dumps(result["lenet5"]["examples_per_s"]), f"2 over 1: {speedup:.2f}×")
    write("ddp", result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
