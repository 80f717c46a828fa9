"""P3 on Fashion-MNIST LeNet-300-100 (or LeNet-5): final widths across seeds, starting widths and
inits.

Usage: ``.venv/bin/python benchmarks/robustness.py [--epochs 10] [--train-subset N --name NAME]
[--arch lenet5] [--groups seeds starting-widths initialisations]``. Runs one training per
setting (5 seeds; starting widths ×1, ×2, ×4; kaiming, xavier and normal initialisation;
``--groups`` picks some of the three) and writes ``results/fmnist_lenet300_robustness.json``
(``--name``) and the table in ``README.md``. With ``--train-subset`` each run trains on its
seed's fixed subset of N examples. ``--arch lenet5`` starts from LeNet-5-Caffe's 20-50-500 (×2,
×4 scale all three).
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import coefficient_of_variation, commit, cpu_model, description, write  # noqa: E402

from bayesprune.config import TrainConfig, positive  # noqa: E402
from bayesprune.data import load_dataset  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402
from bayesprune.models.network import DEFAULT_WIDTHS, build_network  # noqa: E402

BOUNDS = {"seeds": 0.10, "starting widths": 0.20, "initialisations": 0.20}


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--epochs", type=positive(int), default=10, help="of every run")
    parser.add_argument("--threads", type=positive(int), default=1, help="torch threads")
    parser.add_argument("--name", default="fmnist_lenet300_robustness", help="results/<name>.json")
    parser.add_argument(
        "--lr-theta", type=positive(float), default=TrainConfig.lr_theta, help="TrainConfig's"
    )
    parser.add_argument(
        "--theta-window", type=positive(float), default=TrainConfig.theta_window,
        help="TrainConfig's",
    )  # fmt: skip
    parser.add_argument(
        "--train-subset", type=positive(int), default=None,
        help="each run on its seed's fixed subset of this many examples",
    )  # fmt: skip
    parser.add_argument("--arch", choices=("mlp", "lenet5"), default="mlp")
    flags = [g.replace(" ", "-") for g in BOUNDS]  # (the records name them with a space)
    parser.add_argument(
        "--groups", nargs="+", choices=flags, default=flags,
        help="which of the three groups of runs (5 seeds; starts ×1, ×2, ×4; three inits)",
    )  # fmt: skip
    args = parser.parse_args()
    args.groups = [g.replace("-", " ") for g in args.groups]  # the records' names
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    base = TrainConfig(
        epochs=args.epochs,
        lr_theta=args.lr_theta,
        theta_window=args.theta_window,
        train_subset=args.train_subset,
    )
    start = tuple(DEFAULT_WIDTHS[args.arch])
    settings = [("seeds", f"seed {s}", start, "kaiming", s) for s in range(5)]
    settings += [
        ("starting widths", f"×{m}", tuple(m * w for w in start), "kaiming", 0) for m in (1, 2, 4)
    ]
    settings += [("initialisations", i, start, i, 0) for i in ("kaiming", "xavier", "normal")]
    settings = [s for s in settings if s[0] in args.groups]
    started_at = commit()  # the code the runs import, whatever is committed while they run
    runs = []
    for group, label, widths, init, seed in settings:
        torch.manual_seed(seed)
        net = build_network(args.arch, data.in_shape, data.num_classes, widths, init=init)
        summary = Trainer(net, data, replace(base, seed=seed)).fit(progress=False)
        keep = ("initial_widths", "widths", "test_error", "weights_kept_fraction",
                "before_settle", "settled")  # (the settle's: the widths and error before it)
        runs.append({"group": group, "label": label, **{k: summary.get(k) for k in keep}})
        print(group, label, summary["widths"], summary["test_error"], flush=True)
    spread = {
        group: {
            "cv": coefficient_of_variation([r["widths"] for r in runs if r["group"] == group]),
            "bound": bound,
        }
        for group, bound in BOUNDS.items()
        if group in args.groups
    }
    result = {"runs": runs, "spread": spread, "config": vars(base), "commit": started_at}
    write(args.name, {**result, "arch": args.arch, "threads": args.threads, "cpu": cpu_model()})


if __name__ == "__main__":
    main()
