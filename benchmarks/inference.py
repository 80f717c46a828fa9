"""Inference latency and size of the pruned networks against dense (issue 12, deliverable 4).

Trains LeNet-300-100 and LeNet-5 on Fashion-MNIST with the defaults (``bayesprune train``,
1 thread), then ``bayesprune bench`` on each run directory (CPU, batch 256, 1 thread: medians of
interleaved blocks of the pruned network and of the dense network at the starting widths, in one
process), and the same for the exported networks: the pruned run and the dense network each
written by ``bayesprune export --format pt2`` (``torch.export``, the format that loads without
bayesprune) and loaded back with ``torch.export.load``. Writes
``benchmarks/results/inference.json`` as ``{"lenet5": {"dense_ms": …, "pruned_ms": …,
"dense_bytes": …, "pruned_bytes": …}, "mlp": {…}}``, the exported files' latencies and sizes
(``bench``'s, of ``model.pt`` and the in-process networks, under ``"model_pt"``).

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

from bayesprune.bench import bench_run, dense_network, interleaved_ms  # noqa: E402
from bayesprune.cli import main as cli  # noqa: E402
from bayesprune.export import export_model, load_model_record, model_record  # noqa: E402

EXPORT = "pt2"


def exported(run_dir: Path, batch: int = 256, blocks: int = 7) -> dict:
    """The pruned run and its dense starting network exported as ``EXPORT`` files (the dense
    one in a temporary folder), loaded back without bayesprune's classes
    (``torch.export.load``) and timed as ``bayesprune bench`` times (interleaved blocks,
    medians after warm-up) at ``batch``; their file sizes."""
    pruned, record = load_model_record(run_dir / "model.pt")
    with tempfile.TemporaryDirectory() as folder:
        dense = Path(folder)
        torch.save(model_record(dense_network(run_dir, record, pruned), record["in_shape"]),
                   dense / "model.pt")  # fmt: skip
        files = {
            "dense": export_model(dense / "model.pt", EXPORT, dense / f"model.{EXPORT}"),
            "pruned": export_model(run_dir / "model.pt", EXPORT, run_dir / f"model.{EXPORT}"),
        }
        modules = {name: torch.export.load(path).module() for name, path in files.items()}
        sizes = {f"{name}_bytes": path.stat().st_size for name, path in files.items()}
    x = torch.randn(batch, *record["in_shape"])
    times = interleaved_ms(modules, x, blocks)
    return {"format": EXPORT, **{f"{name}_ms": ms for name, ms in times.items()}, **sizes}


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
        files = exported(out)
        result[name] = {
            **files,
            "speedup": files["dense_ms"] / files["pruned_ms"],
            "size_ratio": files["dense_bytes"] / files["pruned_bytes"],
            "dense_params": bench["dense"]["params"],
            "pruned_params": bench["pruned"]["params"],
            "model_pt": {
                "dense_ms": row["dense_ms"],
                "pruned_ms": row["pruned_ms"],
                "speedup": row["speedup"],
                "dense_bytes": bench["dense"]["bytes"],
                "pruned_bytes": bench["pruned"]["bytes"],
            },
            "run_dir": str(out),
        }
        print(name, result[name], flush=True)
    write("inference", result)
    return result


if __name__ == "__main__":
    main()
