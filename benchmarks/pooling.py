"""2×2 max-pooling on the CPU: torch's ``max_pool2d`` against ``bayesprune``'s ``max_pool_2x2``.

LeNet-5's first pooling (a 24×24 map per filter) took longer than the convolution before it
with torch's CPU kernel. This measures both implementations (same values and gradients,
``tests/models/test_network.py``) on that map, forward without gradients (inference) and
forward + backward (training), stored NCHW and channels-last (NHWC, how a convolutional network
trains on the CPU, ``TrainConfig.memory_format``; there ``max_pool_2x2`` with gradients is
torch's kernel, and the row "strided views" times the custom backward it used before), and
LeNet-5-Caffe networks at the dense widths (20-50-500) and at a pruned width (19-25-82) with
each pooling module: medians of interleaved blocks, 1 thread.

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

from bayesprune.models.network import MaxPool2x2, _MaxPool2x2, max_pool_2x2  # noqa: E402

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
    last = torch.channels_last
    maps = {
        "": (h, grad),
        "_nhwc": (h.contiguous(memory_format=last), grad.contiguous(memory_format=last)),
    }

    def no_grad(pool, tag):
        def f():
            with torch.no_grad():
                pool(maps[tag][0])

        return f

    def train(pool, tag):
        leaf = maps[tag][0].clone().requires_grad_()  # (clone keeps the layout)
        return lambda: pool(leaf).backward(maps[tag][1])

    def torch_pool(x):
        return F.max_pool2d(x, 2)

    runners = {}
    for tag in maps:
        runners[f"torch_forward{tag}"] = no_grad(torch_pool, tag)
        runners[f"bayesprune_forward{tag}"] = no_grad(max_pool_2x2, tag)
        runners[f"torch_train{tag}"] = train(torch_pool, tag)
        runners[f"bayesprune_train{tag}"] = train(max_pool_2x2, tag)
    runners["views_train_nhwc"] = train(_MaxPool2x2.apply, "_nhwc")
    pool_ms = interleaved_ms(runners, BLOCKS, 20, warmup=3)
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
