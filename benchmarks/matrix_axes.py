"""Issue 9's three axes at a glance: widths and gaps along data size, batch size, learning rate.

Reads pooled matrix summaries (``results/matrix_summary*.json``, written by
``matrix_summary.py``) and places every cell that differs from its architecture's full-data
recipe (Fashion-MNIST, 10 epochs, batch 100, Adam 1e-3, the default widths: LeNet-300-100 or
LeNet-5) in exactly one of the training-set size, the batch size or the learning rate on that
axis; the recipe's own cell (``mlp-n60k``, ``lenet5-n60k``) is a point of all three. A cell
that changes anything else (a start, the epochs, two settings at once, the data) is on no axis
and is listed as left out.

For each architecture and axis: the mean widths per layer with their range over seeds, the gap
to dense with its standard error and issue 9's target (1.0 point below 10,000 examples, 0.5
from there on; no target between 3,000 and 10,000 is stated, so 1.0 is drawn there), the
widths' coefficient of variation over the axis's points (population standard deviation over
the mean, as ``robustness_matrix.cv``) and, along N, whether the widths are non-decreasing
within 10%. Where a cell is in several summaries, the one with the most seeds counts.

Usage: ``.venv/bin/python benchmarks/matrix_axes.py`` (the shipped rule's summaries) or
``--from benchmarks/results/A.json benchmarks/results/B.json`` → ``results/<name>.json``,
``benchmarks/<name>.png`` and a table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, description, existing_file, figure_dir, write  # noqa: E402
from matrix_summary import meets  # noqa: E402
from robustness_matrix import CASES, FMNIST, cv, non_decreasing  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = (
    "matrix_summary_10s.json",
    "matrix_summary_unseen_10s.json",
    "matrix_summary_lenet5_axes_10s.json",
)
# each architecture's full-data recipe: its cell and its settings
BASES = {"mlp": ("mlp-n60k", FMNIST), "lenet5": ("lenet5-n60k", {**FMNIST, "arch": "lenet5"})}
# the key each axis varies, and the recipe's value on it
AXES = {"N": ("train_subset", 60_000), "batch": ("batch_size", 100), "lr": ("lr", 1e-3)}


def axis_of(case: str) -> tuple[str, str, float] | None:
    """(architecture, axis, value) of a cell that differs from its architecture's full-data
    recipe in one axis key only."""
    spec = CASES.get(case)
    if spec is None or spec.get("arch") not in BASES:
        return None
    base_case, base = BASES[spec["arch"]]
    if case == base_case:
        return None
    differing = {k for k in {*spec, *base} if spec.get(k) != base.get(k)}
    for axis, (key, _) in AXES.items():
        if differing == {key}:
            return spec["arch"], axis, float(spec[key])
    return None


def gap_target(axis: str, value: float) -> float:
    """Issue 9's gap target at a point (points): 1.0 below 10,000 examples, else 0.5."""
    return 1.0 if axis == "N" and value < 10_000 else 0.5


def collect(paths: list[Path]) -> tuple[dict, list[str], list[str]]:
    """The cells of the summaries (most seeds wins), the sources, and the cells on no axis."""
    cells: dict[str, dict] = {}
    sources = []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        if "matrix_summary" not in summary:
            raise SystemExit(f"{path}: not a matrix summary (no 'matrix_summary')")
        sources.append(Path(path).name)
        for case, stats in summary["matrix_summary"].items():
            if case not in cells or len(stats["seeds"]) > len(cells[case]["seeds"]):
                cells[case] = {**stats, "source": Path(path).name}
    bases = {base for base, _ in BASES.values()}
    left_out = sorted(c for c in cells if c not in bases and axis_of(c) is None)
    return cells, sources, left_out


def axes(cells: dict) -> dict:
    """Per architecture, every axis's points in increasing order, their widths' CV and (N)
    monotonicity; an architecture with no cell on any axis is left out."""
    placed = {c: axis_of(c) for c in cells}
    return {
        arch: _arch_axes(cells, placed, arch, base_case)
        for arch, (base_case, _) in BASES.items()
        if any(p and p[0] == arch for p in placed.values())
    }


def _arch_axes(cells: dict, placed: dict, arch: str, base_case: str) -> dict:
    out = {}
    for axis, (_, base_value) in AXES.items():
        points = [(p[2], c) for c, p in placed.items() if p and p[:2] == (arch, axis)]
        if base_case in cells:
            points.append((float(base_value), base_case))
        points.sort()
        rows = []
        for value, case in points:
            stats, target = cells[case], gap_target(axis, value)
            rows.append({
                "case": case,
                "value": value,
                "seeds": len(stats["seeds"]),
                "widths_mean": stats["widths_mean"],
                "widths_min": stats["widths_min"],
                "widths_max": stats["widths_max"],
                "gap_mean": stats.get("gap_mean"),  # (none where a cell has no dense run)
                "gap_se": stats.get("gap_se"),
                "gap_target": target,
                "gap_met": None if stats.get("gap_mean") is None
                else meets(stats["gap_mean"], target),
                "source": stats["source"],
            })  # fmt: skip
        entry: dict = {"points": rows}
        if len(rows) >= 2:
            layers = len(rows[0]["widths_mean"])
            entry["width_cv"] = [cv([r["widths_mean"][i] for r in rows]) for i in range(layers)]
        if axis == "N" and len(rows) >= 2:
            entry["non_decreasing"] = non_decreasing([r["widths_mean"] for r in rows])
        out[axis] = entry
    return out


