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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import environment, interleaved_ms, write  # noqa: E402
from torch import nn  # noqa: E402

from bayesprune.models.network import MaxPool2x2, max_pool_2x2  # noqa: E402

BLOCKS = 7


def lenet5(c1: int, c2: int, f1: int, pool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(), pool(), nn.Conv2d(c1, c2, 5), nn.ReLU(), pool(),
        nn.Flatten(), nn.Linear(16 * c2, f1), nn.ReLU(), nn.Linear(f1, 10),
    ).eval()  # fmt: skip


def main() -> dict:
    env = environment()  # before the runs: a commit made while they run must not label them
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

    pool_ms = interleaved_ms(
        {
            "torch_forward": no_grad(torch_pool),
            "bayesprune_forward": no_grad(max_pool_2x2),
            "torch_train": train(torch_pool),
            "bayesprune_train": train(max_pool_2x2),
        },
        BLOCKS,
        20,
        warmup=3,
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

    net_ms = interleaved_ms({name: infer(net) for name, net in nets.items()}, BLOCKS, 10, warmup=3)
    result = {
        "threads": 1,
        **env,
        "pool_map": [100, 20, 24, 24],
        "pool": pool_ms,
        "lenet5_batch": 256,
        "lenet5": {
            pool: {
                "dense_ms": net_ms[f"(20, 50, 500)_{pool}_ms"],
                "pruned_ms": net_ms[f"(19, 25, 82)_{pool}_ms"],
            }
            for pool in ("torch", "bayesprune")
        },
    }
    write("pooling", result)
    print(result)
    return result


if __name__ == "__main__":
    import argparse

    # no options; --help prints what the script measures instead of running it
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
