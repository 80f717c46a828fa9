"""Random command lines: does any combination of training options end in a traceback?

Draws ``--count`` command lines for ``bayesprune train`` from a seeded generator (architecture,
widths, data and its size, epochs, batch size, learning rate and zero to four further options
such as the estimator, the posterior, the θ optimiser, the weights' optimiser (SGD), held-out
evidence, the merge settings, the clocks, the prior, the initialisation, ``--width-mult``),
runs each in its own process with one thread, and sorts the outcomes by the README's exit
codes:

- 0: a finished run (its notes, if any, are kept);
- 2: input refused, one line;
- 3: a run that collapsed or never learnt, reported in one line;
- anything else, a traceback on stderr, or a run past ``--timeout``: a **defect**.

With ``--twins``, every run that ended 3 is read against its dense twin (``bayesprune baseline``:
the same network before any gate, trained with the run's recipe): a collapse where the twin
learns is the gates' failure, one where it does not is the recipe's (``"twin"`` in the JSON, a
column of the table). The same ``--seed`` draws the same command lines. Writes
``results/<name>.json`` (every command line, its exit code, its last line on stderr and the
verdict) and its table in benchmarks/README.md.

Usage: ``.venv/bin/python benchmarks/cli_fuzz.py --seed 15 --count 40`` (about 10 minutes on
2 cores with ``--jobs 2``).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

BAYESPRUNE = Path(sys.executable).with_name("bayesprune")
EXPECTED = {0: "finished", 2: "refused", 3: "collapsed"}


def command(rng: random.Random, out: Path) -> list[str]:
    """One random ``bayesprune train`` command line (small data, so that it runs in seconds)."""
    arch = rng.choice(["mlp", "mlp", "lenet5"])
    data = "fashion-mnist" if arch == "lenet5" else rng.choice(["teacher", "fashion-mnist"])
    args = ["train", "--arch", arch, "--dataset", data, "--threads", "1", "--no-progress",
            "--no-report", "--seed", str(rng.randrange(0, 2**32))]  # fmt: skip
    if arch == "mlp":
        layers = rng.choice([1, 2, 3])
        widths = [str(rng.choice([3, 8, 16, 40, 64, 128, 256])) for _ in range(layers)]
    else:
        widths = [str(rng.choice(c)) for c in ([4, 6, 10, 20], [8, 16, 30, 50], [20, 64, 120, 300])]
    args += ["--widths", ",".join(widths)]
    subset = rng.choice([150, 400, 1000, 2500] if data == "fashion-mnist" else [None, 300, 2000])
    if subset:
        args += ["--train-subset", str(subset)]
    args += ["--epochs", str(rng.choice([1, 2, 3, 6]))]
    args += ["--batch-size", str(rng.choice([7, 16, 50, 100, 333, 1000]))]
    args += ["--lr", str(rng.choice([1e-4, 5e-4, 1e-3, 3e-3, 1e-2, 3e-2]))]
    options = [
        ["--theta-confidence", rng.choice(["0", "1", "3"])], ["--merge-groups", "on"],
        ["--merge", "off"], ["--release", "together"],
        ["--estimator", rng.choice(["first-order", "exact", "score"])],
        ["--posterior", rng.choice(["structured", "mean-field"])], ["--weights", "gaussian"],
        ["--price-scale", rng.choice(["0.1", "3", "20"])],
        ["--init", rng.choice(["xavier", "normal"])], ["--lr-schedule", "cosine"],
        ["--theta-transit", rng.choice(["0.2", "1"])],
        ["--theta-window", rng.choice(["500", "50000"])], ["--window-cap", "none"],
        ["--theta-optimizer", "adam"], ["--warmup-tolerance", rng.choice(["0.02", "0.5"])],
        ["--init-theta", rng.choice(["0.5", "0.9"])], ["--patience", rng.choice(["1", "500"])],
        ["--check-every", rng.choice(["1", "7", "1000"])], ["--elbo", "traced"],
        ["--width-mult", rng.choice(["0.5", "1.5"])],
        # options added after the first recorded runs (seed 15 at 1860887 drew from the above)
        ["--optimizer", "sgd", "--momentum", rng.choice(["0", "0.5", "0.9"])],
        ["--optimizer", "sgd"], ["--evidence", "held-out"],
        ["--evidence", "held-out", "--evidence-share", rng.choice(["0.05", "0.5"])],
        ["--merge-tests", "fixed"], ["--merge-price", "current"], ["--merge-budget", "none"],
        ["--merge-schedule", "settled"], ["--producer-price", "current"],
        ["--temperature", rng.choice(["1", "0.001"])], ["--rho", rng.choice(["0.01", "0.5"])],
        ["--strength", rng.choice(["0.1", "10"])], ["--prior-every", rng.choice(["1", "1000"])],
        ["--lr-theta", rng.choice(["0.1", "100"])], ["--trace-every", "3"],
        # since group moves became the default (auto, Eq. (14x); thirty-eighth session)
        ["--merge-groups", "off"], ["--group-cap", "half"],
        # since the final settle became the default (fortieth session) and the warm-up's
        # epoch option (forty-second)
        ["--settle", rng.choice(["off", "on"])], ["--warmup-epoch", "on"],
        ["--memory-format", "contiguous"],
    ]  # fmt: skip
    for option in rng.sample(options, rng.choice([0, 1, 2, 3, 4])):
        if option[0] not in args:  # two draws of one flag (--optimizer, --evidence): the first
            args += option
    return [*args, "--out", str(out)]


def after(rng: random.Random, run_dir: Path) -> list[list[str]]:
    """The commands a user runs on a run directory once training ended: an export to one of
    the four formats, an inspection (a few draws), a benchmark of small batches and the dense
    twin (``baseline``, added after seed 18's batch; it draws nothing, so the same seed draws
    the same commands as before)."""
    fmt = rng.choice(["pt2", "torchscript", "onnx", "safetensors"])
    return [
        ["export", str(run_dir), "--format", fmt],
        ["inspect", str(run_dir), "--draws", "20"],
        ["bench", str(run_dir), "--batch", rng.choice(["1", "1,64", "7"])],
        ["baseline", str(run_dir), "--no-progress"],
    ]


def last_line(stderr: str) -> str:
    """A command's last line on stderr (its one-line answer), or ""."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def verdict(returncode, stderr: str) -> str:
    """What an outcome says about the program: an expected exit, or a defect."""
    if returncode == "timeout" or "Traceback (most recent call last)" in stderr:
        return "defect"
    return EXPECTED.get(returncode, "defect")


