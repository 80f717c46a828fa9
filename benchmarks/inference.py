"""Inference latency and size of the pruned networks against dense (issue 12, deliverable 4).

Trains LeNet-300-100 and LeNet-5 on Fashion-MNIST with the defaults (``bayesprune train``,
1 thread), then ``bayesprune bench`` on each run directory (CPU, batch 256, 1 thread: medians of
interleaved blocks of the pruned network and of the dense network at the starting widths, in one
process). Writes ``benchmarks/results/inference.json`` as ``{"lenet5": {"dense_ms": …,
"pruned_ms": …, "dense_bytes": …, "pruned_bytes": …}, "mlp": {…}}`` (bytes: ``model.pt`` of the
pruned run against the same record of the dense network).

Usage: ``.venv/bin/python benchmarks/inference.py [--epochs 10] [--runs-dir DIR]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import description, environment, write  # noqa: E402

from bayesprune.bench import bench_run  # noqa: E402
from bayesprune.cli import main as cli  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs-dir", default=None, help="keep the run directories here")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.runs_dir or tempfile.mkdtemp(prefix="bayesprune-inference-"))
    result: dict = {"epochs": args.epochs, "batch": 256, "threads": 1, **environment()}
    for name in ("mlp", "lenet5"):
        out = root / name
        flags = ["train", "--dataset", "fashion-mnist", "--arch", name]
        flags += ["--epochs", str(args.epochs), "--threads", "1", "--no-progress"]
        flags += ["--out", str(out)]
        if args.data_dir:
            flags += ["--data-dir", args.data_dir]
        code = cli(flags)
        if code not in (0, 3):
            raise SystemExit(f"training {name} failed (exit {code})")
        bench = bench_run(out, "cpu", (256,))
        row = bench["batches"]["256"]
        result[name] = {
            "dense_ms": row["dense_ms"],
            "pruned_ms": row["pruned_ms"],
            "speedup": row["speedup"],
            "dense_bytes": bench["dense"]["bytes"],
            "pruned_bytes": bench["pruned"]["bytes"],
            "size_ratio": bench["dense"]["bytes"] / bench["pruned"]["bytes"],
            "dense_params": bench["dense"]["params"],
            "pruned_params": bench["pruned"]["params"],
            "run_dir": str(out),
        }
        print(name, result[name], flush=True)
    write("inference", result)
    return result


if __name__ == "__main__":
    main()
