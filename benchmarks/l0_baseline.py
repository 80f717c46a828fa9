"""Structured L0 gates (hard concrete) beside bayesprune: a learnt-gate baseline with a penalty λ.

Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0 Regularization" (ICLR
2018), applied to the same units bayesprune gates: one hard-concrete gate per hidden unit (β =
2/3, stretched to (−0.1, 1.1) and clipped to [0, 1]), its log α learnt by Adam beside the
weights (log α starting at 0 + 0.01·N(0, 1), clamped to [ln 0.01, ln 100] after each step, as
in the reference code), and the penalty λ/N times the expected number of nonzero weights, each
weight counted once: a gate switches its unit's incoming weights and bias, and the last hidden
layer's also its weights into the classifier. At test time each gate is its deterministic
value clip(σ(log α)·1.2 − 0.1, 0, 1); a unit whose gate is 0 is removed, the others' gates
scale their outputs. The rest is the dense recipe of the robustness matrix's cell (same
network and initialisation, Adam, epochs, batch, learning rate and schedule, training subset,
batch order), without weight decay, as the dense runs.

Where this departs from the paper and its code, and which way it cuts:

- 10 epochs (the cell's recipe), not the paper's 200. Adam moves log α by about the gates'
  learning rate per step, and a gate starting at log α = 0 closes at test time only below
  −2.40: with gate lr × steps (``gate_reach`` in each row) below that no λ can close a gate.
  The gates get their own Adam (``--gate-lrs``), held fixed while the cell changes the
  weights' rate; the reference steps everything with one optimiser.
- Gates drawn per example (the reference's ``local_rep``; its default draws one per
  mini-batch): a gradient of lower variance, if anything in L0's favour.
- No exponential moving average of the parameters at test time (the reference's LeNet-5
  script evaluates one), no gates on the input pixels, no L2 term (the reference weighs one by
  P(open); the dense runs have none).

λ is the method's one knob. The comparison this script makes is the one a user meets: pick λ
(and the gates' learning rate) on one setting, then change the data size, the batch size or
the learning rate, as the robustness matrix does for bayesprune, whose price has no knob.

Usage::

    .venv/bin/python benchmarks/l0_baseline.py --cells mlp-n60k --seeds 0 1 \\
        --lambdas 0.03 0.1 0.3 1 --gate-lrs 1e-3 1e-2 --name l0_sweep
    .venv/bin/python benchmarks/l0_baseline.py --cells mlp-n3k mlp-n10k ... --seeds 0 1 2 3 \\
        --lambdas 0.3 --gate-lrs 1e-2 --name l0_matrix \\
        --bayesprune-from benchmarks/results/robustness_matrix.json ...
"""

from __future__ import annotations

import argparse
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, existing_file, seed_type, write  # noqa: E402
from robustness_matrix import CASES, add_cells_option  # noqa: E402

from bayesprune.config import positive  # noqa: E402

LIMIT_A, LIMIT_B, BETA, EPS = -0.1, 1.1, 2.0 / 3.0, 1e-6  # the paper's stretch and temperature
# the reference code's "droprate" 0.5 for hidden units: log α = 0 (P(gate = 0) is then 0.17)
DROPRATE_INIT = 0.5
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # the reference code's clamp after each step
MC_DRAWS = 30  # draws of the training-time gates for ``sampled_gates_error``


def sample_gates(log_alpha, batch: int, generator=None):
    """Hard-concrete gates, one per example and unit, differentiable in log α."""
    import torch

    u = torch.rand(batch, log_alpha.shape[0], generator=generator).clamp_(EPS, 1 - EPS)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
    return (s * (LIMIT_B - LIMIT_A) + LIMIT_A).clamp(0.0, 1.0)


def prob_nonzero(log_alpha):
    """P(gate ≠ 0) = 1 − Q(s ≤ 0): the expected L0 norm per gate."""
    import torch

    return torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_A / LIMIT_B))


def deployed_gates(log_alpha):
    """The deterministic gate of the paper's test time."""
    import torch

    return (torch.sigmoid(log_alpha) * (LIMIT_B - LIMIT_A) + LIMIT_A).clamp(0.0, 1.0)


def unit_costs(net) -> dict:
    """The weights each gate of a layer switches, each weight counted once: a unit's incoming
    weights and bias, and for the last hidden layer also its weights into the (ungated)
    classifier. At full width they sum to the network's weights less the classifier's biases
    (LeNet-300-100: 266,600 of 266,610), as the reference code's layers count them."""
    last = net.gated[-1]
    costs = {}
    for name in net.gated:
        costs[name] = net.fan_in(name) + 1
        if name == last:
            costs[name] += net.layers["out"].weight[0].numel() // net.width(name) * net.num_classes
    return costs