def tick(axis: str, value: float) -> str:
    """A point's label: 3k examples, batch 32, lr 3e-4."""
    if axis == "N":
        return f"{value / 1000:g}k"
    return f"{value:g}" if axis == "batch" else f"{value:.0e}".replace("e-0", "e-")


LAYER_NAMES = {"mlp": ("fc1", "fc2"), "lenet5": ("conv1", "conv2", "fc1")}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"N": "training examples", "batch": "batch size", "lr": "Adam learning rate"}
    names = {"mlp": "LeNet-300-100", "lenet5": "LeNet-5"}
    archs = result["matrix_axes"]
    fig, grid = plt.subplots(2 * len(archs), 3, figsize=(14, 7.5 * len(archs)), squeeze=False)
    panels = [
        (2 * row, col, arch, axis, entry)
        for row, (arch, arch_axes) in enumerate(archs.items())
        for col, (axis, entry) in enumerate(arch_axes.items())
    ]
    for row, col, arch, axis, entry in panels:
        rows = entry["points"]
        if not rows:
            continue
        xs = [r["value"] for r in rows]
        top, bottom = grid[row][col], grid[row + 1][col]
        for i in range(len(rows[0]["widths_mean"])):
            mean = [r["widths_mean"][i] for r in rows]
            low = [m - r["widths_min"][i] for m, r in zip(mean, rows, strict=True)]
            high = [r["widths_max"][i] - m for m, r in zip(mean, rows, strict=True)]
            layers = LAYER_NAMES.get(arch, ())
            label = layers[i] if i < len(layers) else f"layer {i + 1}"
            top.errorbar(xs, mean, yerr=[low, high], marker="o", capsize=3, label=label)
        cvs = ", ".join(f"{100 * v:.1f}%" for v in entry.get("width_cv", []))
        what = (f"non-decreasing: {'yes' if entry.get('non_decreasing') else 'no'}"
                if axis == "N" else f"CV {cvs}")  # fmt: skip
        short = {"N": "N", "batch": "batch", "lr": "lr"}[axis]
        top.set_title(f"{names[arch]}, widths along {short} ({what})", fontsize=10)
        top.set_ylabel("units kept (seed mean, range)")
        gaps = [(r["value"], r["gap_mean"], r["gap_se"] or 0.0)
                for r in rows if r["gap_mean"] is not None]  # fmt: skip
        if gaps:
            bottom.errorbar(
                [g[0] for g in gaps], [g[1] for g in gaps], yerr=[g[2] for g in gaps],
                marker="o", capsize=3, color="black", label="gap (± se)",
            )  # fmt: skip
        bottom.step(xs, [r["gap_target"] for r in rows], where="post", color="red",
                    linestyle="--", label="issue 9's target")  # fmt: skip
        bottom.axhline(0.0, color="grey", linewidth=0.5)
        for r in rows:  # (beside the marker and its error bar, not under them)
            bottom.annotate(f"{r['seeds']} seeds", (r["value"], r["gap_mean"] or 0.0),
                            fontsize=7, textcoords="offset points", xytext=(7, -10))  # fmt: skip
        bottom.set_ylabel("test error − dense (points; seeds beside)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(xs, [tick(axis, x) for x in xs])
            ax.set_xlabel(labels[axis])
            ax.legend(fontsize=8)
    fig.suptitle(
        "Fashion-MNIST, shipped rule: one setting changed at a time from 60,000 examples, "
        "batch 100, lr 1e-3, 10 epochs",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--from", dest="sources", nargs="+", type=existing_file,
                        default=[RESULTS / s for s in DEFAULT_SOURCES])  # fmt: skip
    parser.add_argument("--name", default="matrix_axes")
    parser.add_argument("--results-dir", type=Path, help="write the JSON and figure there")
    args = parser.parse_args(argv)
    cells, sources, left_out = collect(args.sources)
    result = {"matrix_axes": axes(cells), "sources": sources, "left_out": left_out}
    folder = figure_dir(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    figure = folder / f"{args.name}.png"
    plot(result, figure)
    result["figure"] = figure.name
    write(args.name, result, args.results_dir)
    for arch, arch_axes in result["matrix_axes"].items():
        for axis, entry in arch_axes.items():
            cvs = ", ".join(f"{100 * v:.1f}%" for v in entry.get("width_cv", []))
            print(f"{arch} {axis}: {len(entry['points'])} points, width CV {cvs}", flush=True)
    return result


if __name__ == "__main__":
    main()
