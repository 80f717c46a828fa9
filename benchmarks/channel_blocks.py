"""LeNet-5 inference on the CPU against its convolutions' widths: where the time goes.

The pruned LeNet-5 keeps 61-71 % of the dense network's multiply-adds and runs only ~1.3×
faster than it (`benchmarks/inference.py`). This times plain LeNet-5-Caffe networks (the
deployable form: conv 5×5, 2×2 pooling, ReLU, fc, fc; bayesprune's pooling) at batch 256, one
thread, with conv1 and conv2 at several widths and fc1 at 115 units: the dense 20-50-500, the
widths a run keeps (20-34, 19-35), and the neighbouring multiples of 8 and 16. On CPUs where
oneDNN computes convolutions in blocks of channels, a layer costs what its width rounded up to
the block costs, so 17-32 filters cost about what 32 do. Each network is also timed with
oneDNN switched off (``torch.backends.mkldnn.flags(enabled=False)``: PyTorch's own
convolution) and in the channels-last memory format. Medians of interleaved blocks.

Usage: ``.venv/bin/python benchmarks/channel_blocks.py`` → ``results/channel_blocks.json`` and a
table in ``benchmarks/README.md`` (about 30 seconds).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import environment, interleaved_ms, write  # noqa: E402
from torch import nn  # noqa: E402

from bayesprune.export import count_macs  # noqa: E402
from bayesprune.models.network import MaxPool2x2  # noqa: E402

BLOCKS = 7
WIDTHS = (
    (20, 50, 500),  # dense
    (20, 34, 115),  # what a 60k run keeps (docs/method.md §6y)
    (19, 35, 108),
    (16, 34, 115),
    (16, 32, 115),
    (24, 34, 115),
    (32, 34, 115),
    (20, 32, 115),
    (20, 48, 115),
    (8, 32, 115),
)
MODES = ("default", "mkldnn_off", "channels_last")


def lenet5(c1: int, c2: int, f1: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, c1, 5), MaxPool2x2(), nn.ReLU(), nn.Conv2d(c1, c2, 5), MaxPool2x2(),
        nn.ReLU(), nn.Flatten(), nn.Linear(16 * c2, f1), nn.ReLU(), nn.Linear(f1, 10),
    ).eval()  # fmt: skip


def runner(net: nn.Module, x: torch.Tensor, mode: str):
    """One forward pass of ``net`` in ``mode``, on its own copy of the network (``.to`` changes a
    module in place: a channels-last copy must not turn the other modes' network too)."""
    net = copy.deepcopy(net)
    if mode == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)

    def run():
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=mode != "mkldnn_off"):
            net(x)

    return run


def main(widths=WIDTHS, batch: int = 256, blocks: int = BLOCKS, steps: int = 5) -> dict:
    env = environment()  # before the runs: a commit made while they run must not label them
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    nets = {w: lenet5(*w) for w in widths}
    runners = {
        f"{'-'.join(map(str, w))}/{mode}": runner(net, x, mode)
        for w, net in nets.items()
        for mode in MODES
    }
    ms = interleaved_ms(runners, blocks, steps, warmup=2)
    rows = []
    for w, net in nets.items():
        name = "-".join(map(str, w))
        rows.append(
            {
                "widths": list(w),
                "macs": count_macs(net, (1, 28, 28)),
                **{f"{mode}_ms": ms[f"{name}/{mode}_ms"] for mode in MODES},
            }
        )
    result = {"threads": 1, "batch": batch, **env, "rows": rows}
    write("channel_blocks", result)
    return result


if __name__ == "__main__":
    import argparse

    # no options; --help prints what the script measures instead of running it
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    print(main())
