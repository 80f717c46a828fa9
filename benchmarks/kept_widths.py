"""Where a gap to dense comes from: dense networks of the widths bayesprune kept, trained alike.

Usage: ``.venv/bin/python benchmarks/kept_widths.py --from results/robustness_matrix.json
[--cells mlp-b256 mlp-n60k] [--seeds 0 1] [--jobs 2] [--name kept_widths]``. For every
LeNet-300-100-style cell of a robustness-matrix result (``benchmarks/robustness_matrix.py``) it
trains, with the cell's recipe (data subset, epochs, batch size, learning rate, seed; the epochs
the bayesprune run recorded, so a ``--set epochs=20`` matrix is matched), a dense network of the
widths bayesprune ended with, and the full dense network where the result has none. The error
gap of bayesprune to dense then splits into

- the *width* part: dense at the kept widths minus dense at the starting widths (what a network
  that narrow costs with this recipe, trained from scratch), and
- the *pruning* part: bayesprune minus dense at the kept widths (what deciding the widths while
  training cost or gained, including the prior's pull on the weights).

Writes ``results/<name>.json`` and its table in ``README.md``. One process per run, one thread.
"""

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, write  # noqa: E402
from robustness_matrix import CASES, cell_data, dense_summary  # noqa: E402


def dense_error(case: str, seed: int, epochs: int, widths: tuple[int, ...] | None) -> float:
    """Test error of the dense network of ``widths`` (None: the cell's own) with the recipe."""
    import torch

    torch.set_num_threads(1)
    spec, data = CASES[case], cell_data(case)
    summary = dense_summary(case, seed, data, epochs, spec["batch_size"], spec["lr"], widths)
    return summary["test_error"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="a robustness-matrix JSON")
    parser.add_argument("--cells", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (1 thread each)")
    parser.add_argument("--name", default="kept_widths")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    label = commit()  # before the runs: a commit made while they run must not label them
    source = json.loads(Path(args.source).read_text())
    cells = [
        c
        for c in source["cells"]
        if CASES[c["case"]]["arch"] == "mlp"
        and (args.cells is None or c["case"] in args.cells)
        and (args.seeds is None or c["seed"] in args.seeds)
    ]
    if not cells:
        parser.error("no MLP cell of that file matches --cells / --seeds")
    jobs = []
    for c in cells:
        epochs = c["bayesprune"]["epochs"]
        jobs.append((c["case"], c["seed"], epochs, tuple(c["bayesprune"]["widths"])))
        if "dense" not in c or c["dense"]["epochs"] != epochs:
            jobs.append((c["case"], c["seed"], epochs, None))
    if args.jobs == 1:  # in this process (also what a test can call)
        values = list(map(dense_error, *zip(*jobs, strict=True)))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            values = list(pool.map(dense_error, *zip(*jobs, strict=True)))
    errors = dict(zip(jobs, values, strict=True))
    out = []
    for c in cells:
        epochs, widths = c["bayesprune"]["epochs"], tuple(c["bayesprune"]["widths"])
        full = errors.get((c["case"], c["seed"], epochs, None))
        if full is None:
            full = c["dense"]["test_error"]
        row = {
            "case": c["case"],
            "seed": c["seed"],
            "epochs": epochs,
            "widths": list(widths),
            "bayesprune": c["bayesprune"]["test_error"],
            "dense": full,
            "dense_kept": errors[(c["case"], c["seed"], epochs, widths)],
        }
        out.append(row)
        print(row, flush=True)
    result = {
        "commit": label,
        "cpu": cpu_model(),
        "threads": 1,
        "from": args.source,
        "from_commit": source.get("commit"),
        "kept_widths": out,
    }
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
