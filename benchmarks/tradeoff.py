"""Error against weights kept: bayesprune's price swept, beside two ways to get the same widths.

Usage: ``.venv/bin/python benchmarks/tradeoff.py [--case mlp-n60k] [--scales 0.25 0.5 1 2 4]
[--seeds 0 1] [--jobs 2] [--name tradeoff_mlp-n60k]``. For a cell of
``benchmarks/robustness_matrix.py`` (its data, network and recipe) and every multiple ``s`` of
the default temperature τ(N) (docs/method.md Eq. (13)), it trains

- **bayesprune** with ``price_scale = s``, τ = s·τ(N) (all other settings default), which
  decides the widths;
- **dense at those widths**: a plain network of the kept widths, initialised afresh and trained
  from scratch with the cell's recipe (what the widths are worth without the pruning run);
- **magnitude pruning + fine-tuning** to those widths: the full dense network trained for half
  the epochs, each hidden layer cut (input side first) to the kept width by the L2 norm of each
  unit's group (its incoming weights and bias and its outgoing weights, the group norm that
  structured-pruning tools such as Torch-Pruning rank by), then trained for the remaining epochs
  with a fresh Adam at the same rate: the usual train-prune-fine-tune baseline at the same total
  number of epochs and the same widths;

and the full dense network once per seed. Writes ``results/<name>.json``, its table in
``README.md`` and ``<name>.png`` (test error against the fraction of weights kept, one point per
run, lines through the means per scale). One process per bayesprune run, one thread each.
"""

from __future__ import annotations

import argparse
import copy
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, figure_dir, narrowed, seed_type, write  # noqa: E402
from robustness_matrix import (  # noqa: E402
    add_cells_option,
    cell_data,
    cell_network,
    dense_summary,
    run_cell,
    training_data,
    training_settings,
)

from bayesprune.config import positive  # noqa: E402


def recipe(case: str) -> dict:
    """The cell's epochs, batch size, learning rate, schedule and optimiser, as ``train_dense``
    takes them."""
    from bayesprune.config import TrainConfig

    config = TrainConfig(**training_settings(case))
    return {
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": config.lr_schedule,
        "optimizer": config.optimizer,
        "momentum": config.momentum,
        "epochs": config.epochs,
    }


def group_norms(net, name: str):
    """Per unit of ``name``: the L2 norm of its incoming weights and bias and outgoing weights."""
    layer, nxt_name = net.layers[name], net.next_layer(name)
    nxt = net.layers[nxt_name]
    incoming = layer.weight.detach().flatten(1).pow(2).sum(1) + layer.bias.detach().pow(2)
    if nxt.weight.dim() > 2:  # a convolution reads one input channel per unit
        outgoing = nxt.weight.detach().pow(2).sum(dim=(0, 2, 3))
    else:  # a Linear reads a block of columns per unit (H·W after a Flatten)
        outgoing = nxt.weight.detach().pow(2).sum(0).view(net.width(name), -1).sum(1)
    return (incoming + outgoing).sqrt()


def magnitude_pruned(net, widths):
    """``net`` cut to ``widths`` by group L2 norm, layer by layer from the input (in place)."""
    import torch

    for name, width in zip(net.gated, widths, strict=True):
        keep = torch.topk(group_norms(net, name), width).indices.sort().values
        net.remove_units_(name, keep)
    return net


def run_bayesprune(case: str, seed: int, scale: float) -> dict:
    """The matrix cell's bayesprune run with τ = scale · τ(N)."""
    cell = run_cell(case, seed, {"price_scale": scale}, dense=False)
    return {"seed": seed, "scale": scale, **cell["bayesprune"]}


