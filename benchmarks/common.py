"""Shared helpers of the benchmarks: run dense and bayesprune in one process, write JSON + table."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bayesprune.baseline import train_dense
from bayesprune.config import (
    MEMORY_FORMATS,
    PREDATING,
    TrainConfig,
    evidence_window,
    seed_type,
)
from bayesprune.data import Dataset
from bayesprune.inference.trainer import Trainer
from bayesprune.loop import synchronize
from bayesprune.models.network import GatedNet

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# where every script writes instead of results/ (and leaves README.md alone): a trial run that
# must not replace the committed files (a script's own --results-dir comes first)
OUTPUT_VARIABLE = "BAYESPRUNE_RESULTS_DIR"


def output_dir(results_dir: str | Path | None = None) -> Path:
    """The folder a script writes its results (and figures) to: ``results_dir`` if given, else
    ``$BAYESPRUNE_RESULTS_DIR`` if set, else ``benchmarks/results`` (which also refreshes
    README.md)."""
    if results_dir is not None:
        return Path(results_dir)
    return Path(os.environ[OUTPUT_VARIABLE]) if os.environ.get(OUTPUT_VARIABLE) else RESULTS


def figure_dir(results_dir: str | Path | None = None) -> Path:
    """Where a script's figure goes: beside the README (``benchmarks/``), or into the output
    folder when the results go elsewhere."""
    folder = output_dir(results_dir)
    return HERE if folder.resolve() == RESULTS.resolve() else folder


def existing_file(text: str) -> Path:
    """An argparse type: a file that exists (a one-line usage error otherwise)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def description(doc: str) -> str:
    """A script's ``--help`` description: its docstring's first paragraph (its first line cut
    a wrapped sentence in two)."""
    return " ".join(doc.strip().split("\n\n")[0].split())

COLUMNS = [
    ("test error (%)", lambda r: f"{100 * r['test_error']:.2f}"),
    ("architecture", lambda r: r.get("architecture") or "-".join(map(str, r["widths"]))),
    ("weights kept", lambda r: f"{r['weights_kept']} ({100 * r['weights_kept_fraction']:.1f}%)"),
    ("FLOPs kept (%)", lambda r: f"{100 * r['flops_kept_fraction']:.1f}"),
    (
        "binary gates (%)",
        lambda r: (
            "-" if r["gates_binary_fraction"] is None else f"{100 * r['gates_binary_fraction']:.1f}"
        ),
    ),
    (
        "pruned in first 25% (%)",
        lambda r: (
            "-"
            if r.get("pruned_early_fraction") is None
            else f"{100 * r['pruned_early_fraction']:.1f}"
        ),
    ),
    ("last prune epoch", lambda r: f"{r['last_prune_epoch']:.2f}"),
    ("train wall (s)", lambda r: f"{r['train_wall_seconds']:.1f}"),
    ("step at full width (ms)", lambda r: f"{1000 * r['step_seconds_full_width']:.2f}"),
]


def plain_step(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, optimizer: str = "adam",
    momentum: float = 0.9, memory_format: str = "auto",
):  # fmt: skip
    """One plain PyTorch training step of ``net`` on ``(x, y)``: cross-entropy, Adam (or SGD with
    ``momentum``, ``optimizer="sgd"``), the same kernels as the gated run's
    (:func:`~bayesprune.inference.projected_sgd.multi_tensor`), in the layout a gated run with
    ``memory_format`` trains in (:func:`~bayesprune.models.network.use_memory_format`)."""
    import torch.nn.functional as F

    from bayesprune.baseline import plain_optimizer
    from bayesprune.models.network import use_memory_format

    use_memory_format(net, memory_format, x.device)
    opt = plain_optimizer(net.parameters(), lr, optimizer, momentum)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


@torch.no_grad()
def mean_nll(model, x: torch.Tensor, y: torch.Tensor, batch: int = 5000) -> float:
    """Mean cross-entropy of a deterministic ``model`` over ``(x, y)``, ``batch`` rows at a time
    (the data term per example; ``bayesprune.loop.evaluate`` is its twin for the error)."""
    total = 0.0
    for i in range(0, len(x), batch):
        total += F.cross_entropy(model(x[i : i + batch]), y[i : i + batch], reduction="sum").item()
    return total / len(x)


def narrowed(net, widths):
    """``net`` cut to the first ``widths`` units of its gated layers (in place)."""
    for name, width in zip(net.gated, widths, strict=True):
        net.remove_units_(name, torch.arange(width))
    return net