def train_l0(net, data, epochs: int, batch_size: int, lr: float, lam: float, gate_lr: float,
             seed: int, schedule: str = "constant", optimizer: str = "adam",
             momentum: float = 0.9) -> dict:  # fmt: skip
    """Train ``net`` with L0 gates on its hidden units; return widths, size and test error.

    The gates' initial values and noise come from their own generator, so that the batches and
    the network's initialisation are the dense run's of the same seed (paired gaps).
    """
    import copy

    import torch
    import torch.nn.functional as F

    from bayesprune.baseline import plain_optimizer
    from bayesprune.export import count_weights
    from bayesprune.loop import batches, evaluate, lr_schedule, steps_per_epoch

    torch.manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 7919)
    device = torch.device("cpu")
    start = math.log(1 - DROPRATE_INIT) - math.log(DROPRATE_INIT)
    log_alpha = {
        name: (start + 1e-2 * torch.randn(net.width(name), generator=noise)).requires_grad_(True)
        for name in net.gated
    }
    costs = unit_costs(net)
    n = len(data.x_train)
    # the cell's optimiser on the per-example objective (mean cross-entropy + λ/N · L0), as dense
    weights_opt = plain_optimizer(net.parameters(), lr, optimizer, momentum)
    gates_opt = torch.optim.Adam(list(log_alpha.values()), lr=gate_lr)
    steps = steps_per_epoch(data, batch_size) * epochs
    scheduler = lr_schedule(weights_opt, schedule, steps)
    curve = []
    for _ in range(epochs):
        net.train()
        for x, y, _ in batches(data, batch_size, device):
            gates = {name: sample_gates(la, x.shape[0], noise) for name, la in log_alpha.items()}
            penalty = sum((prob_nonzero(la) * costs[name]).sum() for name, la in log_alpha.items())
            loss = F.cross_entropy(net(x, gates=gates), y) + lam / n * penalty
            weights_opt.zero_grad(set_to_none=True)
            gates_opt.zero_grad(set_to_none=True)
            loss.backward()
            weights_opt.step()
            gates_opt.step()
            if scheduler is not None:
                scheduler.step()
            with torch.no_grad():
                for la in log_alpha.values():
                    la.clamp_(*LOG_ALPHA_RANGE)
        with torch.no_grad():
            curve.append([int((deployed_gates(la) > 0).sum()) for la in log_alpha.values()])
    net.eval()
    with torch.no_grad():
        final = {name: deployed_gates(la) for name, la in log_alpha.items()}

        class Gated(torch.nn.Module):  # the network at its test-time gates
            def forward(self, x):
                return net(x, gates=final)

        error = evaluate(Gated(), data.x_test, data.y_test)
        # the training-time network, for comparison: predictions averaged over draws of the gates
        draws = torch.Generator().manual_seed(seed + 1)
        probs = sum(
            torch.softmax(net(data.x_test, gates={name: sample_gates(la, len(data.x_test), draws)
                                                  for name, la in log_alpha.items()}), -1)
            for _ in range(MC_DRAWS)
        )  # fmt: skip
        sampled_error = float((probs.argmax(-1) != data.y_test).float().mean())
        widths = [int((z > 0).sum()) for z in final.values()]
        total = count_weights(net.to_sequential())
        if min(widths) == 0:  # a layer with every gate closed: a constant predictor
            kept = 0
        else:
            pruned = copy.deepcopy(net)
            for name, z in final.items():
                pruned.remove_units_(name, (z > 0).nonzero().flatten())
            kept = count_weights(pruned.to_sequential())
        alphas = torch.cat(list(log_alpha.values()))
    open_gates = torch.cat([z[z > 0] for z in final.values()])
    return {
        "widths": widths,
        "status": "collapsed" if min(widths) == 0 else "finished",
        "test_error": error,
        "sampled_gates_error": sampled_error,
        "weights_kept": kept,
        "weights_kept_fraction": kept / total,
        "open_gates_at_one": float((open_gates == 1).float().mean()) if len(open_gates) else None,
        "steps": steps,
        # Adam moves log α by about gate_lr a step: a gate starting at log α = 0 closes at test
        # time only below log(1/11) = −2.40, out of reach where gate_lr × steps is smaller
        "gate_reach": gate_lr * steps,
        "log_alpha_min": float(alphas.min()),
        "log_alpha_median": float(alphas.median()),
        "widths_per_epoch": curve,
    }


