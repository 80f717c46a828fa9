"""Training steps in the channels-last memory format against contiguous storage (CPU).

``TrainConfig.memory_format`` ("auto": channels-last for a network with convolutions on the
CPU) stores the convolutions' weights, and so their feature maps, as NHWC, the layout oneDNN's
CPU convolutions run fastest in. This times, in one process with blocks interleaved (medians),
one training step of each network in both layouts:

- ``plain``: the network with cross-entropy and Adam (``torch.optim``), what its dense twin does;
- ``step``: ``Trainer.train_step`` (SVI, fast ELBO, secant estimator, θ's step, bookkeeping);

for LeNet-5 at full width (a fresh network on random data, as a run's first steps see it) and at
the widths the training-cost benchmark ended with (``results/fmnist_lenet5.json``; trained
``--train-steps`` steps on Fashion-MNIST first where it is on the machine, as
``profile_step.py`` does, since the secant's ĝ pass re-runs only the examples whose drawn label
differs), and for a small VGG-style network with BatchNorm on CIFAR-shaped random data (three
3×3 convolutions of 32, 64 and 128 filters, each pooled, fc 256). Writes
``results/memory_format.json`` and its table in ``benchmarks/README.md``.

Usage: ``.venv/bin/python benchmarks/memory_format.py [--blocks 5]`` (about a minute)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import description, environment, interleaved_ms, plain_step, write  # noqa: E402
from profile_step import build, pruned_widths, real_data, train_first  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import Dataset  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402
from bayesprune.models.network import GatedNet  # noqa: E402

LAYOUTS = ("contiguous", "channels-last")
VGG_PLAN = [("conv", 32, 3, 1), ("pool",), ("conv", 64, 3, 1), ("pool",), ("conv", 128, 3, 1),
            ("pool",), ("fc", 256)]  # fmt: skip


def vgg_small() -> GatedNet:
    return GatedNet((3, 32, 32), VGG_PLAN, 10, batch_norm=True)


def random_data(shape: tuple[int, ...], batch: int, batches: int = 10) -> Dataset:
    """``batches`` batches of random inputs of ``shape`` and labels (10 classes); the first
    batch is also the test set."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * batches, *shape, generator=g)
    y = torch.randint(0, 10, (batch * batches,), generator=g)
    return Dataset("random", x, y, x[:batch], y[:batch], 10)


def step_runners(
    make_net, data: Dataset, memory_format: str, device: str = "cpu", batch_size: int = 100
) -> dict:
    """A plain PyTorch step and bayesprune's ``Trainer.train_step`` (checks off), each of its
    own network from ``make_net`` (seeded alike) stored as ``memory_format`` says, on the first
    ``batch_size`` examples of ``data`` on ``device``. Each runner carries its network as
    ``.net``; the bayesprune one its trainer as ``.trainer``."""
    config = TrainConfig(
        check_every=10**9, device=device, batch_size=batch_size, memory_format=memory_format
    )
    x = data.x_train[:batch_size].to(device)
    y = data.y_train[:batch_size].to(device)
    index = torch.arange(len(x), device=device)
    torch.manual_seed(0)
    net = make_net().to(device)
    plain = plain_step(net, x, y, config.lr, config.optimizer, config.momentum, memory_format)
    plain.net = net
    torch.manual_seed(0)
    trainer = Trainer(make_net(), data, config)

    def step():
        trainer.train_step(x, y, index)

    step.net, step.trainer = trainer.model.net, trainer
    return {"plain": plain, "step": step}


def measure(
    make_net,
    data: Dataset,
    blocks: int,
    steps: int,
    train_steps: int = 0,
    device: str = "cpu",
    batch_size: int = 100,
) -> dict:
    """Median ms of a plain and a bayesprune step of ``make_net()`` in each layout, on the first
    batch of ``data`` (after ``train_steps`` steps of the trainers on ``data``), on ``device``
    (``benchmarks/gpu.py`` times the layouts on a GPU with it)."""
    runners, trainers = {}, []
    for layout in LAYOUTS:
        pair = step_runners(make_net, data, layout, device, batch_size)
        trainer = pair["step"].trainer
        assert trainer.channels_last == (layout == "channels-last")
        trainers.append(trainer)
        runners[f"plain/{layout}"], runners[f"step/{layout}"] = pair["plain"], pair["step"]
    if train_steps:
        train_first(trainers, data, train_steps)
    out = interleaved_ms(runners, blocks, steps, warmup=3, device=torch.device(device))
    for kind in ("plain", "step"):
        out[f"{kind}_speedup"] = out[f"{kind}/contiguous_ms"] / out[f"{kind}/channels-last_ms"]
    out["widths"] = list(trainers[0].net.widths)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args(argv)
    result: dict = {"threads": 1, "batch_size": 100, **environment()}
    torch.set_num_threads(1)
    fmnist = real_data()
    widths = pruned_widths("lenet5")
    cases = {
        "lenet5": (lambda: build("lenet5"), random_data((1, 28, 28), 100), 0, "random"),
        "lenet5_pruned": (
            lambda: build("lenet5", widths),
            fmnist or random_data((1, 28, 28), 100),
            args.train_steps if fmnist is not None else 0,
            f"{fmnist.name}, after {args.train_steps} steps" if fmnist is not None else "random",
        ),
        "vgg_small": (vgg_small, random_data((3, 32, 32), 100), 0, "random, 3×32×32"),
    }
    for name, (make_net, data, train_steps, note) in cases.items():
        result[name] = {**measure(make_net, data, args.blocks, 5, train_steps), "data": note}
        print(name, {k: v for k, v in result[name].items()}, flush=True)
    write("memory_format", result)
    return result


if __name__ == "__main__":
    main()