def interleaved_ms(
    runners: dict[str, Callable[[], object]],
    blocks: int,
    steps: int,
    warmup: int = 5,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Median milliseconds per call of each runner, blocks of ``steps`` calls interleaved (after
    ``warmup`` calls each), so that load from elsewhere on the machine hits them alike."""
    import statistics

    import pyro

    device = torch.device("cpu") if device is None else device
    times: dict[str, list[float]] = {name: [] for name in runners}
    with pyro.validation_enabled(False):
        for _ in range(blocks):
            for name, run in runners.items():
                for _ in range(warmup):
                    run()
                synchronize(device)
                start = time.perf_counter()
                for _ in range(steps):
                    run()
                synchronize(device)
                times[name].append((time.perf_counter() - start) / steps * 1000)
    return {f"{name}_ms": statistics.median(t) for name, t in times.items()}


def step_cost(
    data: Dataset,
    make_net: Callable[[], GatedNet],
    config: TrainConfig,
    blocks: int = 7,
    steps: int = 40,
) -> dict:
    """Median milliseconds per training step at full width: plain PyTorch, SVI with the ELBO's
    fast evaluation, SVI with its traced evaluation.

    The three are interleaved block by block in this process, so that load from elsewhere on the
    machine hits them alike; no unit is pruned (checks are disabled).
    """
    from dataclasses import replace

    device = torch.device(config.device)
    x = data.x_train[: config.batch_size].to(device)
    y = data.y_train[: config.batch_size].to(device)
    index = torch.arange(len(x), device=device)
    runners = {
        "dense": plain_step(
            make_net().to(device), x, y, config.lr, config.optimizer, config.momentum,
            config.memory_format,
        )
    }  # fmt: skip
    for key, elbo in (("svi", "auto"), ("svi_traced", "traced")):
        trainer = Trainer(make_net(), data, replace(config, elbo=elbo, check_every=10**9))
        runners[key] = lambda t=trainer: t.train_step(x, y, index)
    out = interleaved_ms(runners, blocks, steps, device=device)
    out["svi_ratio"] = out["svi_ms"] / out["dense_ms"]
    out["svi_traced_ratio"] = out["svi_traced_ms"] / out["dense_ms"]
    return out


def compare(
    data: Dataset,
    make_net: Callable[[], GatedNet],
    config: TrainConfig,
    threads: int = 1,
    measure_step_cost: bool = True,
    out: str | Path | None = None,
    side_by_side: bool = False,
) -> dict:
    """Dense and bayesprune runs of the same network, optimiser, epochs and batch size.

    :param make_net: builds a freshly initialised network (called after seeding torch).
    :param measure_step_cost: also time full-width steps in interleaved blocks (:func:`step_cost`).
    :param out: the bayesprune run's directory (metrics per epoch, checkpoints, a summary that
        says ``interrupted`` if the run is stopped by SIGTERM); none by default.
    :param side_by_side: run the two at once, one (forked) process each, instead of one after
        the other: the machine's speed then moves both alike (on a shared machine it drifts
        within minutes: LeNet-5 1.74× run one after the other, 1.41× side by side, docs/method.md
        §6zzh); each is slower than alone, the ratio is what it measures.
    """
    torch.set_num_threads(threads)
    # before the runs: a commit made while they run must not label them
    env = {"threads": threads, **environment(config.device)}

    def arm(which: str) -> dict:
        torch.set_num_threads(threads)  # (a forked process: set again, as the parent's)
        torch.manual_seed(config.seed)
        if which == "bayesprune":
            trainer = Trainer(make_net(), data, config, out=out)
            rounds = timed_merge_rounds(trainer)
            summary = trainer.fit(progress=not side_by_side)
            return {**summary, "merge_rounds": rounds}
        return train_dense(
            make_net(), data, config.epochs, config.batch_size, config.lr, config.seed,
            progress=not side_by_side, device=config.device, schedule=config.lr_schedule,
            optimizer=config.optimizer, momentum=config.momentum,
            memory_format=config.memory_format,
        )  # fmt: skip

    if side_by_side:
        dense, pruned = side_by_side_runs(arm, ("dense", "bayesprune"))
        env["side_by_side"] = True
    else:
        dense, pruned = arm("dense"), arm("bayesprune")
    result = {"dense": dense, "bayesprune": pruned, "config": vars(config), "environment": env}
    if measure_step_cost:
        result["step_cost"] = step_cost(data, make_net, config)
    return result


def timed_merge_rounds(trainer) -> dict[str, dict]:
    """Time ``trainer``'s merge rounds (Eq. (14), ``MergeMoves.layer``) layer by layer: the dict
    returned fills in as the run goes, per gated layer ``{"rounds", "seconds", "removed"}`` (the
    rounds' share of the training's wall time, which includes them; the final settle, which
    ``settle_seconds`` times, is not a round). Empty for a run without merge moves."""
    rounds: dict[str, dict] = {}
    if getattr(trainer, "merges", None) is None:  # (merge moves off, or a stand-in trainer)
        return rounds
    layer = trainer.merges.layer

    def timed(name, *args, **kwargs):
        start = time.perf_counter()
        moves, removed = layer(name, *args, **kwargs)
        r = rounds.setdefault(name, {"rounds": 0, "seconds": 0.0, "removed": 0})
        r["rounds"] += 1
        r["seconds"] += time.perf_counter() - start
        r["removed"] += len(removed)
        return moves, removed

    trainer.merges.layer = timed
    return rounds


def merge_round_words(rounds: dict[str, dict]) -> str:
    """"merge rounds 44.7 s (conv1 31.1 s in 55 rounds, 0 units removed; …)"."""
    total = sum(r["seconds"] for r in rounds.values())
    parts = [
        f"{name} {r['seconds']:.1f} s in {r['rounds']} rounds, {r['removed']} "
        f"unit{'s' if r['removed'] != 1 else ''} removed"
        for name, r in rounds.items()
    ]
    return f"merge rounds {total:.1f} s ({'; '.join(parts)})"


def side_by_side_runs(run: Callable[[str], dict], arms: tuple[str, ...]) -> list[dict]:
    """``run(arm)`` for every arm at once, each in a forked process (which inherits the data
    and the network's constructor); their results in the order of ``arms``. A process that
    fails raises here, with its error."""
    import multiprocessing
    import traceback

    ctx = multiprocessing.get_context("fork")

    def child(arm: str, conn) -> None:
        try:
            conn.send(("ok", run(arm)))
        except BaseException:  # noqa: BLE001 (sent to the parent, which raises it)
            conn.send(("error", traceback.format_exc()))
        finally:
            conn.close()

    pipes, procs = [], []
    for arm in arms:
        parent, kid = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=child, args=(arm, kid))
        proc.start()
        kid.close()
        pipes.append(parent)
        procs.append(proc)
    answers = []
    for pipe in pipes:
        try:
            answers.append(pipe.recv())
        except EOFError:  # killed before it could answer (out of memory, a signal)
            answers.append(("error", "the process ended without an answer"))
    for proc in procs:
        proc.join()
    results = []
    for arm, (status, value) in zip(arms, answers, strict=True):
        if status != "ok":
            raise RuntimeError(f"the {arm} run failed:\n{value}")
        results.append(value)
    return results


def fashion_mnist_main(description: str, name: str, make_net: Callable) -> None:
    """Command line of the Fashion-MNIST benchmarks: parse, run :func:`compare`, write.

    :param name: the default results name (``results/<name>.json``).
    :param make_net: ``make_net(data)`` builds a freshly initialised network for the dataset.
    """
    import argparse

    from bayesprune.data import load_dataset

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--name", default=name, help="results/<name>.json")
    parser.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    parser.add_argument("--lr-theta", type=float, default=TrainConfig.lr_theta)
    parser.add_argument("--theta-window", type=float, default=TrainConfig.theta_window)
    parser.add_argument(
        "--memory-format", default=TrainConfig.memory_format, choices=MEMORY_FORMATS,
        help="both runs' layout (TrainConfig.memory_format)",
    )  # fmt: skip
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="run dense and bayesprune at once, one process each (the machine's drift then "
        "moves both alike); default: one after the other in this process",
    )  # fmt: skip
    args = parser.parse_args()
    data = load_dataset("fashion-mnist", args.data_dir)
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        temperature=args.temperature,
        lr_theta=args.lr_theta,
        theta_window=args.theta_window,
        memory_format=args.memory_format,
    )
    write(args.name, compare(data, lambda: make_net(data), config, threads=args.threads,
                             side_by_side=args.side_by_side))


def environment(device: str = "cpu") -> dict:
    """Commit, torch version and machine of a benchmark run."""
    return {
        "commit": commit(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": cpu_model(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux): runs are bitwise reproducible on one
    machine, not across CPUs (another CPU's kernels round differently and a run's decisions
    can part), so a result names the CPU it ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The git commit the benchmark ran on (``+``: the package or a script had local changes)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "../bayesprune", "*.py")
    return head + ("+" if changed.strip() else "")


def write(name: str, result: dict, results_dir: Path | None = None) -> None:
    """Save ``results/<name>.json`` and refresh the table of ``README.md``.

    With another ``results_dir`` (smoke runs, tests), or ``$BAYESPRUNE_RESULTS_DIR`` set, only
    the JSON is written there. The file records the script that wrote it (``"script"``), so
    that its table is drawn by that script's renderer whatever name it was given.
    """
    folder = output_dir(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0].endswith(".py") else None
    if script and "script" not in result:  # the table's renderer, whatever the file's name
        result = {"script": script, **result}
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if folder.resolve() == RESULTS.resolve():
        render_readme()


SELECTIONS = {
    "variance": "of largest training-set variance",
    "evidence": "whose zeroing raises the trained dense network's training loss most",
}


def render_input_pixels(name: str, result: dict) -> list[str]:
    """``input_pixels.py``: the default rule on the highest-variance input values only."""
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/input_pixels.py`, commit {result['commit']}, CPU {result['cpu']}, 1 thread, "
        f"seeds {', '.join(map(str, result['seeds']))}: each cell's recipe on the input values "
        + SELECTIONS[result.get("select", "variance")]
        + " (a fixed cut standing in for input gates; docs/method.md §6zi). Means over seeds; "
        "the gap is to the dense network on all inputs; weights as a fraction of the full "
        "network's.",
        "",
        "| cell | inputs | dense, all (%) | dense, kept inputs (%) | bayesprune (%) | gap (± se) "
        "| widths | weights kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = result["runs"]
    for case in result["cells"]:
        full = {r["seed"]: r["dense_full"] for r in runs if r["case"] == case and r["keep"] is None}
        for keep in result["keep"]:
            rows = [r for r in runs if r["case"] == case and r["keep"] == keep]
            gaps = [100 * (r["bayesprune"]["test_error"] - full[r["seed"]]["test_error"])
                    for r in rows]  # fmt: skip
            se = statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else float("nan")
            fractions = [r["bayesprune"]["weights_kept"] / full[r["seed"]]["weights_total"]
                         for r in rows]  # fmt: skip
            widths = "; ".join("-".join(map(str, r["bayesprune"]["widths"])) for r in rows)
            mean = lambda xs: 100 * statistics.fmean(xs)  # noqa: E731
            lines.append(
                f"| {case} | {rows[0]['inputs_kept']} ({keep:g}) "
                f"| {mean([full[r['seed']]['test_error'] for r in rows]):.2f} "
                f"| {mean([r['dense_kept']['test_error'] for r in rows]):.2f} "
                f"| {mean([r['bayesprune']['test_error'] for r in rows]):.2f} "
                f"| {statistics.fmean(gaps):+.2f} ± {se:.2f} | {widths} "
                f"| {100 * min(fractions):.1f}-{100 * max(fractions):.1f}% |"
            )
    return lines + [""]


def render_probe_paired(name: str, result: dict) -> list[str]:
    """A probe of a rule change (a patch under an environment variable, not shipped) run on
    matrix cells and paired, seed by seed, against the default bayesprune runs."""
    probe = result["probe_paired"]
    lines = [
        f"## {name}",
        "",
        f"Probe (not shipped): {probe['name']} (`{probe['env']}`). {probe['description']} "
        f"Commit {result['commit']}, CPU {result['cpu']}, 1 thread per run"
        + ("; the patch is in the JSON" if "patch" in probe else "")
        + f". Command: `{probe['command']}`.",
        "",
        "| cell | seeds | error (%) | default (%) | paired difference (points) | widths "
        "| default widths | weights kept (default) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in probe["paired"].items():
        kept = "-"
        if "weights_kept_range" in r:
            (a, b), (c, d) = r["weights_kept_range"], r["default_weights_kept_range"]
            kept = f"{a:g}-{b:g}% ({c:g}-{d:g}%)"
        lines.append(
            f"| {case} | {r['n']} | {r['error_mean']:.2f} | {r['default_error_mean']:.2f} "
            f"| {r['difference_points_mean']:+.2f} ± {r['difference_points_se']:.2f} "
            f"| {'-'.join(f'{w:g}' for w in r['widths_mean'])} "
            f"| {'-'.join(f'{w:g}' for w in r['default_widths_mean'])} | {kept} |"
        )
    return lines + [""]


def render_settle_dense_twins(name: str, result: dict) -> list[str]:
    """The final settle (Eq. (15)) on bayesprune runs and on their dense twins (no price)."""
    lines = [
        f"## {name}",
        "",
        result["about"],
        "",
        "| source | cell | seed | bayesprune error before → after (%) | units silenced "
        "| dense error before → after (%) | units silenced |",
        "|---|---|---|---|---|---|---|",
    ]

    def count(removed: dict) -> str:
        return "-".join(str(v) for v in removed.values())

    def row(source: str, r: dict) -> str:
        b, d = r["bayesprune"], r["dense"]
        return (
            f"| {source} | {r['case']} | {r['seed']} "
            f"| {100 * b['error_before']:.2f} → {100 * b['error']:.2f} | {count(b['settled'])} "
            f"| {100 * d['error_before']:.2f} → {100 * d['error']:.2f} | {count(d['settled'])} |"
        )

    for key, source in (("settle_pair", "pair"), ("first_runs", "spoilt by a mutation test"),
                        ("rerun_lenet5_n60k_0", "rerun")):  # fmt: skip
        lines += [row(source, r) for r in result[key]]
    for r in result["offline"]:
        for variant in ("full", "bonf"):
            b, d = r[f"bp_{variant}"], r[f"dense_{variant}"]
            lines.append(
                f"| offline, {variant} | {r['case']} | {r['seed']} "
                f"| {100 * r['bp_before']:.2f} → {100 * b['error']:.2f} | {count(b['removed'])} "
                f"| {100 * r['dense_before']:.2f} → {100 * d['error']:.2f} "
                f"| {count(d['removed'])} |"
            )
    return lines + [""]


def render_unit_redundancy(name: str, result: dict) -> list[str]:
    """``unit_redundancy.py``: per layer, how much of a unit the others rebuild."""
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/unit_redundancy.py`, seed {result['seed']}, commit {result['commit']}, "
        f"CPU {result['cpu']}, 1 thread: the default run's posterior-mode network; per gated "
        "layer, R² of each live unit's output (as its consumer receives it) from the other live "
        "units and a constant, least squares over up to 5,000 training examples and their "
        "positions; 1/(1 − R²) is the factor by which the no-re-fit evidence overstates the "
        "cost of a removal after the consumer's linear re-fit, to second order "
        "(docs/method.md §6zi).",
        "",
        "| cell | widths, error (%) | layer | live | R² (10% / 50% / 90%) | median 1/(1 − R²) |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["unit_redundancy"]:
        label = f"{'-'.join(map(str, run['widths']))}, {100 * run['test_error']:.2f}"
        for layer, r in run["layers"].items():
            q = " / ".join(f"{v:.2f}" for v in r["r2_quantiles"])
            lines.append(f"| {run['case']} | {label} | {layer} | {r['live']} | {q} "
                         f"| {r['factor_median']:.1f} |")  # fmt: skip
    return lines + [""]


def render_cli_fuzz(name: str, result: dict) -> list[str]:
    """``cli_fuzz.py``: random training command lines sorted by their exit codes (with
    ``--after``, also the export, inspect and bench commands run on each run directory)."""
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items() if "twin" not in k)
    after, twins = result.get("after", False), result.get("twins", False)
    commands = {x["command"].split()[1] for run in result["cli_fuzz"] for x in run.get("after", [])}
    then = "export, inspect, bench and baseline" if "baseline" in commands else (
        "export, inspect and bench")  # fmt: skip
    if twins:
        c = result["counts"]
        counts += (
            f"; of the collapses, the dense twin learns in {c['collapsed, twin learns']} and "
            f"collapses too in {c['collapsed, twin collapses too']}"
        )
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/cli_fuzz.py --seed {result['seed']} --count {len(result['cli_fuzz'])}"
        f"{' --after' if after else ''}{' --twins' if twins else ''}"
        f"{'' if name == 'cli_fuzz' else ' --name ' + name}`: "
        f"random `bayesprune train` command lines (small data, 0-4 further options each)"
        f"{f', then {then} on each run that ended 0 or 3' if after else ''}"
        f"{', each collapse read against its dense twin (bayesprune baseline)' if twins else ''}, "
        f"commit {result['commit']}, CPU {result['cpu']}. Outcomes"
        f"{' (every command)' if after else ''}: {counts} (a defect is a "
        "traceback, an exit code other than 0, 2 or 3, or a run past the time limit). The "
        "commands that did not end 0:",
        "",
        "| command | exit | verdict | last line |" + (" dense twin |" if twins else ""),
        "|---|---|---|---|" + ("---|" if twins else ""),
    ]
    for r in (x for run in result["cli_fuzz"] for x in (run, *run.get("after", []))):
        if r["returncode"] != 0 or r["verdict"] == "defect":
            last = r["last_line"].replace("|", "/")[:160]
            row = f"| `{r['command']}` | {r['returncode']} | {r['verdict']} | {last} |"
            if twins:
                t = r.get("twin")
                said = "" if t is None else t["line"].replace("|", "/")
                said = said.removeprefix("bayesprune: ")[:160]
                row += f" {said} |"
            lines.append(row)
    return lines + [""]


def render_resume_fuzz(name: str, result: dict) -> list[str]:
    """``resume_fuzz.py``: random command lines stopped by SIGTERM and resumed, against the
    same command line run to its end."""
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items())
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/resume_fuzz.py --seed {result['seed']} --count "
        f"{len(result['resume_fuzz'])}{'' if name == 'resume_fuzz' else ' --name ' + name}`: "
        "`cli_fuzz.py`'s random `bayesprune train` command lines (two epochs or more), each run "
        "to its end, and again stopped by SIGTERM after its first epoch's checkpoint plus a "
        "drawn share of an epoch and resumed with `--resume`; `same` is the same `model.pt` to "
        "the bit and the same status, architecture and test error. Commit "
        f"{result['commit']}, CPU {result['cpu']}. Outcomes: {counts}.",
        "",
        "| command | stopped after (epochs past the first) | verdict | reference / stop / resume "
        "exit | note |",
        "|---|---|---|---|---|",
    ]
    for r in result["resume_fuzz"]:
        exits = " / ".join(str(r.get(k, "-")) for k in ("reference_exit", "stop_exit",
                                                          "resume_exit"))  # fmt: skip
        note = r.get("reason", "").replace("|", "/")[:120]
        lines.append(f"| `{r['command']}` | {r['delay_epochs']:.2f} | {r['verdict']} | {exits} "
                     f"| {note} |")  # fmt: skip
    return lines + [""]


def render_matrix_axes(name: str, result: dict) -> list[str]:
    """``matrix_axes.py``: widths and gaps along N, batch size and learning rate."""
    labels = {"N": "training examples", "batch": "batch size", "lr": "Adam learning rate"}
    names = {"mlp": "LeNet-300-100", "lenet5": "LeNet-5"}
    lines = [
        f"## {name}",
        "",
        "`benchmarks/matrix_axes.py`: LeNet-300-100 and LeNet-5 on Fashion-MNIST with one "
        "setting changed at a time from the full-data recipe (60,000 examples, batch 100, Adam "
        "1e-3, 10 epochs), "
        f"pooled over seeds by `matrix_summary.py` (from {', '.join(result['sources'])}); "
        f"plot `benchmarks/{result['figure']}`. Gaps in points, mean ± standard error; widths "
        "as seed means (range).",
        "",
        "| network | axis | value | cell | seeds | widths | gap | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    panels = [(arch, axis, entry) for arch, arch_axes in result["matrix_axes"].items()
              for axis, entry in arch_axes.items()]  # fmt: skip
    for arch, axis, entry in panels:
        for r in entry["points"]:
            ranges = zip(r["widths_mean"], r["widths_min"], r["widths_max"], strict=True)
            widths = "-".join(f"{m:.1f} ({lo}-{hi})" for m, lo, hi in ranges)
            gap = "-" if r["gap_mean"] is None else f"{r['gap_mean']:+.2f}" + (
                "" if r["gap_se"] is None else f" ± {r['gap_se']:.2f}"
            )
            met = {True: "yes", False: "**no**", None: "-"}[r["gap_met"]]
            lines.append(
                f"| {names[arch]} | {labels[axis]} | {r['value']:g} | {r['case']} | "
                f"{r['seeds']} | {widths} | {gap} | {r['gap_target']:g} | {met} |"
            )
    lines.append("")
    for arch, axis, entry in panels:
        cvs = ", ".join(f"{100 * v:.1f}%" for v in entry.get("width_cv", []))
        extra = ""
        if "non_decreasing" in entry:
            extra = f"; non-decreasing within 10%: {'yes' if entry['non_decreasing'] else 'no'}"
        along = f"{names[arch]}, width CV per layer along {labels[axis]}"
        lines.append(f"{along}: {cvs or '-'}{extra}.")
    lines.append(f"On no axis: {', '.join(result['left_out']) or 'none'}.")
    return lines + [""]


def render_group_takeover(result: dict) -> list[str]:
    """Table of ``group_takeover.py``: the test of Eq. (14) for groups of k units."""
    lines = [
        "## group_takeover",
        "",
        "`benchmarks/group_takeover.py`: the teacher (4 inputs, teacher 10-5, 20,000 examples) "
        f"trained with the defaults (single merge moves only), seed {result['seed']}, then, on the "
        "final network, the test of Eq. (14) for a group of its k units taken over jointly by the "
        "others (backward-elimination order, least-squares re-wiring fitted on "
        f"{result['held_out']:,} training examples, measured on {result['held_out']:,} others; "
        "k = 1 is a single move). Nats over the training set; a move passes when the bound "
        f"N(mean + 2 sd/√n) + ΔP is below 0. Commit {result['commit']}, {result['processor']}, "
        "1 thread.",
        "",
        "| start → widths (test error) | layer | k | N·mean(d) | N·2sd/√n | ΔP | bound | passes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["group_takeover"]:
        label = (
            "-".join(map(str, run["start"])) + " → " + "-".join(map(str, run["widths"]))
            + f" ({100 * run['test_error']:.2f}%)"
        )  # fmt: skip
        for r in run["rows"]:
            lines.append(
                f"| {label} | {r['layer']} ({r['width']}) | {r['k']} | {r['data_nats']:.2f} | "
                f"{r['noise_nats']:.2f} | {r['delta_prior']:+.2f} | {r['bound']:+.2f} | "
                f"{'yes' if r['bound'] < 0 else 'no'} |"
            )
    return lines + [""]


def render_readme() -> None:
    """Write benchmarks/README.md from every file in benchmarks/results."""
    (HERE / "README.md").write_text(readme_text())


def optimizer_words(cfg: dict) -> str:
    """"Adam", or "SGD (momentum µ)", for a recorded config (runs before the option: Adam)."""
    if cfg.get("optimizer", "adam") == "adam":
        return "Adam"
    return f"SGD (momentum {cfg.get('momentum', 0.9)})"


def temperature_words(cfg: dict, used: float | None = None) -> str:
    """A recorded config's temperature: its value, or where it was left to the data size,
    "τ(N)" and the value the run used (the tables said "temperature None")."""
    if cfg.get("temperature") is not None:
        return f"temperature {cfg['temperature']}"
    return "temperature τ(N) of Eq. (13)" + ("" if used is None else f" = {used:.4g}")


def render_run(name: str, result: dict) -> list[str]:
    """A run's summary beside its dense run (``fmnist_*.py``, ``robustness.py``-style files
    whose JSON holds ``config``, ``environment``, ``dense`` and ``bayesprune``)."""
    lines: list[str] = []
    cfg, env = result["config"], result["environment"]
    lines += [
        f"## {name}",
        "",
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, {optimizer_words(cfg)} lr "
        f"{cfg['lr']}, "
        f"posterior {cfg.get('posterior', 'structured')}, "
        f"{temperature_words(cfg, (result.get('bayesprune') or {}).get('temperature'))}, "
        f"estimator {cfg['estimator']}, "
        f"θ step {cfg['lr_theta']} {theta_averaging(cfg)}, "
        + (f"memory format {cfg['memory_format']}, " if "memory_format" in cfg else "")
        + f"{env['threads']} thread(s), torch {env['torch']}, "
        f"{env.get('processor', env['machine'])}, "
        f"commit {env.get('commit', 'unknown')}.",
        "",
        *([result["about"], ""] if result.get("about") else []),
        "| run | " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for run in ("dense", "bayesprune"):
        lines.append(f"| {run} | " + " | ".join(f(result[run]) for _, f in COLUMNS) + " |")
    d, b = result["dense"], result["bayesprune"]
    lines += [
        "",
        f"Error gap {100 * (b['test_error'] - d['test_error']):+.2f} points; "
        f"wall-time ratio {b['train_wall_seconds'] / d['train_wall_seconds']:.2f}"
        + (" (the two runs side by side, one process each)" if env.get("side_by_side") else "")
        + "; "
        f"full-width step ratio in the runs "
        f"{b['step_seconds_full_width'] / d['step_seconds_full_width']:.2f}.",
        "",
    ]
    if b.get("merge_rounds"):  # (results before the forty-fifth session have none)
        settle = b.get("settle_seconds")
        lines += [
            f"Of bayesprune's wall time: {merge_round_words(b['merge_rounds'])}"
            + (f"; the final settle {settle:.1f} s" if settle is not None else "")
            + ".",
            "",
        ]
    if "step_cost" in result and "svi_ms" in result["step_cost"]:
        c = result["step_cost"]
        lines += [
            "Step cost at full width (median of interleaved blocks, same process): "
            f"plain PyTorch {c['dense_ms']:.2f} ms, SVI step (fast ELBO) {c['svi_ms']:.2f} ms "
            f"({c['svi_ratio']:.2f}×), SVI step (traced ELBO) "
            f"{c['svi_traced_ms']:.2f} ms ({c['svi_traced_ratio']:.2f}×).",
            "",
        ]
    elif "step_cost" in result:  # before issue 10: the fused engine beside the Pyro ELBO
        c = result["step_cost"]
        lines += [
            "Step cost at full width (median of interleaved blocks, same process): "
            f"plain PyTorch {c['dense_ms']:.2f} ms, bayesprune fused {c['fused_ms']:.2f} ms "
            f"({c['fused_ratio']:.2f}×), bayesprune through the Pyro ELBO "
            f"{c['pyro_ms']:.2f} ms ({c['pyro_ratio']:.2f}×).",
            "",
        ]
    return lines


# How each results file is rendered: the first entry that matches it, by its name (``stem``), the
# start of its name (``prefix``) or a key of its JSON (``key``), names the renderer; a file no
# entry matches is a run summary (``render_run``). Order matters where a file matches several.
RENDERERS: list[tuple[str, str, Callable[[str, dict], list[str]]]] = [
    ("stem", "step_cost", lambda name, r: render_step_cost(r)),
    ("stem", "inference", lambda name, r: render_inference(r)),
    ("stem", "ddp", lambda name, r: render_ddp(r)),
    ("stem", "profile_step", lambda name, r: render_profile(r)),
    ("stem", "memory_format", lambda name, r: render_memory_format(r)),
    ("stem", "secant_rerun", lambda name, r: render_secant_rerun(r)),
    ("stem", "compile_step", lambda name, r: render_compile_step(r)),
    ("stem", "gpu", lambda name, r: render_gpu(r, name)),
    ("prefix", "gpu_", lambda name, r: render_gpu(r, name)),
    ("stem", "pooling", lambda name, r: render_pooling(r)),
    ("stem", "channel_blocks", lambda name, r: render_channel_blocks(r)),
    ("stem", "evidence_probe", lambda name, r: render_evidence_probe(r)),
    ("stem", "teacher_widths", lambda name, r: render_teacher_widths(r)),
    ("stem", "group_takeover", lambda name, r: render_group_takeover(r)),
    ("prefix", "evidence_optimism", lambda name, r: render_evidence_optimism(r, name)),
    ("prefix", "width_temperature", lambda name, r: render_width_temperature(r, name)),
    ("prefix", "lr_units", lambda name, r: render_lr_units(r, name)),
    ("stem", "release_state", lambda name, r: render_release_state(r)),
    ("stem", "profile_value", lambda name, r: render_profile_value(r)),
    ("prefix", "joint_value", lambda name, r: render_joint_value(name, r)),
    ("prefix", "lenet5_widths", lambda name, r: render_lenet5_widths(name, r)),
    ("prefix", "second_layer_widths", lambda name, r: render_second_layer_widths(name, r)),
    ("key", "survivors", lambda name, r: render_survivors(name, r)),
    ("key", "kept_widths", lambda name, r: render_kept_widths(name, r)),
    ("prefix", "laplace_price", lambda name, r: render_laplace_price(name, r)),
    ("stem", "probe_laplace_first_layer", lambda name, r: render_probe_laplace(name, r)),
    ("stem", "probe_laplace_14px", lambda name, r: render_probe_laplace(name, r)),
    ("stem", "probe_laplace_all_layers", lambda name, r: render_probe_laplace(name, r)),
    ("stem", "probe_mup_lr", lambda name, r: render_probe_mup(name, r)),
    ("stem", "probe_mean_gates", lambda name, r: render_probe_mup(name, r)),
    ("stem", "probe_profile_evidence", lambda name, r: render_probe_mup(name, r)),
    ("key", "matrix_summary", lambda name, r: render_matrix_summary(name, r)),
    ("key", "matrix_axes", lambda name, r: render_matrix_axes(name, r)),
    ("key", "input_pixels", lambda name, r: render_input_pixels(name, r)),
    ("key", "probe_paired", lambda name, r: render_probe_paired(name, r)),
    ("key", "settle_pair", lambda name, r: render_settle_dense_twins(name, r)),
    ("key", "held_out_probe", lambda name, r: render_held_out_probe(name, r)),
    ("key", "held_out_p3", lambda name, r: render_held_out_p3(name, r)),
    ("key", "unit_redundancy", lambda name, r: render_unit_redundancy(name, r)),
    ("key", "refit_value", lambda name, r: render_refit_value(name, r)),
    ("key", "decision_time", lambda name, r: render_decision_time(name, r)),
    ("key", "wide_starts", lambda name, r: render_wide_starts(name, r)),
    ("key", "training_cost", lambda name, r: render_training_cost(name, r)),
    ("key", "cli_fuzz", lambda name, r: render_cli_fuzz(name, r)),
    ("key", "resume_fuzz", lambda name, r: render_resume_fuzz(name, r)),
    ("key", "merge_power", lambda name, r: render_merge_power(name, r)),
    ("key", "tradeoff", lambda name, r: render_tradeoff(name, r)),
    ("key", "l0_baseline", lambda name, r: render_l0_baseline(name, r)),
    ("key", "l0_summary", lambda name, r: render_l0_summary(name, r)),
    ("key", "mean_gap_points", lambda name, r: render_seeds(name, r)),
    ("key", "runs", lambda name, r: render_robustness(name, r)),
    ("key", "cells", lambda name, r: render_matrix(name, r)),
]


def render_training_cost(name: str, result: dict) -> list[str]:
    """benchmarks/training_cost.py: per network, the training wall time per epoch and summed,
    bayesprune against dense, from the runs of ``fmnist_lenet300.py`` and ``fmnist_lenet5.py``
    (issue 12's training cost over time; the figure is ``training_cost.png``)."""
    lines = [
        f"## {name}",
        "",
        "Training wall time per epoch (s) and summed, bayesprune against dense with the same "
        "recipe in one process (Fashion-MNIST, 10 epochs, batch 100, 1 thread; training steps "
        "only, bayesprune's per-epoch evaluation, logs and checkpoints apart, as the dense run "
        "has none); plotted in "
        "`benchmarks/training_cost.png` (`benchmarks/training_cost.py`).",
        "",
    ]
    for title, t in result["training_cost"].items():
        d, b = t["dense"], t["bayesprune"]
        lines += [
            f"{title} (`results/{t['source']}.json`, commit {t['commit']}, {t['processor']}):",
            "",
            "| epoch | dense | bayesprune | dense, summed | bayesprune, summed | ratio, summed |",
            "|---|---|---|---|---|---|",
        ]
        sd = sb = 0.0
        for epoch, (x, y) in enumerate(
            zip(d["epoch_train_seconds"], b["epoch_train_seconds"], strict=True), 1
        ):
            sd, sb = sd + x, sb + y
            lines.append(f"| {epoch} | {x:.1f} | {y:.1f} | {sd:.1f} | {sb:.1f} | {sb / sd:.2f}× |")
        extra = b.get("bookkeeping_seconds") or 0.0
        settle = b.get("settle_seconds")  # after the last epoch, inside the wall time
        rounds = b.get("merge_rounds")  # inside the epochs' times
        lines += [
            "",
            f"Total {b['train_wall_seconds']:.1f} s"
            + (f" (the final settle's {settle:.1f} s after the last epoch included)"
               if settle else "")
            + (f", of which {merge_round_words(rounds)}" if rounds else "")
            + f" against {d['train_wall_seconds']:.1f} s "
            f"({b['train_wall_seconds'] / d['train_wall_seconds']:.2f}×); with bayesprune's "
            f"per-epoch evaluation, logs and checkpoints ({extra:.1f} s) "
            f"{(b['train_wall_seconds'] + extra) / d['train_wall_seconds']:.2f}×.",
            "",
        ]
    return lines


def _or_list(items) -> str:
    """"1", "1 or 4", "1, 2 or 4"."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def render_wide_starts(name: str, result: dict) -> list[str]:
    """benchmarks/wide_starts.py: per size, start and seed, the widths, errors and training
    wall time of bayesprune (its merge rounds' share apart) against the dense start."""
    lines = [
        f"## {name}",
        "",
        "An MLP started at LeNet-300-100's widths (300-100) times "
        f"{_or_list(sorted({r['mult'] for r in result['wide_starts']}))}, on "
        f"{result['wide_starts'][0].get('dataset', 'fashion-mnist')}, the default recipe "
        f"({result['wide_starts'][0].get('epochs', 10)} epochs), "
        f"{result['threads']} thread per run, commit {result['commit']}, {result['cpu']} "
        "(`benchmarks/wide_starts.py`; train wall without the per-epoch evaluation, logs and "
        "checkpoints, merge "
        "rounds included in it).",
        "",
        "| examples | start | seed | widths | test error (%) | dense (%) | train wall (s) "
        "| merge rounds (s) | dense wall (s) | wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["wide_starts"], key=lambda r: (r["size"], r["mult"], r["seed"])):
        d = r.get("dense")
        lines.append(
            f"| {r['size']:,} | {'-'.join(map(str, r['start']))} | {r['seed']} | "
            f"{'-'.join(map(str, r['widths']))} | {100 * r['test_error']:.2f} | "
            + (f"{100 * d['test_error']:.2f}" if d else "-")
            + f" | {r['train_wall_seconds']:.1f} | {r['merge_seconds']:.1f} | "
            + (f"{d['train_wall_seconds']:.1f} | "
               f"{r['train_wall_seconds'] / d['train_wall_seconds']:.2f}×" if d else "- | -")
            + " |"
        )  # fmt: skip
    return lines + [""]


def render_held_out_p3(name: str, result: dict) -> list[str]:
    """P3's starting widths under one setting: each run's final widths and error, and the CV of
    the widths across the starts per seed and layer."""
    lines = [
        f"## {name}",
        "",
        f"{result['description']} Commit {result['commit']}, {result.get('cpu', 'unknown CPU')}.",
        "",
        "| seed | start | final widths | test error (%) | weights kept (%) |",
        "|---|---|---|---|---|",
    ]
    for run in sorted(result["held_out_p3"], key=lambda r: (r["seed"], r["mult"])):
        lines.append(
            f"| {run['seed']} | {'-'.join(map(str, run['initial_widths']))} | "
            f"{'-'.join(map(str, run['widths']))} | {100 * run['test_error']:.2f} | "
            f"{100 * run['weights_kept_fraction']:.1f} |"
        )
    cvs = "; ".join(
        f"seed {seed}: " + " / ".join(f"{c:.1f}%" for c in layers)
        for seed, layers in result["cv_percent_per_seed"].items()
    )
    return lines + ["", f"Width CV across the starts, per layer: {cvs} (P3 bound 20%).", ""]


def render_held_out_probe(name: str, result: dict) -> list[str]:
    """The held-out evidence probe (docs/method.md §6zk): per cell and seed, each arm's widths,
    test error and weights kept, and the arms' mean errors."""
    arms = ("control", "held-out", "join", "default")
    code = {"ctl": "control", "ho": "held-out", "hoj": "join", "def": "default"}
    table: dict = {}
    for run in result["held_out_probe"]:
        table.setdefault(run["cell"], {}).setdefault(run["seed"], {})[code[run["arm"]]] = run
    lines = [
        f"## {name}",
        "",
        f"{result['description']} Commit {result['commit']}, {result.get('cpu', 'unknown CPU')}, "
        f"{result['threads']} thread per run. Each entry: hidden widths, test error (%), "
        "weights kept (%).",
        "",
        "| cell | seed | " + " | ".join(arms) + " |",
        "|---|---|" + "---|" * len(arms),
    ]
    means = []
    for cell in sorted(table):
        for seed in sorted(table[cell]):
            row = table[cell][seed]
            cells = [
                "–" if arm not in row else
                f"{row[arm]['architecture'].split('-', 1)[1]}, "
                f"{100 * row[arm]['test_error']:.2f}, "
                f"{100 * row[arm]['weights_kept_fraction']:.1f}"
                for arm in arms
            ]  # fmt: skip
            lines.append(f"| {cell} | {seed} | " + " | ".join(cells) + " |")
        errors = {
            arm: [100 * r[arm]["test_error"] for r in table[cell].values() if arm in r]
            for arm in arms
        }
        means.append(
            f"{cell}: "
            + ", ".join(f"{arm} {sum(e) / len(e):.2f}" for arm, e in errors.items() if e)
        )
    return lines + ["", "Mean test error (%) per arm: " + "; ".join(means) + ".", ""]


def renderer(name: str, result: dict) -> Callable[[str, dict], list[str]]:
    """The function that renders the results file ``name`` (its stem) holding ``result``: by
    the file's name as the scripts' defaults make it, else by the script recorded in it (a
    name of the user's choosing), else by the keys it holds."""
    script = result.get("script")
    for kind, key, render in RENDERERS:
        if (
            (kind == "stem" and name == key)
            or (kind == "prefix" and name.startswith(key))
            or (kind == "key" and key in result)
        ):
            if kind == "key" and script is not None:
                return _by_script(script) or render
            return render
    return (_by_script(script) if script is not None else None) or render_run


def _by_script(script: str) -> Callable[[str, dict], list[str]] | None:
    for kind, key, render in RENDERERS:
        if (kind == "stem" and script == key) or (kind == "prefix" and script.startswith(key)):
            return render
    return None


def readme_text() -> str:
    """benchmarks/README.md as the results files make it."""
    lines = [
        "# Benchmarks",
        "",
        "Each script trains the dense network (plain PyTorch, same optimiser, epochs and batch",
        "size) and bayesprune in one process with a pinned thread count, and writes",
        '`results/<name>.json` (`{"dense": ..., "bayesprune": ...}`, the keys of `summary.json`)',
        "and this table. Regenerate with `.venv/bin/python benchmarks/<name>.py`. A trial run",
        "that must not replace the committed files: `BAYESPRUNE_RESULTS_DIR=/some/folder` (or a",
        "script's `--results-dir`) writes its JSON and figures there and leaves `results/` and",
        "this README alone.",
        "Each table names the commit it ran on; runs before commit a19c390 used the previous",
        "default (structured posterior, kaiming-initialised classifier), later ones the coupled",
        "posterior and a zero classifier (docs/method.md §2, §4, §6b). Tables at commit 4b32018",
        "or later use the evidence rule of issue 9 (per-example θ, warm-up, ordered release from",
        "42c3466 on, τ(N); docs/method.md §4, §6c); the others are the previous θ rule.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        try:
            lines += renderer(path.stem, result)(path.stem, result)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
            # one file no renderer can draw must not take every other table with it
            lines += [
                f"## {path.stem}",
                "",
                f"No table: `results/{path.name}` is not in the form its renderer reads "
                f"({type(err).__name__}: {err}).",
                "",
            ]
    return "\n".join(lines)


def _network_table(result: dict, lines: list[str], row: Callable[[dict], str]) -> list[str]:
    """``lines`` (title, text, table header) and one table row per network in ``result``."""
    for name in ("mlp", "lenet5"):
        if name in result:
            lines.append(f"| {name} | {row(result[name])} |")
    return lines + [""]


def render_gpu(result: dict, name: str = "gpu") -> list[str]:
    """benchmarks/gpu.py: step cost and training runs on a GPU (parts named ``<part>_seedN`` are
    the same part with another seed; ``bench_<net>`` is ``bayesprune bench`` of a part's run)."""
    env, parts = result["environment"], result["parts"]
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/gpu.py` on {env['device']}, torch {env['torch']}, commit {env['commit']}.",
        "",
    ]
    if result.get("about"):
        lines += [result["about"], ""]
    cifar = parts.get("cifar10", {})
    if cifar.get("found") is False:
        lines += ["CIFAR-10 was not on the machine (searched: "
                  f"{', '.join(str(p) for p in cifar['searched'])}).", ""]  # fmt: skip
    cost = parts.get("step_cost", {})
    if "error" not in cost and cost:
        lines += [
            "Milliseconds per full-width training step (median of interleaved blocks):",
            "",
            "| network | batch | plain PyTorch | SVI (fast ELBO) | ratio | SVI (traced) | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, batch in (("mlp", 100), ("lenet5", 100), ("vgg16", 128)):
            if name in cost:
                c = cost[name]
                lines.append(
                    f"| {name} | {batch} | {c['dense_ms']:.2f} | {c['svi_ms']:.2f} | "
                    f"{c['svi_ratio']:.2f}× | {c['svi_traced_ms']:.2f} | "
                    f"{c['svi_traced_ratio']:.2f}× |"
                )
        lines.append("")
    titles = {
        "cifar10": "VGG16 on CIFAR-10",
        "lenet5_fmnist": "LeNet-5 on Fashion-MNIST, batch 100",
        "vgg16_fmnist32": "VGG16 on Fashion-MNIST padded to 3×32×32 (a stand-in: no CIFAR-10 "
        "on the machine), Adam 1e-3 cosine, batch 128, crop + flip",
    }
    runs = [
        (key, title, seed_key)
        for key, title in titles.items()
        for seed_key in sorted(parts)
        if seed_key == key or seed_key.startswith(key + "_seed")
    ]
    for key, title, seed_key in runs:
        run = parts[seed_key]
        if "dense" not in run:
            continue
        epochs = len(run["dense"]["epoch_train_seconds"])
        seed = f", seed {seed_key.rsplit('_seed', 1)[1]}" if seed_key != key else ""
        lines += [
            f"{title}, {epochs} epochs{seed}:",
            "",
            "| run | test error | widths | weights kept | train wall (s) | status |",
            "|---|---|---|---|---|---|",
        ]
        for side in ("dense", "bayesprune"):
            r = run[side]
            lines.append(
                f"| {side} | {100 * r['test_error']:.2f}% | {'-'.join(map(str, r['widths']))} | "
                f"{100 * r['weights_kept_fraction']:.2f}% | {r['train_wall_seconds']:.1f} | "
                f"{r.get('status', '')} |"
            )
        reason = run["bayesprune"].get("status_reason")
        lines += [""] + ([f"bayesprune's status: {reason}.", ""] if reason else [])
    for key in sorted(k for k in parts if k.startswith("bench_")):
        bench = parts[key]
        dense, pruned = bench["dense"], bench["pruned"]
        lines += [
            f"`bayesprune bench` of the {key[len('bench_'):]} run above on {bench['device']}:",
            "",
            "| | dense | pruned | ratio |",
            "|---|---|---|---|",
        ]
        macs = "macs" if "macs" in dense else "flops"  # (files before "macs": MACs in "flops")
        for what, k in (
            ("parameters", "params"),
            ("multiply-adds per example", macs),
            ("file bytes", "bytes"),
        ):
            lines.append(
                f"| {what} | {dense[k]:,} | {pruned[k]:,} | {dense[k] / pruned[k]:.1f}× |"
            )
        for batch, b in bench["batches"].items():
            lines.append(
                f"| batch {batch} latency (ms) | {b['dense_ms']:.3f} | {b['pruned_ms']:.3f} | "
                f"{b['speedup']:.2f}× |"
            )
        lines.append("")
    return lines


def render_compile_step(result: dict) -> list[str]:
    """benchmarks/compile_step.py: torch.compile of the plain step and of the SVI step's forward."""
    lines = [
        "## compile_step",
        "",
        "`torch.compile` (inductor) on the CPU, LeNet-300-100, batch "
        f"{result['batch_size']}, {result['threads']} thread, torch {result['torch']}, commit "
        f"{result['commit']}; medians of interleaved blocks "
        "(`benchmarks/compile_step.py`). The bayesprune step compiles the network's forward "
        "(`dynamic=True`); the rest of the SVI step is Python.",
        "",
        "| widths | plain | plain, compiled | bayesprune step | step, forward compiled "
        "| first compile: plain / step |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {'-'.join(map(str, r['widths']))} | {r['plain_ms']:.2f} ms | "
            f"{r['plain_compiled_ms']:.2f} ms | {r['step_ms']:.2f} ms | "
            f"{r['step_compiled_ms']:.2f} ms | {r['plain_compile_s']:.1f} s / "
            f"{r['step_compile_s']:.1f} s |"
        )
    return lines + [""]


def render_profile(result: dict) -> list[str]:
    lines = [
        "## profile_step",
        "",
        "Where one full-width training step goes (`benchmarks/profile_step.py`, batch "
        f"{result['batch_size']}, {result['threads']} thread, commit {result['commit']}"
        + (f", {result['processor']}" if result.get("processor") else "")
        + "; medians of interleaved blocks; the parts are differences of measured variants, see "
        "the script; a negative part is within the blocks' noise), a fresh network on random "
        "data as at a run's start.",
        "",
        "| network | plain | step | secant (ĝ pass + evidence) | prior | SVI + optimisers + "
        "bookkeeping | aten ops: plain / step |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(r: dict) -> str:
        return (
            f"{r['plain_ms']:.2f} ms | {r['step_ms']:.2f} ms | {r['secant_ms']:.2f} ms | "
            f"{r['prior_ms']:.2f} ms | {r['svi_optimiser_bookkeeping_ms']:.2f} ms | "
            f"{r['plain_aten_ops']:.0f} / {r['step_aten_ops']:.0f}"
        )

    lines = _network_table(result, lines, row)
    pruned = [n for n in ("mlp", "lenet5") if f"{n}_pruned" in result]
    if pruned:
        lines += [
            "At the widths the training-cost runs ended with (the first units of each layer "
            "kept; about nine tenths of a run's steps), with the full-width plain step (dense); "
            f"data: {_profile_data(result, pruned)}:",
            "",
            "| network | widths | dense | plain | step | secant | prior | SVI + optimisers + "
            "bookkeeping | aten ops: plain / step |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n in pruned:
            r = result[f"{n}_pruned"]
            widths = "-".join(map(str, r["widths"]))
            lines.append(f"| {n} | {widths} | {r['dense_ms']:.2f} ms | {row(r)} |")
        lines.append("")
    return lines


def render_memory_format(result: dict) -> list[str]:
    """benchmarks/memory_format.py: training steps, contiguous against channels-last."""
    lines = [
        "## memory_format",
        "",
        "One training step in the two memory formats of `--memory-format` (`benchmarks/"
        f"memory_format.py`, batch {result['batch_size']}, {result['threads']} thread, torch "
        f"{result['torch']}, {result.get('processor', result.get('machine'))}, commit "
        f"{result['commit']}; medians of interleaved blocks in one process): plain is the "
        "network with cross-entropy and Adam (what its dense twin does), step bayesprune's "
        "`Trainer.train_step`; speed-up is contiguous over channels-last.",
        "",
        "| network | widths | data | plain: contiguous / channels-last | speed-up | step: "
        "contiguous / channels-last | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("lenet5", "lenet5_pruned", "vgg_small"):
        r = result[name]
        lines.append(
            f"| {name} | {'-'.join(map(str, r['widths']))} | {r['data']} | "
            f"{r['plain/contiguous_ms']:.2f} / {r['plain/channels-last_ms']:.2f} ms | "
            f"{r['plain_speedup']:.2f}× | {r['step/contiguous_ms']:.2f} / "
            f"{r['step/channels-last_ms']:.2f} ms | {r['step_speedup']:.2f}× |"
        )
    return lines + [""]


def _profile_data(result: dict, names: list[str]) -> str:
    """What the pruned-width rows of profile_step were timed on (random data before the
    ``data`` key existed)."""
    notes = {result[f"{n}_pruned"].get("data", "random") for n in names}
    return "; ".join(sorted(notes))


def render_secant_rerun(result: dict) -> list[str]:
    lines = [
        "## secant_rerun",
        "",
        "The secant's ĝ pass for LeNet-5, rerunning only the examples whose drawn label differs "
        "(the default) against the whole batch (`benchmarks/secant_rerun.py`: a run trained on "
        "a Fashion-MNIST subset, then steps on its random mini-batches in interleaved blocks; "
        f"batch {result['batch_size']}, {result['threads']} thread, commit {result['commit']}"
        + (f", {result['processor']}" if result.get("processor") else "")
        + "; docs/method.md §3, §6u).",
        "",
        "| trained epochs | examples | widths | drawn labels differing | rerun | full | saving |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['epochs']} | {r['train_subset']:,} | {'-'.join(map(str, r['widths']))} | "
            f"{100 * r['share_differing']:.0f}% | {r['rerun_ms']:.1f} ms | {r['full_ms']:.1f} ms "
            f"| {100 * r['saving']:.0f}% |"
        )
    return lines + [""]


def render_channel_blocks(result: dict) -> list[str]:
    """benchmarks/channel_blocks.py: LeNet-5 inference against its convolutions' widths."""
    rows = result["rows"]
    dense = rows[0]
    lines = [
        "## channel_blocks",
        "",
        "LeNet-5-Caffe inference (plain `torch.nn`, bayesprune's pooling), batch "
        f"{result['batch']}, {result['threads']} thread, torch {result['torch']}, "
        f"{result['processor']}, commit {result['commit']} (`benchmarks/channel_blocks.py`; "
        "medians of interleaved blocks). "
        "Speed-up over the dense network in the same mode; multiply-adds per image.",
        "",
        "| conv1-conv2-fc1 | multiply-adds | default (oneDNN) | oneDNN off | channels last |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[f'{mode}_ms']:.2f} ms ({dense[f'{mode}_ms'] / r[f'{mode}_ms']:.2f}×)"
            for mode in ("default", "mkldnn_off", "channels_last")
        ]
        lines.append(
            f"| {'-'.join(map(str, r['widths']))} | {r['macs']:,} "
            f"({r['macs'] / dense['macs']:.2f}) | " + " | ".join(cells) + " |"
        )
    return lines + [""]


def render_pooling(result: dict) -> list[str]:
    pool, nets = result["pool"], result["lenet5"]
    map_shape = "×".join(map(str, result["pool_map"]))
    lines = [
        "## pooling",
        "",
        "2×2 max-pooling on the CPU, torch's `max_pool2d` against `bayesprune.models.network."
        f"max_pool_2x2` (same values and gradients), {result['threads']} thread, torch "
        f"{result['torch']}, commit {result['commit']} (`benchmarks/pooling.py`; medians of "
        "interleaved blocks).",
        "",
        "| | torch | bayesprune |",
        "|---|---|---|",
        f"| pooling a {map_shape} map, no gradient | {pool['torch_forward_ms']:.2f} ms | "
        f"{pool['bayesprune_forward_ms']:.2f} ms |",
        f"| same, forward + backward | {pool['torch_train_ms']:.2f} ms | "
        f"{pool['bayesprune_train_ms']:.2f} ms |",
    ]
    if "torch_train_nhwc_ms" in pool:  # (results before the channels-last rows)
        lines += [
            f"| the map channels-last, no gradient | {pool['torch_forward_nhwc_ms']:.2f} ms | "
            f"{pool['bayesprune_forward_nhwc_ms']:.2f} ms |",
            f"| same, forward + backward | {pool['torch_train_nhwc_ms']:.2f} ms | "
            f"{pool['bayesprune_train_nhwc_ms']:.2f} ms (torch's kernel; the strided views' "
            f"backward: {pool['views_train_nhwc_ms']:.2f} ms) |",
        ]
    for name, label in (("dense_ms", "20-50-500"), ("pruned_ms", "19-25-82")):
        lines.append(
            f"| LeNet-5 {label}, batch {result['lenet5_batch']}, inference | "
            f"{nets['torch'][name]:.2f} ms | {nets['bayesprune'][name]:.2f} ms |"
        )
    speedups = [nets[p]["dense_ms"] / nets[p]["pruned_ms"] for p in ("torch", "bayesprune")]
    lines += [
        "",
        f"Pruned over dense: {speedups[0]:.2f}× with torch's pooling, {speedups[1]:.2f}× with "
        "bayesprune's.",
        "",
    ]
    return lines


def render_evidence_probe(result: dict) -> list[str]:
    lines = [
        "## evidence_probe",
        "",
        "Each unit's evidence −Δ_s (loss increase when it alone is off, 10,000 training examples)"
        " against its price per example, LeNet-300-100, full Fashion-MNIST, batch 100, at the "
        "current weights and at their average over the last "
        f"{result['window']:.0f} examples; 1 thread, commit {result['commit']} "
        "(`benchmarks/evidence_probe.py`, docs/method.md §6c).",
        "",
        "| lr | seed | step | layer | weights | units | below price | negative | "
        "evidence/price quantiles 10-25-50-75-90% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    finals = []
    for run in result["runs"]:
        if "probes" not in run:
            finals.append(run)
            continue
        for step, probe in run["probes"].items():
            for where in ("current", "average"):
                for layer, r in probe[where].items():
                    if layer == "loss":
                        continue
                    quantiles = " / ".join(f"{q:.2f}" for q in r["ratio_quantiles"])
                    lines.append(
                        f"| {run['lr']:g} | {run['seed']} | {step} | {layer} | {where} | "
                        f"{r['units']} | {r['below_price']} | {r['negative']} | {quantiles} |"
                    )
    if finals:
        lines += [
            "",
            "Runs with θ's evidence evaluated at the averaged weights (an experiment, not an "
            "option):",
            "",
            "| lr | seed | widths | test error (%) | weights kept (%) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['lr']:g} | {r['seed']} | {'-'.join(map(str, r['widths']))} | "
            f"{100 * r['test_error']:.2f} | {100 * r['weights_kept_fraction']:.1f} |"
            for r in finals
        ]
    return lines + [""]


def render_inference(result: dict) -> list[str]:
    lines = [
        "## inference",
        "",
        f"Pruned vs dense networks after {result['epochs']} epochs on Fashion-MNIST (defaults), "
        f"CPU, batch {result['batch']}, {result['threads']} thread, torch {result['torch']}, "
        f"commit {result['commit']}{', ' + result['processor'] if 'processor' in result else ''} "
        "(`benchmarks/inference.py`: `bayesprune train`, then `bayesprune bench`"
        + (" and the exported files" if any(isinstance(r, dict) and r.get("format")
                                            for r in result.values()) else "")
        + "; targets for LeNet-5: ≥ 3× faster, file ≥ 10× smaller).",
        "",
    ]
    exported = [r.get("format") for r in result.values() if isinstance(r, dict)]
    fmt = next((f for f in exported if f), None)
    if fmt:  # the exported files (the issue's measure); model.pt and the in-process modules
        lines += [
            f"Exported with `bayesprune export --format {fmt}` and loaded back with "
            "`torch.export.load` (the dense network of the starting widths the same way); "
            "`bench`'s numbers (`model.pt`, the in-process networks) in the last columns.",
            "",
            "| network | dense (ms) | pruned (ms) | speed-up | dense bytes | pruned bytes | "
            "smaller | `bench`: speed-up | `model.pt` smaller |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| network | dense (ms) | pruned (ms) | speed-up | dense bytes | pruned bytes | "
            "smaller |",
            "|---|---|---|---|---|---|---|",
        ]

    def row(r):
        cells = (
            f"{r['dense_ms']:.2f} | {r['pruned_ms']:.2f} | {r['speedup']:.2f}× | "
            f"{r['dense_bytes']:,} | {r['pruned_bytes']:,} | {r['size_ratio']:.1f}×"
        )
        if "model_pt" in r:
            m = r["model_pt"]
            cells += f" | {m['speedup']:.2f}× | {m['dense_bytes'] / m['pruned_bytes']:.1f}×"
        return cells

    return _network_table(result, lines, row)


def render_ddp(result: dict) -> list[str]:
    r = result["lenet5"]
    lines = [
        "## ddp",
        "",
        f"LeNet-5 at full width, Fashion-MNIST subset of {result['subset']}, {result['epochs']} "
        f"epochs, global batch {result['global_batch']}, {result['threads_per_process']} thread "
        f"per process, gloo, torch {result['torch']}, {result['machine']}, commit "
        f"{result.get('commit', 'unknown')} (`benchmarks/ddp.py`; median of "
        f"{len(r['runs']['1'])} interleaved runs each, all in the JSON).",
        "",
        "| processes | examples/s |",
        "|---|---|",
        f"| 1, no Lightning (`--strategy single`) | {r['single_process_examples_per_s']:.0f} |",
        f"| 1 (`--strategy ddp --devices 1`) | {r['examples_per_s']['1']:.0f} |",
        f"| 2 (`--strategy ddp --devices 2`) | {r['examples_per_s']['2']:.0f} |",
        "",
        f"2 processes over 1: {r['speedup_2_over_1']:.2f}× (target ≥ 1.6×).",
        "",
    ]
    ref = r.get("reference_plain_pytorch")
    if ref:
        lines += [
            "The ceiling on this machine: plain PyTorch (no gates, no Pyro), the same LeNet-5 and "
            "Adam, 1 process × batch 100 against 2 `DistributedDataParallel` processes × batch "
            f"50: {ref['examples_per_s']['1']:.0f} and {ref['examples_per_s']['2']:.0f} "
            f"examples/s, **{ref['speedup_2_over_1']:.2f}×**.",
            "",
        ]
    return lines


def render_step_cost(result: dict) -> list[str]:
    lines = [
        "## step_cost",
        "",
        f"One full-width training step, batch {result['batch_size']}, "
        f"{result['threads']} thread(s), torch {result['torch']}, {result['machine']}, commit "
        f"{result['commit']} (`benchmarks/step_cost.py`; medians of interleaved blocks in one "
        "process; targets: SVI ≤ 1.5× plain for the MLP, ≤ 1.3× for LeNet-5).",
        "",
        "| network | plain (ms) | SVI, fast ELBO (ms) | ratio | SVI, traced ELBO (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    return _network_table(
        result,
        lines,
        lambda c: (
            f"{c['plain_ms']:.2f} | {c['svi_ms']:.2f} | {c['svi_ratio']:.2f}× | "
            f"{c['svi_traced_ms']:.2f} | {c['svi_traced_ratio']:.2f}×"
        ),
    )


def theta_averaging(cfg: dict) -> str:
    """How a run averaged the θ evidence: per step (momentum, before issue 9) or per example."""
    if "theta_window" in cfg:
        # W_N of Eq. (10n) as the run used it (a run recorded before the cap: W)
        config = TrainConfig.from_dict({**PREDATING, **cfg})
        window = evidence_window(config, cfg.get("train_subset") or math.inf)
        return f"per example, evidence over {window:.0f} examples"
    return f"with momentum {cfg.get('theta_momentum', 0.9)} per step"


# group merge moves (Eq. (14j)) were off by default until they became ``auto``; matrix files
# written since record the default they ran under; under ``auto`` a group could take up to half
# a layer until Eq. (14x) capped it at the layer's excess, and files since record that too
GROUPS_DEFAULT_BEFORE = "off"
GROUP_CAP_BEFORE = "half"


def effective_overrides(overrides: dict | None, result: dict) -> dict:
    """A matrix run's ``--set`` overrides with the group-move setting it ran under made
    explicit: a file without ``merge_groups_default`` was written while the default was off,
    and one without ``group_cap_default`` while ``auto``'s groups went up to half a layer."""
    out = dict(overrides or {})
    out.setdefault("merge_groups", result.get("merge_groups_default", GROUPS_DEFAULT_BEFORE))
    if out["merge_groups"] == "auto":
        out.setdefault("group_cap", result.get("group_cap_default", GROUP_CAP_BEFORE))
    return out


def settle_ran(run: dict, overrides: dict | None) -> str:
    """What the final settle (Eq. (15)) was for a matrix run (its bayesprune summary): "off"
    for a run from before the settle existed (no ``settled``) or before it became the default
    (no ``settle_skipped``, no ``--set settle``); under ``auto`` a run whose budget left no
    layer out (``settle_skipped`` empty) and stopped no layer's passes (``settle_stopped``)
    was settled as under ``on``, and pools with it."""
    said = (overrides or {}).get("settle")
    if "settled" not in run or (said is None and "settle_skipped" not in run):
        return said or "off"
    ran = said or "auto"  # the default since the summaries say settle_skipped
    budget_bound = run.get("settle_skipped") or run.get("settle_stopped")
    return "on" if ran == "auto" and not budget_bound else ran


def group_words(ran: dict) -> str:
    """The group-move rule of a matrix file's runs (:func:`effective_overrides`) in words."""
    if ran["merge_groups"] != "auto":
        return ran["merge_groups"]
    if ran["group_cap"] == "excess":
        return "auto, down to inputs per unit + 1"
    return "auto, up to half a layer at once"


def override_words(overrides: dict) -> list[str]:
    """``key=value`` words for a script's ``--set`` that give back ``overrides`` (None as
    ``none``, which ``robustness_matrix.parse_overrides`` reads back as None)."""
    return [f"{k}={'none' if v is None else v}" for k, v in overrides.items()]


def matrix_command(name: str, result: dict) -> str:
    """The ``robustness_matrix.py`` command line that makes a file like ``result`` again: its
    cells, seeds, overrides and dense runs, read off the file (before, every table said the
    default command, which runs the whole matrix without the file's overrides and replaces
    ``robustness_matrix.json``)."""
    cases = list(dict.fromkeys(c["case"] for c in result["cells"]))
    seeds = sorted({c["seed"] for c in result["cells"]})
    words = [".venv/bin/python benchmarks/robustness_matrix.py", "--cells", *cases, "--seeds"]
    words += [str(s) for s in seeds]
    overrides = result.get("overrides") or {}
    if "merge_groups_default" not in result or "group_cap_default" not in result:
        overrides = effective_overrides(overrides, result)  # the defaults then, not today's
    if overrides:
        words += ["--set", *override_words(overrides)]
    source = str(result.get("dense_from", {}).get("file", ""))
    if source and (HERE.parent / source).is_file():
        words += ["--dense-from", source]
    elif source or not any(c.get("dense") for c in result["cells"]):
        # a dense source recorded in words, or one no longer there: the cells alone
        words.append("--no-dense")
    return " ".join([*words, "--name", name])


def render_matrix(name: str, result: dict) -> list[str]:
    """Table of the robustness matrix: every cell, dense against bayesprune, and the checks."""
    if "rerun" in result:
        rerun = f". {result['rerun']}"
    else:
        command = matrix_command(name, result)
        rerun = f". `{command}` reruns these cells on the current code" + (
            f" (its dense runs came from {result['dense_from']['file']})."
            if "dense_from" in result and "--dense-from" not in command
            else "."
        )
    lines = [
        f"## {name}",
        "",
        f"Default settings (overrides: {result['overrides'] or 'none'}; group merge moves "
        f"{group_words(effective_overrides(result['overrides'], result))}), 1 thread per run, "
        f"commit {result['commit']}, CPU {result.get('cpu', 'not recorded')}"
        + (f", dense runs from `{result['dense_from']['file']}`" if "dense_from" in result else "")
        + (f"; rule: {result['rule']}" if "rule" in result else "")
        + rerun,
        "",
        *([result["about"], ""] if result.get("about") else []),
        "| case | seed | τ | dense error (%) | bayesprune error (%) | gap (points) | widths "
        "| weights kept (%) | binary (%) | pruned in first 25% (%) | warm-up ends (step) "
        "| status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        d, b = c.get("dense"), c["bayesprune"]
        early = b.get("pruned_early_fraction")
        lines.append(
            f"| {c['case']} | {c['seed']} | {b['temperature']:.4f} | "
            + (f"{100 * d['test_error']:.2f} | " if d else "- | ")
            + f"{100 * b['test_error']:.2f} | "
            + (f"{100 * (b['test_error'] - d['test_error']):+.2f} | " if d else "- | ")
            + f"{'-'.join(map(str, b['widths']))} | {100 * b['weights_kept_fraction']:.1f} | "
            f"{100 * b['gates_binary_fraction']:.1f} | "
            + ("-" if early is None else f"{100 * early:.0f}")
            + f" | {b.get('warmup_step')} | {b['status']} |"
        )
    checks = result["checks"]
    gaps = ", ".join(f"{case} {gap:+.2f}" for case, gap in checks["gap_points"].items())
    no_gaps = "No dense runs in this file, so no gaps (run without --no-dense for them)."
    lines += ["", f"Mean gap to dense per case (points): {gaps}." if gaps else no_gaps]
    groups = (("batch_width_cv", "batch 32/100/256"), ("lr_width_cv", "lr 3e-4/1e-3/3e-3"))
    for key, label in groups:
        if key in checks:
            cvs = ", ".join(f"{100 * v:.1f}%" for v in checks[key])
            lines.append(f"Width CV per layer across {label}: {cvs} (target ≤ 20%).")
    if "size_widths" in checks:
        widths = " → ".join("-".join(f"{w:.0f}" for w in ws) for ws in checks["size_widths"])
        lines.append(
            f"Mean widths at N = 3k → 10k → 30k → 60k: {widths} "
            f"(non-decreasing within 10%: {'yes' if checks['size_non_decreasing'] else 'no'})."
        )
    lines.append(f"Collapsed or failed cells: {', '.join(checks['collapsed']) or 'none'}.")
    return lines + [""]


def render_teacher_widths(result: dict) -> list[str]:
    """benchmarks/teacher_widths.py: narrow dense students and bayesprune at three τ."""
    seeds = result["seeds"]
    lines = [
        "## teacher_widths",
        "",
        f"`benchmarks/teacher_widths.py`, teacher data (4 inputs, teacher 10-5, 20,000 "
        f"noise-free examples), seeds {', '.join(map(str, seeds))}, batch 100, Adam 1e-3, "
        f"commit {result['commit']}. Issue 9's target: widths within 2× of 10-5 (≤ 20-10) at "
        "≥ 95% accuracy. Error: mean over the seeds; widths per seed.",
        "",
        "| run | start | τ | epochs | final widths | test error (%) |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in result["runs"]:
        tau = r.get("temperature")
        key = (r["kind"], tuple(r["start"]), None if tau is None else round(tau, 4), r["epochs"])
        groups.setdefault(key, []).append(r)
    for (kind, start, tau, epochs), runs in groups.items():
        widths = " / ".join("-".join(map(str, r["widths"])) for r in runs)
        err = 100 * sum(r["test_error"] for r in runs) / len(runs)
        lines.append(
            f"| {kind} | {'-'.join(map(str, start))} | {'' if tau is None else tau} | "
            f"{epochs} | {widths} | {err:.2f} |"
        )
    return lines + [""]


def tic_cells(d: dict, key: str = "tic") -> str:
    """The TIC (``key="tic"``) or effective-parameter (``"dof"``) columns of an
    evidence_optimism row: the median estimate, its ratio to the median measured optimism and
    its correlation with the measured optimism over the layer's units."""
    if f"median_{key}" not in d:
        return " – | – |"  # a run recorded before the estimate existed
    corr = d.get(f"{key}_correlation")
    ratio = d[f"median_{key}"] / d["median_optimism"] if d["median_optimism"] else float("nan")
    return f" {d[f'median_{key}']:.2e} | {ratio:.1f}, {'–' if corr is None else f'{corr:.2f}'} |"


def render_kept_widths(name: str, result: dict) -> list[str]:
    """benchmarks/kept_widths.py: a gap to dense split into the kept width and the pruning."""
    lines = [
        f"## {name}",
        "",
        "`benchmarks/kept_widths.py`, the bayesprune runs of "
        f"`{Path(result['from']).name}` (commit {result.get('from_commit')}), dense networks "
        f"at commit {result['commit']}, {result.get('cpu', 'unknown CPU')}, 1 thread per run. "
        "Dense at the kept widths: a plain network of the widths bayesprune ended with, trained "
        "from scratch with the cell's recipe. Width part = dense at the kept widths − dense; "
        "pruning part = bayesprune − dense at the kept widths (points)."
        + (
            " Re-fitted: bayesprune's final network trained on for one evidence window, "
            "plain recipe (`--refit`)."
            if any("refit" in r for r in result["kept_widths"])
            else ""
        ),
        "",
        "| cell | seed | epochs | kept widths | dense (%) | dense at kept widths (%) "
        "| bayesprune (%) | gap | width part | pruning part | re-fitted (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["kept_widths"]:
        d, k, b = (100 * r[key] for key in ("dense", "dense_kept", "bayesprune"))
        refit = f"{100 * r['refit']:.2f}" if "refit" in r else "-"
        lines.append(
            f"| {r['case']} | {r['seed']} | {r['epochs']} | {'-'.join(map(str, r['widths']))} "
            f"| {d:.2f} | {k:.2f} | {b:.2f} | {b - d:+.2f} | {k - d:+.2f} | {b - k:+.2f} "
            f"| {refit} |"
        )
    return lines + [""]


def render_laplace_price(name: str, result: dict) -> list[str]:
    """benchmarks/laplace_price.py: the shipped size term of a unit's price against the Laplace
    one, per cell (docs/method.md §6zc) or per cell and gated layer (§6zj)."""
    per_layer = "gates" in result  # --layers: the posterior mode's gates, a row per layer
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/laplace_price.py`, layer {result['layer']}, commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}, 1 thread per run: after a default run, per live "
        "unit the shipped price's size term ½ n C (Eq. (4s)) and the Laplace term ½ Σ_k ln(1 + "
        "N σ₁² E[δ²] λ_k/τ) over the eigenvalues λ_k of the layer's input second moments "
        "(nats before tempering; 10% / 50% / 90% over the units); participation ratio "
        "(Σλ)²/Σλ² of the inputs; the weights' term ‖μ‖²/(2σ₁²) both prices share, and σ₁².",
        "",
    ]
    if per_layer:
        lines[-2] += (
            f" With the posterior mode's gates, on {result.get('examples') or 'all'} training "
            "examples (N the run's), convolutions Kronecker-factored over positions; *layer "
            "ratio*: Σ Laplace / Σ ½ n C over the layer's units, and (Σ Laplace + Σ ‖μ‖²/(2σ₁²)) "
            "/ (Σ ½ n C + Σ ‖μ‖²/(2σ₁²)), the layer's price under the Laplace form over the "
            "shipped one."
        )
    head = "| cell | seed | widths | error (%) | " + ("layer | " if per_layer else "")
    head += "fan-in | participation ratio | ½ n C | Laplace term | Laplace / ½ n C "
    head += "| ‖μ‖²/(2σ₁²) | σ₁² |" + (" layer ratio, size / with ‖μ‖² |" if per_layer else "")
    lines += [head, "|" + "---|" * head.count(" |")]
    for r in result["rows"]:
        lap = " / ".join(f"{v:.0f}" for v in r["laplace_term"])
        ratio = " / ".join(f"{v:.2f}" for v in r["ratio"])
        lines.append(
            f"| {r['case']} | {r['seed']} | {'-'.join(map(str, r['widths']))} "
            f"| {100 * r['test_error']:.2f} | "
            + (f"{r['layer']} | " if per_layer else "")
            + f"{r['fan_in']} | {r['participation_ratio']:.1f} "
            f"| {r['shipped_size_term']:.0f} | {lap} | {ratio} | "
            + (" / ".join(f"{v:.0f}" for v in r["weight_term"]) if "weight_term" in r else "-")
            + f" | {r['slab_var']:.2e} |"
            + (
                f" {r['layer_ratio']:.2f} / {r['layer_ratio_with_weights']:.2f} |"
                if per_layer
                else ""
            )
        )
    return lines + [""]


def coefficient_of_variation(widths: list[list[float]]) -> list[float]:
    """Per layer, the population standard deviation of ``widths`` (one row per run) over their
    mean: P3's and P6's measure of a spread of widths."""
    t = torch.tensor(widths, dtype=torch.float64)
    return (t.std(0, unbiased=False) / t.mean(0)).tolist()


def render_decision_time(name: str, result: dict) -> list[str]:
    """``decision_time.py``: an MLP's kept widths against the step at which θ may first move,
    per initialisation, seed and arm, and per arm the widths' spread over the initialisations."""
    runs = result["decision_time"]
    first = runs[0]
    inits = list(dict.fromkeys(run["init"] for run in runs))
    arms = list(dict.fromkeys(run["arm"] for run in runs))
    options = [
        ("--inits", inits),
        ("--seeds", list(dict.fromkeys(str(r["seed"]) for r in runs))),
        ("--arms", arms),
        *([("--widths", [",".join(map(str, first["initial_widths"]))])]
          if first.get("initial_widths", [300, 100]) != [300, 100] else []),
        *([("--train-subset", [str(first["train_subset"])])] if first["train_subset"] else []),
        *([("--dataset", [first["dataset"]])] if first["dataset"] != "fashion-mnist" else []),
        *([("--set", override_words(first["overrides"]))] if first["overrides"] else []),
    ]
    command = " ".join(f"{flag} {' '.join(values)}" for flag, values in options)
    lines = [
        f"## {name}",
        "",
        f"`.venv/bin/python benchmarks/decision_time.py {command} --name {name}`, "
        f"commit {result['commit']}, CPU {result['cpu']}, 1 thread "
        "(docs/method.md §6zzi): the default rule with the warm-up of Eq. (10w) as shipped "
        "(`rule`), ended at a fixed step (`at<STEP>`; `fresh<STEP>`: with θ's evidence "
        "averages emptied there) or never ended (`never`: no layer "
        "released; the final settle still runs). Removals per layer by gate collapse / merge "
        "move / final settle; the first layer's effective dimension at the end: the singular "
        "directions holding 90% of the energy of its weights and of its centred activations "
        "(5,000 training examples).",
        "",
        "| init | seed | arm | warm-up step | widths | weights kept (%) "
        "| test error (%) (before the settle) | removed in the first quarter (%) "
        "| removed: gates / merges / settle | first layer's directions: weights / activations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def percent(value) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for run in runs:
        before = run["before_settle"].get("test_error")
        removed = "; ".join(
            f"{layer} {r['gates']} / {r['merged']} / {r['settled']}"
            for layer, r in run["removed"].items()
        )
        dims = run["first_layer_directions"]
        lines.append(
            f"| {run['init']} | {run['seed']} | {run['arm']} | {run['warmup_step'] or '-'} "
            f"| {'-'.join(map(str, run['widths']))} | {percent(run.get('weights_kept_fraction'))} "
            f"| {100 * run['test_error']:.2f} ({'-' if before is None else f'{100 * before:.2f}'}) "
            f"| {percent(run.get('pruned_early_fraction'))} | {removed or '-'} "
            f"| {dims['weights']} / {dims['activations']} |"
        )
    if len(inits) > 1:
        lines += [
            "",
            "Per arm, each initialisation's mean widths over its seeds, and their coefficient of "
            "variation over the initialisations (P3's measure; its bound 20%):",
            "",
            "| arm | " + " | ".join(inits) + " | CV per layer (%) | mean test error (%) |",
            "|---|" + "---|" * len(inits) + "---|---|",
        ]
        for arm in arms:
            means = []
            for init in inits:
                widths = [r["widths"] for r in runs if r["arm"] == arm and r["init"] == init]
                means.append(torch.tensor(widths, dtype=torch.float64).mean(0).tolist())
            cv = [100 * c for c in coefficient_of_variation(means)]
            errors = [r["test_error"] for r in runs if r["arm"] == arm]
            lines.append(
                f"| {arm} | " + " | ".join("-".join(f"{w:.1f}" for w in m) for m in means)
                + f" | {' / '.join(f'{c:.1f}' for c in cv)} "
                f"| {100 * sum(errors) / len(errors):.2f} |"
            )
    traces = [run for run in runs if run["keep_trace"]]
    if traces:
        lines += [
            "",
            "`never` arm: units of each layer that θ's evidence favours keeping (m < 0) at full "
            "width, by step:",
            "",
        ]
        for run in traces:
            steps = ", ".join(
                f"{t['step']}: " + "/".join(str(v) for k, v in t.items() if k != "step")
                for t in run["keep_trace"]
            )
            lines.append(f"- {run['init']}, seed {run['seed']}: {steps}")
    return lines + [""]


def render_refit_value(name: str, result: dict) -> list[str]:
    """``refit_value.py``: per layer, a unit's value with its consumer fixed and re-wired."""
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/refit_value.py`, commit {result['commit']}, CPU {result['cpu']}, 1 "
        "thread: the default run's posterior-mode network; per gated layer and live unit, the "
        "mean cross-entropy's increase when the unit is switched off with its consumer fixed "
        "(Δ, what the gates' evidence measures) and with the consumer re-wired to read the "
        "unit's least-squares reconstruction from the layer's other live units and a constant "
        f"(Δ^lin), on {result['examples']} training examples and, with the same weights, on "
        "the test set; medians over the units, the ratio Δ/Δ^lin (median over the units and "
        "pooled, ΣΔ/ΣΔ^lin), and the pooled ratio over the other layers' "
        "(docs/method.md §6zj).",
        "",
        "| cell | widths, error (%) | layer → consumer | units | Δ train / test "
        "| Δ^lin train / test | Δ/Δ^lin median / pooled | Δ^lin ≤ 0 "
        "| pooled ratio over the other layers' |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["refit_value"]:
        label = f"{'-'.join(map(str, run['widths']))}, {100 * run['test_error']:.2f}"
        for layer, r in run["layers"].items():
            over = r.get("ratio_over_others")
            lines.append(
                f"| {run['case']} (seed {run['seed']}) | {label} | {layer} → {r['consumer']} "
                f"| {r['units']} | {r['fixed']:.1e} / {r['fixed_test']:.1e} "
                f"| {r['linear']:.1e} / {r['linear_test']:.1e} "
                f"| {r['ratio_linear_median']:.1f} / {r['ratio_linear_pooled']:.1f} "
                f"| {r['linear_at_or_below_zero']} | {'-' if over is None else f'{over:.2f}'} |"
            )
    return lines + [""]


def render_merge_power(name: str, result: dict) -> list[str]:
    """benchmarks/merge_power.py: per layer, what a single merge move's test could resolve
    (docs/method.md §6zg)."""
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/merge_power.py`, commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}, 1 thread per run: every single merge proposal of "
        "a default run, per layer: proposals and acceptances; how many would save more price "
        "(−ΔP) than the test's noise bound N z sd(d)/√n, i.e. could pass at no data cost; how "
        "many save nothing (ΔP ≥ 0, no sample can pass them); medians of −ΔP, of the bound "
        "(nats) and of their ratio.",
        "",
        "| cell | seed | N | widths | error (%) | layer | proposals | accepted "
        "| −ΔP > bound | ΔP ≥ 0 | −ΔP | bound | −ΔP / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["merge_power"]:
        for layer, s in r["layers"].items():
            lines.append(
                f"| {r['case']} | {r['seed']} | {r['num_data']} | "
                f"{'-'.join(map(str, r['widths']))} | {100 * r['test_error']:.2f} | {layer} "
                f"| {s['proposals']} | {s['accepted']} | {s['saving_above_bound']} "
                f"| {s['saving_not_positive']} | {s['median_saving']:.2f} "
                f"| {s['median_bound']:.2f} | {s['median_ratio']:.3f} |"
            )
    return lines + [""]


def render_probe_laplace(name: str, result: dict) -> list[str]:
    """The Laplace price probes (docs/method.md §6zc, §6zza): widths and errors."""
    lines = [f"## {name}", "", f"Commit {result['commit']}; {result['what']}", "",
             "| price | cell | seed | widths | error (%) | default: widths, error (%) "
             "| dense (%) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["runs"]:
        d = result["defaults_for_comparison"][r["case"]]
        lines.append(
            f"| {r['price']} | {r['case']} | {r['seed']} | {'-'.join(map(str, r['widths']))} "
            f"| {100 * r['test_error']:.2f} | {'-'.join(map(str, d['widths']))}, "
            f"{100 * d['test_error']:.2f} | {100 * d['dense']:.2f} |"
        )
    return lines + [""]


def render_probe_mup(name: str, result: dict) -> list[str]:
    """A probe's runs beside the recorded default runs of the same seeds, and the paired
    differences: the µP learning rates (docs/method.md §6zd), the gates at their means (§6zza),
    the evidence after a take-over (§6zzb)."""
    lines = [f"## {name}", "", f"Commit {result['commit']}; {result['what']}", "",
             "| mode | cell | seed | widths | error (%) | default: widths, error (%) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    defaults = result["recorded_default_runs"]
    for r in result["runs"]:
        d = defaults.get(f"{r['case']}/{r['seed']}")
        default = f"{'-'.join(map(str, d['widths']))}, {100 * d['test_error']:.2f}" if d else ""
        lines.append(
            f"| {r['mode']} | {r['case']} | {r['seed']} | {'-'.join(map(str, r['widths']))} "
            f"| {100 * r['test_error']:.2f} | {default} |"
        )
    lines += ["", "Probe minus default, paired by seed (points):", ""]
    for case, p in result["paired_with_default"].items():
        se = "" if p["standard_error"] is None else f" ± {p['standard_error']:.2f}"
        lines.append(f"- {case}: {p['paired_difference_points']:+.2f}{se} ({p['seeds']} seeds)")
    return lines + [""]


def render_matrix_summary(name: str, result: dict) -> list[str]:
    """benchmarks/matrix_summary.py: matrix runs pooled over seeds, and the issue's targets."""
    sources = ", ".join(
        f"`{Path(s['file']).name}` ({s['commit']}"
        + (", dense runs only)" if s.get("dense_only") else ")")
        for s in result["sources"]
    )
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/matrix_summary.py`: the runs of {sources}, each (cell, seed) once. Gap: "
        "bayesprune − dense (points), mean ± standard error over the seeds with a dense run; "
        "target: issue 9's (1.0 at 3,000 examples, 0.5 from 10,000 on). Widths: mean over the "
        "seeds (range).",
        "",
        "| cell | seeds | gap (seeds with dense) | target | widths | weights kept (%) "
        "| not finished |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, row in result["matrix_summary"].items():
        gap = "–"
        if "gap_mean" in row:
            gap = f"{row['gap_mean']:+.2f}" + (
                "" if row["gap_se"] is None else f" ± {row['gap_se']:.2f}"
            ) + f" ({len(row['gaps'])})"
        target = row.get("gap_target")
        verdict = "–" if target is None else f"{target} ({'met' if row['gap_met'] else 'missed'})"
        widths = "-".join(
            f"{m:.1f} ({lo}-{hi})"
            for m, lo, hi in zip(
                row["widths_mean"], row["widths_min"], row["widths_max"], strict=True
            )
        )
        low, high = (100 * f for f in row["weights_kept_range"])
        seeds = row["seeds"]
        span = f"{len(seeds)} ({min(seeds)}-{max(seeds)})"
        lines.append(
            f"| {case} | {span} | {gap} | {verdict} | {widths} | {low:.1f}-{high:.1f} "
            f"| {', '.join(map(str, row['not_finished'])) or 'none'} |"
        )
    c = result["checks"]
    notes = []
    for axis in ("batch", "lr"):
        if f"{axis}_width_cv" in c:
            cvs = " / ".join(f"{100 * v:.1f}%" for v in c[f"{axis}_width_cv"])
            what = "batch sizes" if axis == "batch" else "learning rates"
            notes.append(f"width CV across {what} {cvs} (target 20%)")
    if "size_non_decreasing" in c:
        widths = " → ".join("-".join(f"{w:.1f}" for w in ws) for ws in c["size_widths"])
        verdict = "yes" if c["size_non_decreasing"] else "no"
        notes.append(f"widths in N {widths}: non-decreasing (10% tolerance) {verdict}")
    if notes:
        lines += ["", "; ".join(notes) + "."]
    return lines + [""]


def render_tradeoff(name: str, result: dict) -> list[str]:
    """benchmarks/tradeoff.py: error against weights kept, τ swept, and two baselines."""
    r = result["recipe"]
    dense = [100 * d["test_error"] for d in result["dense"]]
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/tradeoff.py --case {result['case']}` ({r['epochs']} epochs, batch "
        f"{r['batch_size']}, Adam lr {r['lr']}, {r['schedule']} rate; seeds "
        f"{', '.join(map(str, result['seeds']))}), commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}, 1 thread per run; plot `{name}.png`. bayesprune at "
        "τ = s·τ(N); *dense at kept widths*: a fresh network of bayesprune's widths trained from "
        "scratch; *magnitude*: the dense network trained for half the epochs, cut to the same "
        "widths by group L2 norm, fine-tuned for the other half. Dense (full width): "
        f"{', '.join(f'{d:.2f}' for d in dense)}% (mean {sum(dense) / len(dense):.2f}%).",
        "",
        "| s | τ | seed | widths | weights kept (%) | bayesprune (%) | dense at kept widths (%) "
        "| magnitude + fine-tune (%) | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(result["rows"], key=lambda row: (row["scale"], row["seed"])):
        lines.append(
            f"| {row['scale']:g} | {row['temperature']:.4f} | {row['seed']} | "
            f"{'-'.join(map(str, row['widths']))} | {100 * row['weights_kept_fraction']:.1f} | "
            f"{100 * row['bayesprune_error']:.2f} | {100 * row['dense_kept_error']:.2f} | "
            f"{100 * row['magnitude_error']:.2f} | {row['status']} |"
        )
    lines += ["", "Means per s (points against the full dense network's mean):", ""]
    lines += ["| s | weights kept (%) | bayesprune | dense at kept widths | magnitude |",
              "|---|---|---|---|---|"]  # fmt: skip
    base = sum(dense) / len(dense)
    for scale in result["scales"]:
        sel = [row for row in result["rows"] if row["scale"] == scale]

        def mean(key, sel=sel):
            return 100 * sum(row[key] for row in sel) / len(sel)

        lines.append(
            f"| {scale:g} | {mean('weights_kept_fraction'):.1f} | "
            f"{mean('bayesprune_error') - base:+.2f} | {mean('dense_kept_error') - base:+.2f} | "
            f"{mean('magnitude_error') - base:+.2f} |"
        )
    return lines + [""]


def render_evidence_optimism(result: dict, name: str = "evidence_optimism") -> list[str]:
    """benchmarks/evidence_optimism.py: kept units' value on training vs test data, and price."""
    overrides = result["runs"][0].get("overrides") or {}
    rule = ("the shipped rule with " + ", ".join(f"{k}={v}" for k, v in overrides.items())
            if overrides else "the shipped rule")  # fmt: skip
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/evidence_optimism.py`, Fashion-MNIST, LeNet-300-100, {rule}, "
        f"commit {result['commit']}, {result.get('cpu', 'unknown CPU')}. Per kept unit of the "
        "posterior-mode network: its value (loss increase per example when its output is 0) on "
        "the N training examples and on the test set, and its price τ KL_s / N; medians over "
        "the layer's kept units (nats per example), and how many kept units' value is below "
        "their price; TIC: a Takeuchi estimate of the optimism (the script's doc) and its "
        "correlation with the measured one over the layer's units; γ/N: the unit's effective "
        "number of parameters (MacKay's well-determined parameters, Moody's p_eff) per "
        "example, the same estimate with the Hessian in place of J and the untempered prior; "
        "kept by γ: units with value, train − γ/N above the price, and of them how many the "
        "test set keeps too.",
        "",
        "| N | seed | widths | test error (%) | layer | value, train | value, test | optimism "
        "| price | optimism / price | below price: train / test | TIC | TIC / optimism, corr. "
        "| γ/N | γ / optimism, corr. | kept by γ (of them by test) / by test |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for name, d in run["digest"].items():
            ratio = d["median_optimism"] / d["median_price"] if d["median_price"] else float("nan")
            lines.append(
                f"| {run['size']} | {run['seed']} | {'-'.join(map(str, run['widths']))} | "
                f"{100 * run['test_error']:.2f} | {name} | {d['median_value_train']:.2e} | "
                f"{d['median_value_test']:.2e} | {d['median_optimism']:.2e} | "
                f"{d['median_price']:.2e} | {ratio:.1f} | {d['train_below_price']} / "
                f"{d['test_below_price']} of {d['units']} |{tic_cells(d)}{tic_cells(d, 'dof')}"
                + (f" {d['dof_kept']} ({d['dof_kept_agree']}) / {d['test_kept']} |"
                   if "dof_kept" in d else " – |")
            )
    return lines + [""]


def render_release_state(result: dict) -> list[str]:
    """benchmarks/release_state.py: the second layer at the step its θ is released."""
    lines = [
        "## release_state",
        "",
        "`benchmarks/release_state.py`: LeNet-300-100 on full Fashion-MNIST, the shipped rule, "
        f"1 thread, commit {result['commit']}, {result.get('cpu', 'unknown CPU')}. At the step "
        "the second layer's θ is released: its units whose evidence m > 0 (θ heading for 0), "
        "the median price τ KL_s / N (every live first-layer input counted, Eq. (4c)) and value "
        "(price − m) per example, and the price counting only the first-layer units whose own "
        "evidence favours keeping them (a gate-side Eq. (14e)).",
        "",
        "| start | batch | seed | release step | fc2 units | m > 0 | price | value "
        "| fc2 active on < 1% | fc1 units keeping | price at those | below it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| ×{r['mult']:g} | {r['batch_size']} | {r['seed']} | {r['release_step']} | "
            f"{r['fc2_width']} | {r['fc2_leaving']} | {r['fc2_price_median']:.2e} | "
            f"{r['fc2_value_median']:.2e} | {r['fc2_rare']} | {r['fc1_keeping']} of "
            f"{r['fc1_width']} | {r['fc2_price_at_keeping_median']:.2e} | "
            f"{r['fc2_below_price_at_keeping']} |"
        )
    return lines + [""]


def render_joint_value(name: str, result: dict) -> list[str]:
    """benchmarks/joint_value.py: the units a removal took out, alone and together."""
    r = result
    return [
        f"## {name}",
        "",
        f"`benchmarks/joint_value.py`: run `{Path(r['run']).name}` (final widths "
        f"{'-'.join(map(str, r['final_widths']))}, test error {100 * r['test_error']:.2f}%) at "
        f"its epoch-{r['epoch']} checkpoint (step {r['step']}, widths "
        f"{'-'.join(map(str, r['widths']))}), before {r['layer']}'s θ moved; the "
        f"{r['removed']} {r['layer']} units the run removed at step {r['removed_at_step']}, "
        f"switched off on {r['examples']:,} training examples with every gate at its posterior "
        f"mode; commit {r['commit']}, {r.get('cpu', 'unknown CPU')}, 1 thread. Nats per "
        "example; a unit's price is 4.8e-7 (60,000 / N)^½ per live weight it owns or feeds, "
        f"against the {r['consumer']} units on at the checkpoint and at the end.",
        "",
        "| data term | removed: each alone (median) | removed: each alone (sum) | removed: "
        "together | kept: each alone (median) | price per unit (checkpoint / end) |",
        "|---|---|---|---|---|---|",
        f"| {r['data_term']:.4f} | {r['own_removed_median']:.2e} | {r['own_removed_sum']:.4f} | "
        f"**{r['joint_removed']:.4f}** | {r['own_kept_median']:.2e} | "
        f"{r['price_per_unit']:.2e} / {r['price_per_unit_at_final_consumer']:.2e} |",
        "",
    ]


def render_profile_value(result: dict) -> list[str]:
    """benchmarks/profile_value.py: each unit's merge move measured on 30,000 examples."""
    lines = [
        "## profile_value",
        "",
        "`benchmarks/profile_value.py`: LeNet-300-100 on full Fashion-MNIST, the shipped rule, "
        f"10 epochs, 1 thread, commit {result['commit']}, {result.get('cpu', 'unknown CPU')}. "
        "On the final network, every live unit's merge move (Eq. (14): the consumer re-wired to "
        "the unit's linear reconstruction, fitted on 30,000 training examples) measured on the "
        "other 30,000: the median price and profile cost (quantiles 10/50/90%) in nats per "
        "example, the moves that lower F on that mean, those the merge test accepts (z = 2.28) "
        "with a round's 2,048 held-out examples and with 30,000, and the median price in "
        "standard errors of a mean over the whole training set. Nothing is accepted.",
        "",
        "| start | batch | lr | seed | widths | test error (%) | layer | units | price "
        "| profile cost | lower F | accepted, 2,048 | accepted, 30,000 | price / se |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        for name, v in r["layers"].items():
            cost = " / ".join(f"{c:.1e}" for c in v["cost_q10_q50_q90"])
            lines.append(
                f"| ×{r['mult']:g} | {r['batch_size']} | {r['lr']:g} | {r['seed']} | "
                f"{'-'.join(map(str, r['widths']))} | {100 * r['test_error']:.2f} | {name} | "
                f"{v['units']} | {v['price_median']:.1e} | {cost} | {v['lower_F']} | "
                f"{v['accepted_2048']} | {v['accepted_30000']} | "
                f"{v['price_in_se_median']:.2f} |"
            )
    return lines + [""]


def _sweep_means(runs: list[dict]) -> str:
    """Table cells of a width sweep's row: mean data term, test error (%) and objective."""
    n = len(runs)
    return (
        f"{sum(r['train_data_term'] for r in runs) / n:.4f} | "
        f"{100 * sum(r['test_error'] for r in runs) / n:.2f} | "
        f"{sum(r['objective'] for r in runs) / n:.4f}"
    )


def render_second_layer_widths(name: str, result: dict) -> list[str]:
    """benchmarks/second_layer_widths.py: dense networks of each hidden width."""
    runs = result["runs"]
    seeds = sorted({r["seed"] for r in runs})
    subset = result.get("train_subset")
    where = "full Fashion-MNIST" if subset is None else f"{subset:,} Fashion-MNIST examples"
    if result.get("dataset") == "teacher":
        where = "the demo's 20,000 teacher examples"
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/second_layer_widths.py`: dense two-hidden-layer networks on {where} "
        f"(Adam {result.get('lr', 1e-3):g}, batch {result.get('batch_size', 100)}, "
        f"{result['epochs']} epochs, 1 thread), "
        f"commit {result['commit']}, {result.get('cpu', 'unknown CPU')}. Mean over seeds "
        f"{', '.join(map(str, seeds))}: the final training data term (nats per example, all "
        "training examples), the test error, and the objective per example, data term + "
        f"{result['price']:.2e} × the hidden layers' live weights (a weight's price at τ(N), "
        "from profile_value.py's unit prices at 60,000); the last column counts the seeds "
        "whose objective is lowest at that width among the rows that vary the same layer.",
        "",
        "| widths | data term | test error (%) | objective | lowest for seeds |",
        "|---|---|---|---|---|",
    ]
    shapes = sorted({(r["fc1"], r["fc2"]) for r in runs})
    at1, at2 = result.get("fc1_at", 85), result.get("fc2_at", 90)
    ends = (4, 3) if result.get("dataset") == "teacher" else (784, 10)  # inputs, classes
    groups = {"fc2": [s for s in shapes if s[0] == at1], "fc1": [s for s in shapes if s[1] == at2]}
    best: dict[tuple, int] = {}
    for layer, group in groups.items():
        for seed in seeds:
            mine = [r for r in runs if r["seed"] == seed and (r["fc1"], r["fc2"]) in group]
            if mine:
                top = min(mine, key=lambda r: r["objective"])
                key = (layer, top["fc1"], top["fc2"])
                best[key] = best.get(key, 0) + 1
    for layer, group in groups.items():
        for shape in group:
            mine = [r for r in runs if (r["fc1"], r["fc2"]) == shape]
            wins = best.get((layer, *shape), 0)
            lines.append(
                f"| {ends[0]}-{shape[0]}-{shape[1]}-{ends[1]} | {_sweep_means(mine)} | "
                f"{wins} of {len(seeds)} |"
            )
    return lines + [""]


def _lenet5_groups(runs: list[dict], center: tuple):
    """(index, name, shapes) per LeNet-5 layer: the shapes that move only that layer from
    ``center`` (the centre included), ordered by its width."""
    for layer, name in enumerate(("conv1", "conv2", "fc1")):
        others = [i for i in range(3) if i != layer]
        group = sorted(
            {tuple(r["widths"]) for r in runs if all(r["widths"][i] == center[i] for i in others)},
            key=lambda shape: shape[layer],
        )
        yield layer, name, group


def render_lenet5_widths(name: str, result: dict) -> list[str]:
    """benchmarks/lenet5_widths.py: dense LeNet-5s of each width, one layer moved at a time."""
    runs, center = result["runs"], tuple(result["center"])
    seeds = sorted({r["seed"] for r in runs})
    subset = result.get("train_subset")
    where = "full Fashion-MNIST" if subset is None else f"{subset:,} Fashion-MNIST examples"
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/lenet5_widths.py`: dense LeNet-5s on {where} (Adam 1e-3, batch 100, "
        f"{result['epochs']} epochs, 1 thread), commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}. Around {'-'.join(map(str, center))} "
        "(conv1-conv2-fc1), one layer moved at a time; mean over seeds "
        f"{', '.join(map(str, seeds))}: the final training data term, the test error, and the "
        f"objective per example, data term + {result['price']:.2e} × the gated layers' "
        "weights; the last column counts the seeds whose objective is lowest at that width "
        "among the rows that move the same layer (the centre belongs to all three).",
        "",
        "| layer moved | widths | data term | test error (%) | objective | lowest for seeds |",
        "|---|---|---|---|---|---|",
    ]
    for _, name, group in _lenet5_groups(runs, center):
        wins: dict[tuple, int] = {}
        for seed in seeds:
            mine = [r for r in runs if r["seed"] == seed and tuple(r["widths"]) in group]
            top = tuple(min(mine, key=lambda r: r["objective"])["widths"])
            wins[top] = wins.get(top, 0) + 1
        for shape in group:
            mine = [r for r in runs if tuple(r["widths"]) == shape]
            lines.append(
                f"| {name} | {'-'.join(map(str, shape))} | {_sweep_means(mine)} | "
                f"{wins.get(shape, 0)} of {len(seeds)} |"
            )
    return lines + [""] + _lenet5_curves(result, center, seeds)


def _lenet5_curves(result: dict, center: tuple, seeds: list[int]) -> list[str]:
    """The objective per example after each step of ``--at``, per layer moved (mean over
    seeds), and the width each seed's objective is lowest at."""
    if not result.get("at"):
        return []
    runs, price = result["runs"], result["price"]
    objective = {  # (shape, seed, step) -> data term after the step + price × weights
        (tuple(r["widths"]), r["seed"], c["step"]): c["train_data_term"]
        + price * r["gated_weights"]
        for r in runs
        for c in r["curve"]
    }
    lines = [
        f"Objective per example over training (data term on all training examples after each "
        f"step + {price:.2e} × weights; mean over seeds), and the width where it is lowest, "
        "per seed.",
        "",
    ]
    for layer, name, group in _lenet5_groups(runs, center):
        if len(group) < 2:
            continue
        widths = [shape[layer] for shape in group]
        lines += [
            f"| {name}: step | " + " | ".join(f"{w}" for w in widths) + " | lowest, per seed |",
            "|---|" + "---|" * (len(widths) + 1),
        ]
        for step in result["at"]:
            means = [sum(objective[shape, s, step] for s in seeds) / len(seeds) for shape in group]
            lowest = [
                min(group, key=lambda shape, s=s: objective[shape, s, step])[layer] for s in seeds
            ]
            lines.append(
                f"| {step} | "
                + " | ".join(f"{m:.4f}" for m in means)
                + f" | {', '.join(map(str, lowest))} |"
            )
        lines.append("")
    return lines


def render_survivors(name: str, result: dict) -> list[str]:
    """benchmarks/survivors.py: the kept units' evidence, and the last hidden layer's values."""

    def q(values, fmt="{:.2g}"):
        return " / ".join(fmt.format(v) for v in values)

    def run_label(run):
        data = run.get("dataset", "fashion-mnist")  # (files from before --dataset)
        return f"{run['arch']} seed {run['seed']}, {data}, N = {run['train_subset'] or 'all'}"

    lines = [
        f"## {name}",
        "",
        "`benchmarks/survivors.py`: after a finished run, commit "
        f"{result['commit']}, {result.get('cpu', 'unknown CPU')}, 1 thread. Per gated layer: the "
        "live units, how many cost more than their price on the point estimate (m > 0), m/se "
        "(10% / 50% / 90%; a unit is decided at |m/se| ≥ 2), m = price − value and the price "
        "(nats per example, 10% / 50% / 90%; files from before the price have none). Last "
        "hidden layer: each unit's "
        "value alone (loss increase per example with its output 0) on the training and test "
        "examples, against its price (10% / 50% / 90%).",
        "",
        "| run | layer | live | m > 0 | within 2 se | m/se | m | price |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["survivors"]:
        label = (run_label(run) + (f", {run['overrides']}" if run["overrides"] else "")
                 + f": {'-'.join(map(str, run['widths']))}, {100 * run['test_error']:.2f}%")
        for layer, row in run["layers"].items():
            price = q(row["price"]) if "price" in row else "–"
            lines.append(f"| {label} | {layer} | {row['live']} | {row['costly']} | "
                         f"{row['within_2se']} | {q(row['m_over_se'], '{:.1f}')} | "
                         f"{q(row['m'])} | {price} |")
            label = ""
    lines += [
        "",
        "| run | last hidden layer | units | price | value, train | value, test | below price "
        "(train / test) | test value < 0 | optimism / price (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["survivors"]:
        last = run["last_hidden"]
        lines.append(
            f"| {run_label(run)} | {last['layer']} | {last['units']} | {q(last['price'])} | "
            f"{q(last['value_train'])} | {q(last['value_test'])} | "
            f"{last['below_price_train']} / {last['below_price_test']} | "
            f"{last['negative_test']} | {last['optimism_over_price']:.1f} |"
        )
    firsts = [run for run in result["survivors"] if "first_layer" in run]
    if firsts:  # --first-layer (docs/method.md §6zze)
        lines += [
            "",
            "First hidden layer (`--first-layer`): each live unit's value alone on 20,000 training "
            "examples and on the test examples, the value θ's evidence gives it (price − m), "
            "their correlation over the units, and the units the evidence keeps (m < 0) whose "
            "value alone on the training examples is below their price.",
            "",
            "| run | layer | units | price | value, train | value, test | value, evidence | "
            "below price (train / test) | kept below price | correlation |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in firsts:
            first = run["first_layer"]
            label = (run_label(run) + (f", {run['overrides']}" if run["overrides"] else "")
                     + f": {'-'.join(map(str, run['widths']))}")
            lines.append(
                f"| {label} | {first['layer']} | {first['units']} | {q(first['price'])} | "
                f"{q(first['value_train'])} | {q(first['value_test'])} | "
                f"{q(first['value_evidence'])} | "
                f"{first['below_price_train']} / {first['below_price_test']} | "
                f"{first['kept_below_price_train']} | {first['evidence_train_corr']:.2f} |"
            )
    return lines + [""]


def render_width_temperature(result: dict, name: str = "width_temperature") -> list[str]:
    """benchmarks/width_temperature.py: the widths against Adam's noise temperature lr/√B."""
    lines = [
        f"## {name}",
        "",
        "`benchmarks/width_temperature.py`: LeNet-300-100 on Fashion-MNIST, 10 epochs, the "
        f"matrix's recipe at other batch sizes and rates, commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}, 1 thread; mean over seeds "
        f"{result['settings'][0]['seeds']}. T = lr/√batch. Plot: `{name}.png`.",
        "",
        "| batch | lr | T | fc1 | fc2 | test error (%) |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(result["settings"], key=lambda s: s["temperature"]):
        lines.append(
            f"| {s['batch']} | {s['lr']:g} | {s['temperature']:.2e} | {s['widths'][0]:.1f} | "
            f"{s['widths'][1]:.1f} | {100 * s['test_error']:.2f} |"
        )
    fits = "; ".join(
        f"{name} {f['intercept'] + f['per_doubling'] * math.log2(1e-4):.1f} units at T = 1e-4, "
        f"{f['per_doubling']:+.1f} per doubling of T (R² {f['r2']:.2f})"
        for name, f in result["fits"].items()
    )
    return lines + ["", f"Least-squares lines over the settings' means: {fits}.", ""]


def render_lr_units(result: dict, name: str = "lr_units") -> list[str]:
    """benchmarks/lr_units.py: the units a dense network uses at each learning rate."""
    price = result["prices"]
    batch = result["runs"][0].get("batch_size", 100)
    widths = "-".join(map(str, result["runs"][0].get("widths", (300, 100))))
    optimizer = optimizer_words(result["runs"][0])  # its runs keep SGD's momentum at 0.9
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/lr_units.py`: dense {widths} MLP on Fashion-MNIST (batch {batch}, "
        f"{optimizer}, 10 "
        f"epochs, 1 thread), commit {result['commit']}, {result.get('cpu', 'unknown CPU')}. At "
        "three steps, per hidden layer, the units whose value (loss increase on 10,000 "
        "training examples when the unit's output is 0) exceeds a bayesprune unit's price at "
        f"60,000 examples (fc1 {price['fc1']:.2e}, fc2 {price['fc2']:.2e} nats per example), "
        "the second layer's count by the secant estimate of Eq. (9s), and the units active on "
        "fewer than 1% of the examples. Steps are those of batch 100 (the same examples seen).",
        "",
        "| lr | seed | test error (%) | step | train loss | fc1 above price | fc1 rare "
        "| fc2 above price (secant) | fc2 rare |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for step, c in run["checks"].items():
            lines.append(
                f"| {run['lr']:g} | {run['seed']} | {100 * run['test_error']:.2f} | {step} | "
                f"{c['train_loss']:.3f} | {c['fc1_above_price']} | {c['fc1_rare']} | "
                f"{c['fc2_above_price']} ({c['fc2_above_price_secant']}) | {c['fc2_rare']} |"
            )
    cvs = ", ".join(
        f"{k.replace('_above_price_cv_at_', ' at step ')} {100 * v:.1f}%"
        for k, v in result["summary"].items()
    )
    return lines + ["", f"CV across the rates of the mean count (2 seeds): {cvs}.", ""]


def render_robustness(name: str, result: dict) -> list[str]:
    """Table of a robustness sweep (P3): final widths per run and their spread per group."""
    cfg = result["config"]
    lines = [
        f"## {name}",
        "",
        ("LeNet-5, " if result.get("arch") == "lenet5" else "")
        + f"{cfg['epochs']} epochs, posterior {cfg.get('posterior', 'structured')}, "
        f"{temperature_words(cfg)}, estimator {cfg['estimator']}, "
        f"θ step {cfg['lr_theta']} {theta_averaging(cfg)}, "
        + (f"{cfg['train_subset']} training examples (each seed its own subset), "
           if cfg.get("train_subset") else "")
        + (f"{result['threads']} thread(s), {result['cpu']}, " if "threads" in result else "")
        + f"commit {result.get('commit', 'unknown')}.",
        "P3 asks for a coefficient of variation of the final widths ≤ 10% across seeds and ≤ 20%",
        "across starting widths and initialisations.",
        "",
        "| group | run | start widths | final widths | test error (%) | weights kept (%) |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['group']} | {run['label']} | {'-'.join(map(str, run['initial_widths']))} | "
            f"{'-'.join(map(str, run['widths']))} | {100 * run['test_error']:.2f} | "
            f"{100 * run['weights_kept_fraction']:.1f} |"
        )
    lines += [
        "",
        "| group | CV of final widths per layer | max CV | P3 bound |",
        "|---|---|---|---|",
    ]
    for group, stats in result["spread"].items():
        cvs = ", ".join(f"{100 * c:.1f}%" for c in stats["cv"])
        lines.append(
            f"| {group} | {cvs} | {100 * max(stats['cv']):.1f}% | {100 * stats['bound']:.0f}% |"
        )
    return lines + [""]


def render_seeds(name: str, result: dict) -> list[str]:
    """Table of a seed sweep: dense and bayesprune test error per seed, and the mean gap."""
    cfg = result["config"]
    lines = [
        f"## {name}",
        "",
        f"{result['arch']}, {cfg['epochs']} epochs, posterior {cfg['posterior']}, "
        f"{temperature_words(cfg)}, {result['threads']} thread(s), "
        f"commit {result['commit']}.",
        "",
        "| seed | dense test error (%) | bayesprune test error (%) | gap (points) | architecture "
        "| weights kept (%) | binary gates (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        d, b = run["dense"], run["bayesprune"]
        lines.append(
            f"| {run['seed']} | {100 * d['test_error']:.2f} | {100 * b['test_error']:.2f} | "
            f"{100 * (b['test_error'] - d['test_error']):+.2f} | {b['architecture']} | "
            f"{100 * b['weights_kept_fraction']:.1f} | {100 * b['gates_binary_fraction']:.1f} |"
        )
    mean = result["mean_test_error"]
    lines += [
        "",
        f"Mean test error: dense {100 * mean['dense']:.2f}%, bayesprune "
        f"{100 * mean['bayesprune']:.2f}%; mean gap {result['mean_gap_points']:+.2f} points "
        "(target: within 0.3).",
        "",
    ]
    return lines


def render_l0_baseline(name: str, result: dict) -> list[str]:
    """benchmarks/l0_baseline.py: L0 hard-concrete gates per (λ, gate lr) and cell, beside
    bayesprune's runs of the same cells and seeds, and both methods' widths along the
    matrix's axes (CV across batch and learning rate; widths in N)."""
    if str(HERE) not in sys.path:  # common imported by path (the tests): its sibling too
        sys.path.insert(0, str(HERE))
    from robustness_matrix import BATCH_GROUP, LR_GROUP, SIZE_GROUP, cv, non_decreasing

    rows = result["rows"]
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/l0_baseline.py --cells {' '.join(result['cells'])} --seeds "
        f"{' '.join(map(str, result['seeds']))} --lambdas {' '.join(map(str, result['lambdas']))} "
        f"--gate-lrs {' '.join(map(str, result['gate_lrs']))}`, commit {result['commit']}, "
        f"{result.get('cpu', 'unknown CPU')}, {result['threads']} thread per run. Structured L0 "
        "(Louizos et al. 2018): a hard-concrete gate per hidden unit, penalty λ/N per expected "
        "nonzero weight (each weight counted once), the dense recipe of the cell otherwise (10 "
        "epochs, not the paper's 200); test-time gates clip(σ(log α)·1.2 − 0.1, 0, 1), units "
        "at 0 removed. *Reach*: the gates' learning rate × steps; below 2.4 Adam cannot take a "
        "gate from log α = 0 to closed, whatever λ. Gaps in points against the dense run of "
        "the same cell and seed (the same initialisation and batches).",
        "",
        "| cell | λ | gate lr | seed | reach | widths | weights kept (%) | L0 error (%) "
        "| sampled gates (%) | dense (%) | gap | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["case"], r["lambda"], r["gate_lr"], r["seed"])):
        lines.append(
            f"| {r['case']} | {r['lambda']:g} | {r['gate_lr']:g} | {r['seed']} | "
            f"{r['gate_reach']:.1f} | {'-'.join(map(str, r['widths']))} | "
            f"{100 * r['weights_kept_fraction']:.1f} | {100 * r['test_error']:.2f} | "
            + (f"{100 * r['sampled_gates_error']:.2f}" if "sampled_gates_error" in r else "-")
            + f" | {100 * r['dense_error']:.2f} | "
            f"{100 * (r['test_error'] - r['dense_error']):+.2f} | {r['status']} |"
        )

    def means(sel: list[dict]) -> tuple[list[float], float, float | None]:
        widths = [sum(r["widths"][i] for r in sel) / len(sel) for i in range(len(sel[0]["widths"]))]
        kept = 100 * sum(r["weights_kept_fraction"] for r in sel) / len(sel)
        paired = [r for r in sel if r.get("dense_error") is not None]
        gap = (100 * sum(r["test_error"] - r["dense_error"] for r in paired) / len(paired)
               if paired else None)  # fmt: skip
        return widths, kept, gap

    settings = sorted({(r["lambda"], r["gate_lr"]) for r in rows})
    methods = [(f"L0 λ {lam:g}, gate lr {glr:g}",
                [r for r in rows if (r["lambda"], r["gate_lr"]) == (lam, glr)])
               for lam, glr in settings]  # fmt: skip
    if result.get("bayesprune"):
        methods.append(("bayesprune (default)", result["bayesprune"]))
    lines += ["", "Means over the seeds (collapsed runs included, at their widths of 0 and "
              "their error):", "",
              "| method | cell | seeds | widths | weights kept (%) | gap | collapsed |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    axes: list[str] = []
    for label, sel in methods:
        by_case: dict = {}
        for case in result["cells"]:
            runs = [r for r in sel if r["case"] == case]
            if not runs:
                continue
            widths, kept, gap = means(runs)
            by_case[case] = widths
            lines.append(
                f"| {label} | {case} | {len(runs)} | {'-'.join(f'{w:.0f}' for w in widths)} | "
                f"{kept:.1f} | {'-' if gap is None else f'{gap:+.2f}'} | "
                f"{sum(r.get('status', 'finished') != 'finished' for r in runs)} |"
            )
        parts = []
        for axis, group in (("batch", BATCH_GROUP), ("lr", LR_GROUP)):
            if all(c in by_case for c in group):
                layers = range(len(by_case[group[0]]))
                cvs = [cv([by_case[c][i] for c in group]) if max(by_case[c][i] for c in group)
                       else float("nan") for i in layers]  # fmt: skip
                parts.append(f"width CV across {axis} " + " / ".join(
                    "n/a (every width 0)" if math.isnan(v) else f"{100 * v:.1f}%" for v in cvs))
        if all(c in by_case for c in SIZE_GROUP):
            sizes = [by_case[c] for c in SIZE_GROUP]
            trend = "non-decreasing" if non_decreasing(sizes) else "not non-decreasing"
            parts.append("widths in N " + " → ".join(
                "-".join(f"{w:.0f}" for w in s) for s in sizes) + f" ({trend})")
        if parts:
            axes.append(f"- {label}: " + "; ".join(parts) + ".")
    if axes:
        lines += ["", "Along the matrix's axes (issue 9: CV ≤ 20%, widths non-decreasing in N):",
                  "", *axes]  # fmt: skip
    return lines + [""]


def render_l0_summary(name: str, result: dict) -> list[str]:
    """benchmarks/l0_baseline.py --summarise: per cell, L0's curve (gap against weights kept,
    one point per λ) and bayesprune's point over the same seeds, and L0's gap at
    bayesprune's size."""
    lines = [
        f"## {name}",
        "",
        f"`benchmarks/l0_baseline.py --summarise {' '.join(result['from'])} --seeds "
        f"{' '.join(map(str, result['seeds']))}` (figure `{result['figure']}`), commit "
        f"{result['commit']}: L0's runs at gate lr {result['gate_lr']:g} and bayesprune's of "
        "these seeds, each run once; a λ's point is the mean over the seeds (none where a run "
        "collapsed); *L0 at bayesprune's size*: linear in log(weights kept) between the two λ "
        "that bracket bayesprune's mean size, both over the same seeds as bayesprune's; *seed "
        "by seed*: the same read for each seed from its own two runs, against its own "
        "bayesprune run, and the standard error of the mean over seeds.",
        "",
        "| cell | L0: λ → weights kept (%), gap | bayesprune: seeds, weights kept (%), gap "
        "| L0 at that size (λ bracket) | bayesprune − L0 | seed by seed (mean ± se) |",
        "|---|---|---|---|---|---|",
    ]
    for cell in result["l0_summary"]:
        curve = "; ".join(
            f"{p['lambda']:g} → " + (f"{p['collapsed']} of {len(p['seeds'])} collapsed"
                                     if p["collapsed"] else f"{p['kept']:.1f}, {p['gap']:+.2f}")
            + ("" if p["seeds"] == result["seeds"] else f" (seeds {p['seeds']})")
            for p in cell["curve"]
        )  # fmt: skip
        bp = cell.get("bayesprune")
        at = cell.get("l0_at_size")
        lines.append(
            f"| {cell['case']} | {curve} | "
            + (f"{bp['seeds']}, {bp['kept']:.1f}, {bp['gap']:+.2f}" if bp else "-") + " | "
            + (f"{at:+.2f} ({cell['bracket'][0]:g}, {cell['bracket'][1]:g})" if at is not None
               else "no bracket") + " | "
            + (f"{bp['gap'] - at:+.2f}" if bp and at is not None else "-") + " | "
            + (f"{cell['paired']['mean']:+.2f} ± {cell['paired']['se']:.2f}"
               if cell.get("paired") else "-") + " |"
        )  # fmt: skip
    return lines + [""]