def run(case: str, seed: int, lambdas: list[float], gate_lrs: list[float]) -> list[dict]:
    """The dense run and one L0 run per (λ, gate lr) of one cell and seed."""
    import torch
    from robustness_matrix import (
        cell_config,
        cell_data,
        cell_network,
        dense_summary,
        training_data,
    )

    torch.set_num_threads(1)
    cfg = cell_config(case, seed)  # the cell's recipe: epochs, batch, rate and its schedule
    data = cell_data(case)
    dense = dense_summary(case, seed, data, cfg.epochs, cfg.batch_size, cfg.lr,
                          schedule=cfg.lr_schedule, optimizer=cfg.optimizer,
                          momentum=cfg.momentum)  # fmt: skip
    rows = []
    for lam in lambdas:
        for gate_lr in gate_lrs:
            net = cell_network(case, seed, data)
            train = training_data(case, seed, data)
            out = train_l0(net, train, cfg.epochs, cfg.batch_size, cfg.lr, lam, gate_lr, seed,
                           cfg.lr_schedule, cfg.optimizer, cfg.momentum)  # fmt: skip
            row = {"case": case, "seed": seed, "lambda": lam, "gate_lr": gate_lr, **out,
                   "dense_error": dense["test_error"]}  # fmt: skip
            print(
                f"{case} seed {seed} λ {lam:g} gate lr {gate_lr:g}: widths {row['widths']} "
                f"({100 * row['weights_kept_fraction']:.1f}%) error {100 * row['test_error']:.2f}% "
                f"(dense {100 * dense['test_error']:.2f}%)",
                flush=True,
            )
            rows.append(row)
    return rows


def bayesprune_runs(paths: list[Path], cases: list[str], seeds: list[int]) -> list[dict]:
    """bayesprune's (default rule) runs of the same cells and seeds, from matrix results files;
    the first file that has a (cell, seed) wins, so a file of a later version of the rule goes
    first (``probe_short_batch_b256.json`` before ``robustness_matrix.json`` for batch 256).
    Runs with overrides, per cell or for the whole file, are a probe's and are passed over."""
    import json

    found: dict = {}
    for path in paths:
        result = json.loads(path.read_text())
        if result.get("overrides"):  # a probe's file (its settings at the file's level)
            continue
        for cell in result.get("cells", []):
            key = (cell["case"], cell["seed"])
            if cell["case"] in cases and cell["seed"] in seeds and key not in found:
                if cell.get("overrides"):
                    continue  # a probe's runs, not the default
                b = cell["bayesprune"]
                found[key] = {
                    "case": cell["case"], "seed": cell["seed"], "widths": b["widths"],
                    "test_error": b["test_error"], "status": b.get("status", "finished"),
                    "weights_kept_fraction": b["weights_kept_fraction"],
                    "dense_error": cell.get("dense", {}).get("test_error"),
                    "source": path.name,
                }  # fmt: skip
    return sorted(found.values(), key=lambda r: (r["case"], r["seed"]))


def with_dense(runs: list[dict], rows: list[dict]) -> list[dict]:
    """bayesprune's runs, each paired with this script's dense run of its cell and seed (the
    dense recipe is plain PyTorch from the seed: the matrix files' dense runs, where they have
    one, are the same numbers)."""
    dense = {(r["case"], r["seed"]): r["dense_error"] for r in rows}
    return [{**r, "dense_error": dense.get((r["case"], r["seed"]), r["dense_error"])} for r in runs]


GAP_CEILING = 4.0  # points: mean gaps above it are drawn at the top edge


