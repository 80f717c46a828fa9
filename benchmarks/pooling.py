"""2×2 max-pooling on the CPU: torch's ``max_pool2d`` against ``bayesprune``'s ``max_pool_2x2``.

LeNet-5's first pooling (a 24×24 map per filter) took longer than the convolution before it
with torch's CPU kernel. This measures both implementations (same values and gradients,
``tests/models/test_network.py``) on that map, forward without gradients (inference) and
forward + backward (training), and LeNet-5-Caffe networks at the dense widths (20-50-500) and
at a pruned width (19-25-82) with each pooling module: medians of interleaved blocks, 1 thread.

Usage: ``.venv/bin/python benchmarks/pooling.py`` → ``results/pooling.json`` and a table in
``benchmarks/README.md``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import RESULTS, environment, render_readme  # noqa: E402
from torch import nn  # noqa: E402

from bayesprune.models.network import MaxPool2x2, max_pool_2x2  # noqa: E402

BLOCKS = 7


def median_ms(funcs: dict, calls: int = 20) -> dict:
    """Median milliseconds per call of each function, blocks interleaved."""
    for f in funcs.values():
        for _ in range(3):
            f()
    times = {name: [] for name in funcs}
    for _ in range(BLOCKS):
        for name, f in funcs.items():
            start = time.perf_counter()
            for _ in range(calls):
                f()
            times[name].append((time.perf_counter() - start) / calls * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def lenet5(c1: int, c2: int, f1: int, pool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(), pool(), nn.Conv2d(c1, c2, 5), nn.ReLU(), pool(),
        nn.Flatten(), nn.Linear(16 * c2, f1), nn.ReLU(), nn.Linear(f1, 10),
    ).eval()  # fmt: skip


def main() -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    h = torch.randn(100, 20, 24, 24).relu()
    grad = torch.randn(100, 20, 12, 12)
    leaf = h.clone().requires_grad_()

    def no_grad(pool):
        def f():
            with torch.no_grad():
                pool(h)

        return f

    def train(pool):
        return lambda: pool(leaf).backward(grad)

    def torch_pool(x):
        return F.max_pool2d(x, 2)

    pool_ms = median_ms(
        {
            "torch_forward_ms": no_grad(torch_pool),
            "bayesprune_forward_ms": no_grad(max_pool_2x2),
            "torch_train_ms": train(torch_pool),
            "bayesprune_train_ms": train(max_pool_2x2),
        }
    )
    x = torch.randn(256, 1, 28, 28)
    nets = {
        f"{widths}_{name}": lenet5(*widths, pool)
        for widths in ((20, 50, 500), (19, 25, 82))
        for name, pool in (("torch", lambda: nn.MaxPool2d(2)), ("bayesprune", MaxPool2x2))
    }

    def infer(net):
        def f():
            with torch.no_grad():
                net(x)

        return f

    net_ms = median_ms({name: infer(net) for name, net in nets.items()}, calls=10)
    result = {
        "threads": 1,
        **environment(),
        "pool_map": [100, 20, 24, 24],
        "pool": pool_ms,
        "lenet5_batch": 256,
        "lenet5": {
            pool: {
                "dense_ms": net_ms[f"(20, 50, 500)_{pool}"],
                "pruned_ms": net_ms[f"(19, 25, 82)_{pool}"],
            }
            for pool in ("torch", "bayesprune")
        },
    }
    (RESULTS / "pooling.json").write_text(__import__("json").dumps(result, indent=1) + "\n")
    render_readme()
    print(result)
    return result


if __name__ == "__main__":
    main()
