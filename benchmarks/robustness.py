"""P3 on Fashion-MNIST LeNet-300-100: final widths across seeds, starting widths and inits.

Usage: ``.venv/bin/python benchmarks/robustness.py [--epochs 10] [--train-subset N --name NAME]``.
Runs one training per setting (5 seeds; starting widths ×1, ×2, ×4; kaiming, xavier and normal
initialisation) and writes ``results/fmnist_lenet300_robustness.json`` and the table in
``README.md``. With ``--train-subset`` each run trains on its seed's fixed subset of N examples.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, write  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import load_dataset  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402
from bayesprune.models.network import GatedMLP  # noqa: E402

BOUNDS = {"seeds": 0.10, "starting widths": 0.20, "initialisations": 0.20}


def coefficient_of_variation(widths: list[list[int]]) -> list[float]:
    t = torch.tensor(widths, dtype=torch.float64)
    return (t.std(0, unbiased=False) / t.mean(0)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="fmnist_lenet300_robustness")
    parser.add_argument("--lr-theta", type=float, default=TrainConfig.lr_theta)
    parser.add_argument("--theta-window", type=float, default=TrainConfig.theta_window)
    parser.add_argument("--train-subset", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    base = TrainConfig(
        epochs=args.epochs,
        lr_theta=args.lr_theta,
        theta_window=args.theta_window,
        train_subset=args.train_subset,
    )
    settings = [("seeds", f"seed {s}", (300, 100), "kaiming", s) for s in range(5)]
    settings += [("starting widths", f"×{m}", (300 * m, 100 * m), "kaiming", 0) for m in (1, 2, 4)]
    settings += [("initialisations", i, (300, 100), i, 0) for i in ("kaiming", "xavier", "normal")]
    started_at = commit()  # the code the runs import, whatever is committed while they run
    runs = []
    for group, label, widths, init, seed in settings:
        torch.manual_seed(seed)
        net = GatedMLP(data.in_features, widths, data.num_classes, init=init)
        summary = Trainer(net, data, replace(base, seed=seed)).fit(progress=False)
        keep = ("initial_widths", "widths", "test_error", "weights_kept_fraction")
        runs.append({"group": group, "label": label, **{k: summary[k] for k in keep}})
        print(group, label, summary["widths"], summary["test_error"], flush=True)
    spread = {
        group: {
            "cv": coefficient_of_variation([r["widths"] for r in runs if r["group"] == group]),
            "bound": bound,
        }
        for group, bound in BOUNDS.items()
    }
    write(args.name, {"runs": runs, "spread": spread, "config": vars(base), "commit": started_at})


if __name__ == "__main__":
    main()
