"""Pool runs of issue 9's robustness matrix over seeds and check its targets on the pool.

The matrix records two seeds per cell (``results/robustness_matrix*.json``); more seeds of the
same cells come in further files (``--seeds 2 3 4 5 6 7 --name ..._seeds_2_7``). This script
reads any number of such files, takes each (cell, seed) once, and writes per cell the gap to
dense as a mean with its standard error (sample standard deviation of the per-seed gaps over
√n), the widths, the weights kept and the runs that did not finish, and the matrix's own checks
(:func:`robustness_matrix.checks`: width CV across batch sizes and learning rates, widths
non-decreasing in N) evaluated on the pooled means, with each cell's gap target from the issue
(1.0 point at 3,000 examples, 0.5 at 10,000 and more).

Pooling refuses files whose runs differ in what they ran: a (cell, seed) present twice with
different results, or runs of one cell with different ``--set`` overrides. Runs made with
``--no-dense`` take their dense run from ``--dense-from`` files (the dense network does not
depend on the rule; the first file with that cell and seed whose overrides agree on the dense
recipe, :func:`robustness_matrix.dense_recipe`, wins, a run's own dense run before any); a
run with none counts for the widths, not for the gap.

Usage: ``.venv/bin/python benchmarks/matrix_summary.py --from
benchmarks/results/robustness_matrix_10s.json
benchmarks/results/robustness_matrix_mlp_seeds_2_7_10s.json --dense-from
benchmarks/results/robustness_matrix_mlp_seeds_2_7_14w.json --name matrix_summary_10s``
→ ``results/<name>.json`` and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    description,
    effective_overrides,
    render_matrix_summary,
    settle_ran,
    write,
)
from robustness_matrix import CASES, checks, dense_recipe  # noqa: E402

ISSUE_CELLS = ("mlp-", "lenet5-")  # the matrix's cells with a gap target (not the teacher's)


def gap_target(case: str) -> float | None:
    """The issue's gap target for a matrix cell (points): 1.0 at 3,000 examples, else 0.5."""
    if not case.startswith(ISSUE_CELLS) or case not in CASES:
        return None
    return 1.0 if CASES[case].get("train_subset") == 3_000 else 0.5


def read_cells(path: Path) -> dict:
    result = json.loads(Path(path).read_text())
    if "cells" not in result:
        raise SystemExit(f"{path}: not a robustness matrix result (no 'cells')")
    return result


def pool(paths: list[Path], dense_paths: list[Path] = ()) -> tuple[list[dict], list[dict]]:
    """The cells of all files, each (case, seed) once, and where they came from."""
    cells: dict[tuple[str, int], dict] = {}
    overrides: dict[str, dict] = {}
    sources = []
    for path in paths:
        result = read_cells(path)
        sources.append({"file": str(path), "commit": result.get("commit")})
        for cell in result["cells"]:
            key = (cell["case"], cell["seed"])
            ran = effective_overrides(cell.get("overrides"), result)  # groups off before
            ran["settle"] = settle_ran(cell["bayesprune"], cell.get("overrides"))
            if overrides.setdefault(cell["case"], ran) != ran:
                raise SystemExit(
                    f"{path}: {cell['case']} ran with overrides {ran}, elsewhere with "
                    f"{overrides[cell['case']]}: not the same cell"
                )
            if key in cells:
                seen = cells[key]["bayesprune"]
                now = cell["bayesprune"]
                if (seen["test_error"], seen["widths"]) != (now["test_error"], now["widths"]):
                    raise SystemExit(
                        f"{path}: {key[0]} seed {key[1]} appears twice with different results "
                        f"({seen['widths']} at {seen['test_error']} against {now['widths']} at "
                        f"{now['test_error']}): pool runs of one rule only"
                    )
                had, has = cells[key].get("dense"), cell.get("dense")
                if had and has and had["test_error"] != has["test_error"]:
                    raise SystemExit(
                        f"{path}: {key[0]} seed {key[1]} has a dense run at {has['test_error']} "
                        f"where an earlier file has one at {had['test_error']}: which of the two "
                        "the gap is against would depend on the order of --from"
                    )
                if had is None and has:
                    cells[key] = {**cells[key], "dense": has}
                continue
            cells[key] = {k: v for k, v in cell.items() if k != "dense" or v}
    for path in dense_paths:
        result = read_cells(path)
        used = False
        for cell in result["cells"]:
            key = (cell["case"], cell["seed"])
            if cell.get("dense") and key in cells and "dense" not in cells[key]:
                if dense_recipe(cell.get("overrides")) == dense_recipe(overrides[cell["case"]]):
                    cells[key] = {**cells[key], "dense": cell["dense"]}
                    used = True
        if used:
            sources.append({"file": str(path), "commit": result.get("commit"), "dense_only": True})
    return list(cells.values()), sources


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation over √n; None for one value)."""
    if len(values) < 2:
        return values[0], None
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


def meets(gap: float, target: float) -> bool:
    """Whether a gap (points) meets its target (≤): a gap of exactly the target, the difference
    of two test errors in floating point, can come out a few 1e-16 above it (50 of 10,000 test
    examples: 0.5000000000000004 for most error levels), so a billionth of a point is allowed."""
    return gap <= target + 1e-9


def summarise(cells: list[dict]) -> dict:
    """Per cell: seeds, gap mean ± standard error and its target, widths, weights kept."""
    out = {}
    for case in dict.fromkeys(c["case"] for c in sorted(cells, key=lambda c: c["seed"])):
        runs = sorted((c for c in cells if c["case"] == case), key=lambda c: c["seed"])
        widths = [r["bayesprune"]["widths"] for r in runs]
        layers = range(min(len(w) for w in widths))
        row = {
            "seeds": [r["seed"] for r in runs],
            "widths_mean": [sum(w[i] for w in widths) / len(widths) for i in layers],
            "widths_min": [min(w[i] for w in widths) for i in layers],
            "widths_max": [max(w[i] for w in widths) for i in layers],
            "weights_kept_range": [
                min(r["bayesprune"]["weights_kept_fraction"] for r in runs),
                max(r["bayesprune"]["weights_kept_fraction"] for r in runs),
            ],
            "not_finished": [r["seed"] for r in runs if r["bayesprune"]["status"] != "finished"],
        }
        paired = [r for r in runs if "dense" in r]
        if paired:
            gaps = [100 * (r["bayesprune"]["test_error"] - r["dense"]["test_error"])
                    for r in paired]  # fmt: skip
            mean, se = mean_se(gaps)
            target = gap_target(case)
            row.update({
                "gap_seeds": [r["seed"] for r in paired],
                "gaps": gaps,
                "gap_mean": mean,
                "gap_se": se,
                "gap_target": target,
                "gap_met": None if target is None else meets(mean, target),
            })  # fmt: skip
        out[case] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--from", dest="sources", nargs="+", type=Path, required=True,
                        help="robustness matrix result files to pool")  # fmt: skip
    parser.add_argument("--dense-from", nargs="*", type=Path, default=[],
                        help="matrix files whose dense runs complete runs made without one")
    parser.add_argument("--name", default="matrix_summary")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write the JSON there instead (no README table)")  # fmt: skip
    args = parser.parse_args(argv)
    missing = [str(p) for p in [*args.sources, *args.dense_from] if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    cells, sources = pool(args.sources, args.dense_from)
    result = {"matrix_summary": summarise(cells), "checks": checks(cells), "sources": sources}
    print("\n".join(render_matrix_summary(args.name, result)))  # the README's table
    write(args.name, result, args.results_dir)
    return result


if __name__ == "__main__":
    main()
