"""How much of each kept unit's output the other units of its layer rebuild (R²), per layer.

The secant's evidence Δ_s (docs/method.md §3) is the loss change when unit s is switched off
with every other weight fixed. After a removal the consumer re-fits; for the last hidden layer
the consumer is the linear read-out, a convex re-fit. To second order the cost after a re-fit
of the consumer's weights is Δ_s (1 − R²_s) (Optimal Brain Surgeon against Optimal Brain
Damage), R²_s the share of unit s's output, as its consumer receives it, that a linear
combination of the other live units (and a constant) rebuilds. This script measures R²_s (plain
least squares over examples and positions, not the loss's Fisher metric) on the posterior-mode
network of a finished default run, over up to 5,000 of the cell's training examples, and
reports per gated layer the 10% / 50% / 90% quantiles of R² and the median of 1/(1 − R²).
It is the measurement behind the last-hidden-layer price probe of docs/method.md §6zi.

Usage: ``.venv/bin/python benchmarks/unit_redundancy.py [--cells mlp-n60k lenet5-n10k]
[--seed 0] [--jobs 2] [--name unit_redundancy]``; writes ``results/<name>.json`` and its table
in ``README.md``. One process per cell, one thread.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import CASES, cell_config, cell_data, cell_network  # noqa: E402

from bayesprune.config import positive  # noqa: E402


def layer_r2(received, width: int, live):
    """R² of every live unit's output from the other live units and a constant.

    ``received``: what the consumer receives, as :func:`bayesprune.inference.merge.unit_features`
    reads it (a Linear's input, a flattened block of ``width`` channels, or a convolution's
    maps); positions count as examples. ``live``: bool mask of the units to use."""
    import torch

    from bayesprune.inference.merge import unit_features

    f = unit_features(received, width).double()[:, live]
    f = f - f.mean(0)
    var = (f * f).mean(0)
    gram = f.T @ f / f.shape[0] + 1e-10 * torch.eye(f.shape[1], dtype=f.dtype)
    residual = 1.0 / torch.linalg.inv(gram).diagonal()  # the part the others cannot rebuild
    return (1 - residual / var).clamp(0, 1)


def run(case: str, seed: int) -> dict:
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data, config = cell_data(case), cell_config(case, seed)
    trainer = Trainer(cell_network(case, seed, data), data, config)
    summary = trainer.fit(progress=False)
    net = trainer.net.eval()
    gates = trainer.guide.mode_gates()
    count = min(5000, len(data.x_train))
    x = data.x_train[:count].reshape(count, *net.in_shape)
    layers = {}
    with torch.no_grad():
        for name in net.gated:
            received = net.run_ops(x, gates, stop=net.op_index(net.next_layer(name)))
            live = gates[name].bool()
            r2 = layer_r2(received, net.width(name), live)
            quantiles = torch.quantile(r2.float(), torch.tensor([0.1, 0.5, 0.9])).tolist()
            factor = (1 / (1 - r2).clamp(min=1e-6)).median()
            layers[name] = {
                "live": int(live.sum()),
                "r2_quantiles": [round(q, 3) for q in quantiles],
                "factor_median": round(float(factor), 2),
            }
    return {"case": case, "seed": seed, "widths": summary["widths"],
            "test_error": summary["test_error"], "layers": layers}  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--cells", nargs="*", default=["mlp-n60k", "lenet5-n10k"])
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default="unit_redundancy")
    args = parser.parse_args(argv)
    for case in args.cells:
        if case not in CASES:
            parser.error(f"unknown cell {case}")
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, args.cells, [args.seed] * len(args.cells)))
    result = {"unit_redundancy": runs, "seed": args.seed, "commit": commit(),
              "cpu": cpu_model(), "threads": 1}  # fmt: skip
    write(args.name, result)
    return result


if __name__ == "__main__":
    main()