def run_baselines(case: str, seed: int, kept: list[list[int]]) -> dict:
    """The full dense network, and per kept widths: dense from scratch, magnitude + fine-tune."""
    import torch

    from bayesprune.baseline import train_dense

    torch.set_num_threads(1)
    data = cell_data(case)
    train, r = training_data(case, seed, data), recipe(case)
    settings = {k: r[k] for k in ("batch_size", "lr", "schedule", "optimizer", "momentum")}
    keys = ("test_error", "widths", "weights_kept", "weights_total", "train_wall_seconds")

    def summary_of(s):
        return {k: s[k] for k in keys}

    full = summary_of(dense_summary(case, seed, data, r["epochs"], r["batch_size"], r["lr"]))
    half = r["epochs"] // 2
    trained = cell_network(case, seed, data)
    train_dense(trained, train, half, seed=seed, **settings)
    out = {"seed": seed, "dense": full, "kept": []}
    for widths in kept:
        torch.manual_seed(seed)
        scratch = narrowed(cell_network(case, seed, data), widths)
        scratch.reset_parameters("kaiming")
        scratch_summary = train_dense(scratch, train, r["epochs"], seed=seed, **settings)
        pruned = magnitude_pruned(copy.deepcopy(trained), widths)
        tuned = train_dense(pruned, train, r["epochs"] - half, seed=seed + 1, **settings)
        out["kept"].append({
            "widths": widths,
            "dense_kept": summary_of(scratch_summary),
            "magnitude": summary_of(tuned),
        })  # fmt: skip
        print(f"{case} seed {seed} widths {widths}: dense {scratch_summary['test_error']:.4f} "
              f"magnitude {tuned['test_error']:.4f}", flush=True)  # fmt: skip
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    series = {"bayesprune": [], "dense at the kept widths": [], "magnitude + fine-tune": []}
    for row in result["rows"]:
        frac = row["weights_kept_fraction"]
        series["bayesprune"].append((row["scale"], frac, row["bayesprune_error"]))
        series["dense at the kept widths"].append((row["scale"], frac, row["dense_kept_error"]))
        series["magnitude + fine-tune"].append((row["scale"], frac, row["magnitude_error"]))
    for (label, points), marker in zip(series.items(), "os^", strict=True):
        xs = [100 * f for _, f, _ in points]
        ys = [100 * e for _, _, e in points]
        (line,) = ax.plot(xs, ys, marker, alpha=0.5, label=label)
        means = []
        for scale in sorted({s for s, _, _ in points}):
            sel = [(f, e) for s, f, e in points if s == scale]
            means.append((100 * sum(f for f, _ in sel) / len(sel),
                          100 * sum(e for _, e in sel) / len(sel)))  # fmt: skip
        ax.plot(*zip(*sorted(means), strict=True), "-", color=line.get_color())
    fracs = [100 * row["weights_kept_fraction"] for row in result["rows"]]
    lo, hi = min(fracs), max(fracs)
    dense = [100 * d["test_error"] for d in result["dense"]]
    ax.axhline(sum(dense) / len(dense), color="k", ls="--", lw=1, label="dense (full width)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ticks = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100)
    ax.set_xlim(lo / 1.3, hi * 1.3)
    shown = [t for t in ticks if lo / 1.3 <= t <= hi * 1.3]
    ax.set_xticks(shown[:: max(1, len(shown) // 8)])  # at most about eight labels
    ax.set_xlabel("weights kept (% of the dense network)")
    ax.set_ylabel("test error (%)")
    scales = ", ".join(map(str, result["scales"]))
    seeds = len(result["dense"])
    ax.set_title(  # the rule a figure shows is its commit's: most predate Eq. (10s)
        f"{result['case']}: τ = s·τ(N), s in {scales}\n"
        f"{seeds} seed(s), commit {result.get('commit', '?')}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_cells_option(parser, "mlp-n60k", single=True)
    parser.add_argument("--scales", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0, 1])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default=None, help="results/<name>.json (tradeoff_<case>)")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    if any(s <= 0 for s in args.scales):
        parser.error("--scales must be positive")
    name = args.name or f"tradeoff_{args.case}"
    label = commit()
    jobs = [(args.case, seed, scale) for seed in args.seeds for scale in args.scales]
    # one process per run, or all in this one with --jobs 1 (tests)
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else nullcontext() as pool:

        def starmap(fn, argsets):
            if pool is None:
                return [fn(*a) for a in argsets]
            return list(pool.map(fn, *zip(*argsets, strict=True)))

        runs = starmap(run_bayesprune, jobs)
        kept = {seed: [r["widths"] for r in runs if r["seed"] == seed] for seed in args.seeds}
        found = starmap(run_baselines, [(args.case, s, kept[s]) for s in args.seeds])
        baselines = {b["seed"]: b for b in found}
    rows = []
    for run in runs:
        base = baselines[run["seed"]]
        match = next(k for k in base["kept"] if k["widths"] == run["widths"])
        rows.append({
            "seed": run["seed"],
            "scale": run["scale"],
            "temperature": run["temperature"],
            "widths": run["widths"],
            "weights_kept_fraction": run["weights_kept_fraction"],
            "bayesprune_error": run["test_error"],
            "dense_kept_error": match["dense_kept"]["test_error"],
            "magnitude_error": match["magnitude"]["test_error"],
            "dense_error": base["dense"]["test_error"],
            "status": run["status"],
        })  # fmt: skip
    result = {
        "tradeoff": True,
        "case": args.case,
        "recipe": recipe(args.case),
        "scales": args.scales,
        "seeds": args.seeds,
        "commit": label,
        "cpu": cpu_model(),
        "threads": 1,
        "rows": rows,
        "dense": [baselines[s]["dense"] for s in args.seeds],
        "bayesprune": runs,
        "baselines": [baselines[s] for s in args.seeds],
    }
    results_dir = None if args.results_dir is None else Path(args.results_dir)
    write(name, result, results_dir)
    plot(result, figure_dir(results_dir) / f"{name}.png")
    return result


if __name__ == "__main__":
    main()
