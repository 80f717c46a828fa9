"""Do the batch size and the learning rate set the widths through one number, Adam's noise
temperature T = lr / √B? (issue 9: the width CV across batch sizes and learning rates.)

Usage: ``.venv/bin/python benchmarks/width_temperature.py [--seeds 0 1] [--jobs 2] [--name N]``
(about 13 minutes on 2 cores; ``--name`` writes ``results/N.json`` and ``benchmarks/N.png``
instead of ``width_temperature``, keeping an earlier rule's record).

The matrix varies the batch size (32 / 100 / 256 at lr 1e-3) and the learning rate (3e-4 / 1e-3 /
3e-3 at batch 100) one at a time. Over eight seeds (docs/method.md §6w) LeNet-300-100's first
layer keeps 67 / 79 / 88 units along the batch axis and 99 / 79 / 58 along the rate axis: a
larger batch keeps more, a larger rate fewer. Adam's step has a fixed size, lr, and the part of
it that is mini-batch noise scales as 1/√B, so T = lr/√B is the scale of the weights' random walk.
If the widths are a function of T alone, pairs of (B, lr) with the same T end at the same widths
whatever their batch size, and the two axes of the matrix are one axis.

The grid: the matrix's five (B, lr) settings, two pairs that swap them (batch 32 at lr 3.2e-4
has the T of batch 256 at lr 1e-3; batch 256 at lr 3e-3 the T of batch 32 at lr 1e-3), and four
more (batch 32 at 3e-3, 256 at 3e-4, 64 at 2e-3, 128 at 5e-4). Each is the matrix's recipe
(full Fashion-MNIST, LeNet-300-100, 10 epochs, the shipped rule; ``robustness_matrix.run_cell``
with the batch size and rate overridden), bayesprune only. Writes ``results/width_temperature.json``
(every run; per setting the mean widths; per layer the least-squares line width = a + b log₂ T
and its R², over the settings' means) and ``benchmarks/width_temperature.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    commit,
    cpu_model,
    description,
    figure_dir,
    output_dir,
    seed_type,
    write,
)

from bayesprune.config import positive  # noqa: E402

GRID = (
    (32, 1e-3), (100, 1e-3), (256, 1e-3), (100, 3e-4), (100, 3e-3),  # the matrix's
    (32, 3.2e-4), (256, 3e-3),  # T of batch 256 at 1e-3, and of batch 32 at 1e-3
    (32, 3e-3), (256, 3e-4), (64, 2e-3), (128, 5e-4),
)  # fmt: skip
LAYERS = ("fc1", "fc2")


def temperature(batch: int, lr: float) -> float:
    return lr / math.sqrt(batch)


def run(batch: int, lr: float, seed: int) -> dict:
    from robustness_matrix import run_cell

    cell = run_cell("mlp-n60k", seed, {"batch_size": batch, "lr": lr}, dense=False)
    summary = cell["bayesprune"]
    return {
        "batch": batch,
        "lr": lr,
        "temperature": temperature(batch, lr),
        "seed": seed,
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "weights_kept_fraction": summary["weights_kept_fraction"],
        "status": summary["status"],
    }


def fit(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x, with R² (the squared correlation, for one regressor)."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return {
        "intercept": intercept,
        "per_doubling": slope,
        "r2": statistics.correlation(xs, ys) ** 2,
    }


def summarise(runs: list[dict]) -> dict:
    settings = []
    for batch, lr in GRID:
        mine = [r for r in runs if r["batch"] == batch and r["lr"] == lr]
        if not mine:
            continue
        settings.append({
            "batch": batch,
            "lr": lr,
            "temperature": temperature(batch, lr),
            "seeds": [r["seed"] for r in mine],
            "widths": [statistics.fmean(r["widths"][i] for r in mine) for i in range(len(LAYERS))],
            "test_error": statistics.fmean(r["test_error"] for r in mine),
        })  # fmt: skip
    xs = [math.log2(s["temperature"]) for s in settings]
    fits = {name: fit(xs, [s["widths"][i] for s in settings]) for i, name in enumerate(LAYERS)}
    return {"settings": settings, "fits": fits}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    batches = sorted({s["batch"] for s in result["settings"]})
    markers = dict(zip(batches, "os^Dvp", strict=False))
    for i, (ax, name) in enumerate(zip(axes, LAYERS, strict=True)):
        for k, r in enumerate(result["runs"]):
            ax.scatter(r["temperature"], r["widths"][i], marker=markers[r["batch"]], alpha=0.35,
                       color="C0", label="one run (seed)" if k == 0 else None)  # fmt: skip
        for batch in batches:
            pts = sorted((s["temperature"], s["widths"][i]) for s in result["settings"]
                         if s["batch"] == batch)  # fmt: skip
            ax.scatter(*zip(*pts, strict=True), marker=markers[batch], s=60, color="C1",
                       label=f"batch {batch} (mean)")  # fmt: skip
        f = result["fits"][name]
        ts = [s["temperature"] for s in result["settings"]]
        grid = [min(ts) * (max(ts) / min(ts)) ** (k / 50) for k in range(51)]
        ax.plot(grid, [f["intercept"] + f["per_doubling"] * math.log2(t) for t in grid], "k--",
                label=f"{f['per_doubling']:+.1f} units per doubling, R² {f['r2']:.2f}")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.0e"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks([t for t in (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)
                       if min(ts) / 1.2 <= t <= max(ts) * 1.2])  # fmt: skip
        ax.set_xlabel("T = lr / √batch")
        ax.set_title(  # the rule is the commit's: width_temperature.json predates Eq. (10s)
            f"LeNet-300-100 {name}, Fashion-MNIST, 10 epochs\ncommit {result.get('commit', '?')}",
            fontsize=10,
        )
        ax.legend(fontsize=7)
    axes[0].set_ylabel("final width (units)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0, 1])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw the figure from results/<name>.json",
    )
    parser.add_argument(
        "--name", default="width_temperature", help="results/<name>.json and <name>.png"
    )
    args = parser.parse_args(argv)
    figure = figure_dir() / f"{args.name}.png"  # ($BAYESPRUNE_RESULTS_DIR: there, as the JSON)
    if args.plot_only:
        result = json.loads((output_dir() / f"{args.name}.json").read_text())
        plot(result, figure)
        return result
    started_at = commit()
    jobs = [(b, lr, s) for b, lr in GRID for s in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    result = {"commit": started_at, "cpu": cpu_model(), "threads": 1, "runs": runs,
              **summarise(runs)}  # fmt: skip
    plot(result, figure)
    for s in result["settings"]:
        print(f"batch {s['batch']:4d} lr {s['lr']:.1e} T {s['temperature']:.2e}: "
              f"widths {[round(w, 1) for w in s['widths']]}")  # fmt: skip
    print({k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in result["fits"].items()})
    write(args.name, result)
    return result


if __name__ == "__main__":
    main()