def merged(results: list[dict], seeds: list[int], gate_lr: float) -> tuple[list, list]:
    """L0's runs at ``gate_lr`` and bayesprune's, of ``seeds``, from several results files, each
    run once: L0's by (cell, λ, gate lr, seed), bayesprune's by (cell, seed), paired with the
    dense run of its cell and seed."""
    rows: dict = {}
    for result in results:
        for r in result["rows"]:
            if r["gate_lr"] == gate_lr and r["seed"] in seeds:
                rows.setdefault((r["case"], r["lambda"], r["gate_lr"], r["seed"]), r)
    l0 = list(rows.values())
    runs: dict = {}
    for result in results:
        for r in result.get("bayesprune", []):
            if r["seed"] in seeds:
                runs.setdefault((r["case"], r["seed"]), r)
    return l0, [r for r in with_dense(list(runs.values()), l0) if r.get("dense_error") is not None]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _read_at(kept: float, low: tuple, high: tuple) -> float:
    """The gap at ``kept`` (% of the weights) on the line through ``low`` and ``high`` (each
    (weights kept, gap)), linear in log(weights kept); ``low``'s gap where the sizes agree."""
    (x0, y0), (x1, y1) = low, high
    t = (math.log(kept) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
    return y0 + t * (y1 - y0)


def summarise(results: list[dict], seeds: list[int], gate_lr: float) -> list[dict]:
    """Per cell: bayesprune's mean size and gap, L0's per λ (mean over the same seeds; a λ
    with a collapsed run has no size on the curve), and L0's gap read at bayesprune's size,
    linearly in log(weights kept) between the two λ that bracket it (None where none do)."""
    l0, bp = merged(results, seeds, gate_lr)
    out = []
    for case in [c for c in CASES if any(r["case"] == c for r in l0)]:
        mine = [r for r in bp if r["case"] == case]
        cell: dict = {"case": case, "curve": []}
        for lam in sorted({r["lambda"] for r in l0 if r["case"] == case}):
            sel = [r for r in l0 if (r["case"], r["lambda"]) == (case, lam)]
            cell["curve"].append({
                "lambda": lam, "seeds": sorted(r["seed"] for r in sel),
                "kept": 100 * _mean(r["weights_kept_fraction"] for r in sel),
                "gap": 100 * _mean(r["test_error"] - r["dense_error"] for r in sel),
                "collapsed": sum(r["status"] != "finished" for r in sel),
            })  # fmt: skip
        if mine:
            kept = 100 * _mean(r["weights_kept_fraction"] for r in mine)
            cell["bayesprune"] = {
                "seeds": sorted(r["seed"] for r in mine), "kept": kept,
                "gap": 100 * _mean(r["test_error"] - r["dense_error"] for r in mine),
            }  # fmt: skip
            wanted = cell["bayesprune"]["seeds"]
            same = [p for p in cell["curve"] if not p["collapsed"] and p["seeds"] == wanted]
            points = sorted((p["kept"], p["gap"], p["lambda"]) for p in same)
            cell["l0_at_size"] = None
            for (x0, y0, l0a), (x1, y1, l0b) in zip(points, points[1:], strict=False):
                if x0 <= kept <= x1 and x1 > x0:
                    cell["l0_at_size"] = _read_at(kept, (x0, y0), (x1, y1))
                    cell["bracket"] = [l0a, l0b]
                    cell["paired"] = paired_difference(l0, mine, case, (l0a, l0b), kept)
                    break
        out.append(cell)
    return out


def paired_difference(l0: list[dict], bp: list[dict], case: str, bracket: tuple, kept: float):
    """bayesprune − L0 seed by seed: each seed's L0 gap read at ``kept`` (bayesprune's mean
    weights kept, %) between that seed's runs at the two bracketing λ, linearly in log size,
    subtracted from that seed's bayesprune gap; the mean and its standard error over seeds."""
    diffs = []
    runs = {(r["case"], r["lambda"], r["seed"]): r for r in l0}
    for run in bp:
        pair = [runs.get((case, lam, run["seed"])) for lam in bracket]
        if None in pair:
            continue
        low, high = sorted(
            (100 * r["weights_kept_fraction"], 100 * (r["test_error"] - r["dense_error"]))
            for r in pair
        )
        diffs.append(100 * (run["test_error"] - run["dense_error"]) - _read_at(kept, low, high))
    if len(diffs) < 2:
        return None
    mean = _mean(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    return {"mean": mean, "se": se, "seeds": len(diffs)}


def plot(cells: list[dict], results: list[dict], seeds: list[int], gate_lr: float, path: Path,
         chosen: float | None = None) -> None:  # fmt: skip
    """One panel per cell: L0's gap to dense against the weights kept, a point per run and a
    line through the means per λ (of ``seeds``), beside bayesprune's runs and their mean (the
    same seeds). Collapsed L0 runs are marked at the panel's left edge; means above
    ``GAP_CEILING`` are drawn at the top edge."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    l0, bp = merged(results, seeds, gate_lr)
    cols = min(4, len(cells))
    rows_ = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.0 * rows_), squeeze=False)
    for ax, cell in zip(axes.flat, cells, strict=False):
        case = cell["case"]
        runs = [r for r in l0 if r["case"] == case and r["status"] == "finished"]
        ax.scatter([100 * r["weights_kept_fraction"] for r in runs],
                   [min(100 * (r["test_error"] - r["dense_error"]), GAP_CEILING) for r in runs],
                   s=10, color="tab:orange", alpha=0.5)  # fmt: skip
        curve = [p for p in cell["curve"] if not p["collapsed"]]
        ax.plot([p["kept"] for p in curve], [min(p["gap"], GAP_CEILING) for p in curve], "-o",
                color="tab:orange", ms=3, label="L0, λ swept (mean per λ)")  # fmt: skip
        for p in curve:
            if p["lambda"] == chosen:
                ax.plot([p["kept"]], [min(p["gap"], GAP_CEILING)], "s", color="tab:red", ms=7,
                        mfc="none", label=f"L0, λ = {chosen:g} (chosen at 60k)")  # fmt: skip
        mine = [r for r in bp if r["case"] == case]
        xs = [100 * r["weights_kept_fraction"] for r in runs + mine]
        if mine:
            ys = [100 * (r["test_error"] - r["dense_error"]) for r in mine]
            ax.scatter(xs[len(runs) :], ys, s=12, color="tab:blue", alpha=0.6)
            ax.plot([cell["bayesprune"]["kept"]], [cell["bayesprune"]["gap"]], "*",
                    color="tab:blue", ms=12, label="bayesprune (no knob)")  # fmt: skip
        collapsed = [p for p in cell["curve"] if p["collapsed"]]
        for p in collapsed:
            ax.annotate(f"λ {p['lambda']:g}: {p['collapsed']} collapsed", (0.02, 0.04),
                        xycoords="axes fraction", fontsize=7, color="tab:red")  # fmt: skip
        ax.axhline(0, color="k", lw=0.8, ls="--")
        drawn = [float(y) for c in ax.collections for y in c.get_offsets()[:, 1]]
        drawn += [float(y) for line in ax.lines for y in line.get_ydata()]
        lowest = min([0.0, *drawn])
        ax.set_ylim(lowest - 0.3, GAP_CEILING + 0.3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ticks = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100)
        ax.set_xticks([t for t in ticks if min(xs) / 1.3 <= t <= max(xs) * 1.3])
        counts = sorted({len(p["seeds"]) for p in cell["curve"]})
        seeds_label = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        ax.set_title(f"{case} ({seeds_label} seeds per L0 point)", fontsize=9)
        ax.set_xlabel("weights kept (%)", fontsize=8)
        ax.set_ylabel(f"gap to dense (points; ≥ {GAP_CEILING:g} at the top)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:  # the chosen λ's marker may be on another panel only
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_cells_option(parser, ["mlp-n60k"])
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0, 1])
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.1])
    parser.add_argument("--gate-lrs", nargs="+", type=float, default=[1e-3])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time, 1 thread each"
    )
    parser.add_argument(
        "--bayesprune-from",
        nargs="*",
        type=existing_file,
        default=[],
        help="matrix results files with bayesprune's runs of these cells",
    )
    parser.add_argument("--name", default="l0_baseline")
    parser.add_argument(
        "--summarise",
        nargs="+",
        type=existing_file,
        metavar="FILE",
        help="from these results files (their runs of --seeds): L0's curve per cell and its gap "
        "at bayesprune's size (results/<--name>.json) and benchmarks/l0_curves.png; no run",
    )
    parser.add_argument("--chosen", type=float, help="with --summarise: the λ to mark")
    parser.add_argument(
        "--summary-gate-lr",
        type=float,
        default=1e-2,
        help="with --summarise: the gates' learning rate of the runs read",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        import json

        from common import figure_dir

        results = [json.loads(p.read_text()) for p in args.summarise]
        cells = summarise(results, args.seeds, args.summary_gate_lr)
        path = figure_dir() / "l0_curves.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot(cells, results, args.seeds, args.summary_gate_lr, path, args.chosen)
        write(args.name, {
            "l0_summary": cells, "from": [p.name for p in args.summarise], "seeds": args.seeds,
            "gate_lr": args.summary_gate_lr, "chosen": args.chosen, "commit": commit(),
            "figure": path.name,
        })  # fmt: skip
        print(f"wrote {path}")
        return
    jobs = [(case, seed) for case in args.cells for seed in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, c, s, args.lambdas, args.gate_lrs) for c, s in jobs]
        rows = [row for f in futures for row in f.result()]
    write(args.name, {
        "l0_baseline": True,
        "commit": commit(),
        "cpu": cpu_model(),
        "threads": 1,
        "cells": args.cells,
        "seeds": args.seeds,
        "lambdas": args.lambdas,
        "gate_lrs": args.gate_lrs,
        "rows": rows,
        "bayesprune": with_dense(
            bayesprune_runs(args.bayesprune_from, args.cells, args.seeds), rows
        ),
        "bayesprune_from": [p.name for p in args.bayesprune_from],
    })  # fmt: skip


if __name__ == "__main__":
    main()