def twin(stderr: str, returncode) -> dict:
    """What ``bayesprune baseline`` said of a collapsed run: whether its dense twin learns
    (``None`` where the command did not say: it failed, or the run had not ended)."""
    learns = True if "dense twin learns" in stderr else False if "collapses too" in stderr else None
    said = ("dense twin learns", "collapses too")
    line = next((x for x in stderr.splitlines() if any(w in x for w in said)), last_line(stderr))
    return {"returncode": returncode, "learns": learns, "line": line}


def run(
    args: list[str], timeout: float, then: list[list[str]] | None = None, twins: bool = False
) -> dict:
    """Run one command line; with ``then``, run those commands after it on its directory (if
    training ended 0 or 3), each recorded with its own exit and verdict under ``"after"``; with
    ``twins``, a run that ended 3 is read against its dense twin (``"twin"``). The run
    directory (temporary) is written ``RUN`` in the recorded command lines."""
    try:
        done = subprocess.run([str(BAYESPRUNE), *args], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        returncode, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        returncode, stderr = "timeout", ""
    if "--out" in args:  # a training command line: its directory is left out
        shown, folder = args[: args.index("--out")], args[args.index("--out") + 1]
    else:  # a command on a run directory, the second argument
        shown, folder = [args[0], "RUN", *args[2:]], args[1]
    result = {
        "command": "bayesprune " + " ".join(shown),
        "returncode": returncode,
        "last_line": last_line(stderr).replace(folder, "RUN"),  # (a collapse's line names it)
        "verdict": verdict(returncode, stderr),
    }
    if twins and returncode == 3:
        try:
            done = subprocess.run([str(BAYESPRUNE), "baseline", folder, "--no-progress"],
                                  capture_output=True, text=True, timeout=timeout)  # fmt: skip
            result["twin"] = twin(done.stderr.replace(folder, "RUN"), done.returncode)
        except subprocess.TimeoutExpired:
            result["twin"] = twin("", "timeout")
    if then and returncode in (0, 3):
        result["after"] = [run(c, timeout) for c in then]
    return result


def fuzz_parser(doc: str, seed: int, count: int, name: str) -> argparse.ArgumentParser:
    """The options a fuzzing script shares (this one's and ``resume_fuzz.py``'s)."""
    parser = argparse.ArgumentParser(description=description(doc))
    parser.add_argument("--seed", type=seed_type, default=seed)
    parser.add_argument("--count", type=int, default=count)
    parser.add_argument("--jobs", type=positive(int), default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--name", default=name)
    parser.add_argument("--results-dir", type=Path, help="write the JSON there instead")
    return parser


def main(argv=None) -> dict:
    parser = fuzz_parser(__doc__, 15, 40, "cli_fuzz")
    parser.add_argument(
        "--after", action="store_true",
        help="also export, inspect, bench and baseline every run that ended 0 or 3 (drawn after "
        "all the training command lines, from the same seed)",
    )  # fmt: skip
    parser.add_argument(
        "--twins", action="store_true",
        help="train the dense twin of every run that ended 3 (bayesprune baseline): did the "
        "gates fail, or the recipe?",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"run{i}" for i in range(args.count)]
        commands = [command(rng, d) for d in dirs]
        thens = [after(rng, d) if args.after else None for d in dirs]
        jobs = [(c, args.timeout, t, args.twins) for c, t in zip(commands, thens, strict=True)]
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda job: run(*job), jobs))
    every = [x for r in runs for x in (r, *r.get("after", []))]
    for r in every:
        print(f"{r['verdict']:9s} {r['returncode']!s:7s} {r['command'][:150]}", flush=True)
    counts = {v: sum(r["verdict"] == v for r in every) for v in (*EXPECTED.values(), "defect")}
    if args.twins:
        read = [r["twin"]["learns"] for r in runs if "twin" in r]
        counts["collapsed, twin learns"] = sum(x is True for x in read)
        counts["collapsed, twin collapses too"] = sum(x is False for x in read)
    result = {"cli_fuzz": runs, "seed": args.seed, "counts": counts, "commit": commit(),
              "cpu": cpu_model(), "after": args.after, "twins": args.twins}  # fmt: skip
    write(args.name, result, args.results_dir)
    print(counts)
    return result


if __name__ == "__main__":
    main()
