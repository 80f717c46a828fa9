"""Training cost over time, bayesprune against dense: ``benchmarks/training_cost.png``.

Reads ``results/fmnist_lenet300.json`` and ``results/fmnist_lenet5.json`` (written by
``fmnist_lenet300.py`` and ``fmnist_lenet5.py``: dense and bayesprune with the same recipe, one
process, 1 thread) and plots the wall time per epoch and its cumulative sum (training steps only:
bayesprune's per-epoch evaluation, logs and checkpoints are excluded, as the dense run has none;
the table gives them apart). The numbers go to ``results/training_cost.json`` and their table to
``README.md``.

Usage: ``.venv/bin/python benchmarks/training_cost.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, figure_dir, write  # noqa: E402

RUNS = {"LeNet-300-100": "fmnist_lenet300", "LeNet-5": "fmnist_lenet5"}


def main() -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    table: dict = {}
    for col, (title, name) in enumerate(RUNS.items()):
        result = json.loads((HERE / "results" / f"{name}.json").read_text())
        table[title] = {
            "source": name,
            "commit": result["environment"].get("commit", "unknown"),
            "processor": result["environment"].get("processor", "unknown"),
            **{run: {k: result[run].get(k)
                     for k in ("epoch_train_seconds", "train_wall_seconds", "bookkeeping_seconds",
                               "settle_seconds", "merge_rounds")}
               for run in ("dense", "bayesprune")},
        }  # fmt: skip
        for run, style in (("dense", "k--"), ("bayesprune", "C0-")):
            seconds = result[run].get("epoch_train_seconds")
            if not seconds:
                raise SystemExit(f"{name}.json has no per-epoch times: rerun benchmarks/{name}.py")
            epochs = np.arange(1, len(seconds) + 1)
            axes[0, col].plot(epochs, seconds, style, marker="o", label=run)
            axes[1, col].plot(epochs, np.cumsum(seconds), style, marker="o", label=run)
        ratio = result["bayesprune"]["train_wall_seconds"] / result["dense"]["train_wall_seconds"]
        axes[0, col].set_title(f"{title}: wall per epoch (total {ratio:.2f}× dense)")
        axes[1, col].set_title(f"{title}: cumulative")
        for ax in axes[:, col]:
            ax.set_xlabel("epoch")
            ax.set_ylabel("seconds")
            ax.legend()
    fig.tight_layout()
    out = figure_dir() / "training_cost.png"  # ($BAYESPRUNE_RESULTS_DIR: a trial run)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    write("training_cost", {"training_cost": table})
    return out


if __name__ == "__main__":
    import argparse

    # no options; --help prints what the script measures instead of running it
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
