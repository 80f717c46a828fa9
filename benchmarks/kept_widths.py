"""Where a gap to dense comes from: dense networks of the widths bayesprune kept, trained alike.

Usage: ``.venv/bin/python benchmarks/kept_widths.py --from benchmarks/results/robustness_matrix.json
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

With ``--refit`` it also re-runs each bayesprune run (the same seed gives the same network;
the recorded widths and error are checked) and trains its final network on, with the cell's
recipe (Adam at the cell's rate, fresh moments, the cell's batches, no gates, no prior), for one
evidence window (Eq. (10n): min(N, W) examples, at least 10 steps), and records that network's
error: what the last removals left un-re-fitted when the run ended.

Writes ``results/<name>.json`` and its table in ``README.md``. One process per run, one thread.
"""

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, existing_file, seed_type, write  # noqa: E402
from robustness_matrix import CASES, cell_data  # noqa: E402

from bayesprune.config import positive  # noqa: E402


def dense_error(
    case: str, seed: int, epochs: int, widths: tuple[int, ...] | None, overrides: str = "{}"
) -> float:
    """Test error of the dense network of ``widths`` (None: the cell's own) with the recipe of
    the matrix run, its ``--set`` overrides included (they were read from the cell alone: a run
    at ``--set lr=3e-4`` got a dense network at the kept widths trained at 1e-3)."""
    import torch
    from robustness_matrix import cell_config, dense_of_config

    torch.set_num_threads(1)
    # (the overrides as JSON: they are part of a job's key)
    config = replace(cell_config(case, seed, json.loads(overrides)), epochs=epochs)
    return dense_of_config(case, seed, cell_data(case), config, widths)["test_error"]


def refit_error(case: str, seed: int, recorded: dict, overrides: dict) -> float:
    """The cell's bayesprune run again, then its final network trained on for one evidence
    window with the plain recipe (see the module's docstring); its test error."""
    import math

    import torch
    import torch.nn.functional as F
    from robustness_matrix import cell_config, cell_network, training_data

    from bayesprune.config import evidence_window
    from bayesprune.inference.trainer import Trainer
    from bayesprune.loop import batches, evaluate

    torch.set_num_threads(1)
    data, config = cell_data(case), cell_config(case, seed, overrides)
    trainer = Trainer(cell_network(case, seed, data), data, config)
    summary = trainer.fit(progress=False)
    if summary["widths"] != recorded["widths"] or summary["test_error"] != recorded["test_error"]:
        raise SystemExit(f"{case} seed {seed}: the re-run gave {summary['widths']}, "
                         f"{summary['test_error']}, not the recorded run")  # fmt: skip
    net, train = trainer.net, training_data(case, seed, data, config.train_subset)
    steps = math.ceil(evidence_window(config, len(train.x_train)) / config.batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    torch.manual_seed(seed)
    net.train()
    done = 0
    while done < steps:
        for x, y, _ in batches(train, config.batch_size, "cpu"):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return evaluate(net.to_sequential().eval(), data.x_test, data.y_test)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument(
        "--from", dest="source", required=True, type=existing_file, help="a robustness-matrix JSON"
    )
    parser.add_argument("--cells", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=seed_type, default=None)
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default="kept_widths")
    parser.add_argument("--refit", action="store_true", help="also re-fit the final networks")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    label = commit()  # before the runs: a commit made while they run must not label them
    source = json.loads(Path(args.source).read_text())
    if not isinstance(source, dict) or not isinstance(source.get("cells"), list):
        parser.error(f"--from {args.source} is not a robustness-matrix JSON (no 'cells')")
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

    def recipe(c) -> str:  # the run's --set overrides, which the dense runs follow too
        return json.dumps(c.get("overrides") or {}, sort_keys=True)

    for c in cells:
        epochs = c["bayesprune"]["epochs"]
        jobs.append((c["case"], c["seed"], epochs, tuple(c["bayesprune"]["widths"]), recipe(c)))
        if not c.get("dense") or c["dense"]["epochs"] != epochs:
            jobs.append((c["case"], c["seed"], epochs, None, recipe(c)))
    if args.jobs == 1:  # in this process (also what a test can call)
        values = list(map(dense_error, *zip(*jobs, strict=True)))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            values = list(pool.map(dense_error, *zip(*jobs, strict=True)))
    errors = dict(zip(jobs, values, strict=True))
    refits = {}
    if args.refit:
        runs = [(c["case"], c["seed"], c["bayesprune"], c.get("overrides", {})) for c in cells]
        if args.jobs == 1:
            values = list(map(refit_error, *zip(*runs, strict=True)))
        else:
            with ProcessPoolExecutor(args.jobs) as pool:
                values = list(pool.map(refit_error, *zip(*runs, strict=True)))
        refits = {run[:2]: v for run, v in zip(runs, values, strict=True)}
    out = []
    for c in cells:
        epochs, widths = c["bayesprune"]["epochs"], tuple(c["bayesprune"]["widths"])
        full = errors.get((c["case"], c["seed"], epochs, None, recipe(c)))
        if full is None:
            full = c["dense"]["test_error"]
        row = {
            "case": c["case"],
            "seed": c["seed"],
            "epochs": epochs,
            "widths": list(widths),
            "bayesprune": c["bayesprune"]["test_error"],
            "dense": full,
            "dense_kept": errors[(c["case"], c["seed"], epochs, widths, recipe(c))],
            **({"refit": refits[(c["case"], c["seed"])]} if refits else {}),
        }
        out.append(row)
        print(row, flush=True)
    result = {
        "commit": label,
        "cpu": cpu_model(),
        "threads": 1,
        "from": str(args.source),
        "from_commit": source.get("commit"),
        "kept_widths": out,
    }
    write(args.name, result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
