"""Data-parallel throughput: 1 and 2 processes on the CPU (issue 13, deliverable 5).

Trains LeNet-5 on a 6,000-example Fashion-MNIST subset for 2 epochs (global batch 100, 1 thread
per process) with ``bayesprune train`` three ways: one process without Lightning
(``--strategy single``), and ``--strategy ddp --devices 1`` and ``2`` (gloo). The evidence rule
keeps θ still for the first two blocks of 6,000 examples, so every step runs at full width;
the script checks that no unit was removed. Throughput = examples trained / the run's training
wall time (``train_wall_seconds``: the steps, without the per-epoch evaluation and
checkpoints). Writes ``benchmarks/results/ddp.json`` as
``{"lenet5": {"examples_per_s": {"1": …, "2": …}, …}}`` and its table in ``README.md``.

The same script also measures the *ceiling* of data parallelism on this machine (``reference``):
plain PyTorch, no gates, no Pyro, the same LeNet-5 and Adam, one process at batch 100 against
two processes at batch 50 under ``torch.nn.parallel.DistributedDataParallel`` (gloo, 1 thread
each, the same examples): what any data-parallel trainer can get from these two cores.

Run it on an otherwise idle machine: two processes on two cores leave nothing for anything else.

Usage: ``.venv/bin/python benchmarks/ddp.py [--subset 6000] [--epochs 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import description, environment, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def train(out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bayesprune.cli", "train", *flags, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def _reference(rank: int, world: int, port: int, steps: int, queue) -> None:
    """Plain PyTorch data-parallel steps of LeNet-5 (global batch 100): examples/s to ``queue``."""
    import os
    import time

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from bayesprune.inference.projected_sgd import multi_tensor
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_network("lenet5", (1, 28, 28), 10)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = multi_tensor(torch.optim.Adam, net.parameters(), {"lr": 1e-3})
    gen = torch.Generator().manual_seed(rank)
    x = torch.rand(100 // world, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (100 // world,), generator=gen)
    warm = 10
    for i in range(warm + steps):
        if i == warm:
            if world > 1:
                dist.barrier()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    seconds = time.perf_counter() - start
    if rank == 0:
        queue.put(100 * steps / seconds)
    if world > 1:
        dist.destroy_process_group()


def reference(steps: int = 200) -> dict:
    """Plain PyTorch examples/s with 1 process × batch 100 and 2 DDP processes × batch 50."""
    import socket

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = {}
    for world in (1, 2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_reference, args=(r, world, port, steps, queue))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        out[str(world)] = queue.get()
        for p in procs:
            p.join()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (median kept)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    env = environment()  # before the runs: a commit made while they run must not label them
    base = ["--arch", "lenet5", "--dataset", "fashion-mnist", "--epochs", str(args.epochs)]
    base += ["--train-subset", str(args.subset), "--threads", "1", "--no-progress"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    settings = {
        "single": ["--strategy", "single"],
        "1": ["--strategy", "ddp", "--devices", "1"],
        "2": ["--strategy", "ddp", "--devices", "2"],
    }
    root = Path(tempfile.mkdtemp(prefix="bayesprune-ddp-"))
    runs: dict[str, list[dict]] = {k: [] for k in settings}
    plain: list[dict] = []
    for r in range(args.repeats):  # interleaved, so that a slow spell hits every setting
        plain.append(reference())
        print("plain PyTorch", r, {k: round(v) for k, v in plain[-1].items()}, flush=True)
        for key, flags in settings.items():
            s = train(root / f"{key}-{r}", base + flags)
            if s["widths"] != s["initial_widths"]:
                raise SystemExit(f"{key}: units were removed ({s['widths']}): not full width")
            examples = args.subset * args.epochs
            runs[key].append(
                {
                    "train_wall_seconds": s["train_wall_seconds"],
                    "examples_per_s": examples / s["train_wall_seconds"],
                    "step_seconds_full_width": s["step_seconds_full_width"],
                    "test_error": s["test_error"],
                }
            )
            print(key, r, f"{runs[key][-1]['examples_per_s']:.0f} examples/s", flush=True)
    # the median: on a shared 2-core machine single runs stray both ways (every run is kept)
    best = {k: statistics.median(v["examples_per_s"] for v in runs[k]) for k in runs}
    ceiling = {k: statistics.median(p[k] for p in plain) for k in ("1", "2")}
    result = {
        "lenet5": {
            "examples_per_s": {"1": best["1"], "2": best["2"]},
            "single_process_examples_per_s": best["single"],
            "speedup_2_over_1": best["2"] / best["1"],
            "runs": runs,
            "reference_plain_pytorch": {
                "examples_per_s": ceiling,
                "speedup_2_over_1": ceiling["2"] / ceiling["1"],
                "runs": plain,
            },
        },
        "subset": args.subset,
        "epochs": args.epochs,
        "global_batch": 100,
        "threads_per_process": 1,
        **env,
    }
    speedup = result["lenet5"]["speedup_2_over_1"]
    print(json.dumps(result["lenet5"]["examples_per_s"]), f"2 over 1: {speedup:.2f}×")
    write("ddp", result, None if args.results_dir is None else Path(args.results_dir))
    return result


if __name__ == "__main__":
    main()
