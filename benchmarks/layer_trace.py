"""Trace a gated VGG16 step by step: how each layer's θ leave 1 and what the data term does.

The measurement behind docs/method.md §6f (the layer-wide collapse and Eq. (10t)). VGG16
(BatchNorm) on Fashion-MNIST as 3×32×32 images (``benchmarks/gpu.py``'s stand-in for CIFAR-10),
the CIFAR recipe (Adam with cosine decay over ``--epochs``, batch 128, crop + flip), SVI steps
of :class:`~bayesprune.inference.trainer.Trainer` in a loop (its pruning checks and merges
included). Every 10 steps one line: step, mean data term per example over those steps, seconds,
and for each layer with a θ below 1 the smallest θ and how many are below 1; every 50 steps the
widths and the posterior mode's error on the first 2,000 test images.

Usage: ``.venv/bin/python benchmarks/layer_trace.py --width 0.5 --steps 600 [--device cuda]
[--set theta_transit=1]`` (the last: the rule before Eq. (10t)).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from common import description, seed_type  # noqa: E402
from gpu import fmnist32  # noqa: E402
from robustness_matrix import add_overrides_option, parse_overrides  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import load_dataset  # noqa: E402
from bayesprune.export import deterministic_network  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402
from bayesprune.loop import batches, evaluate  # noqa: E402
from bayesprune.models.network import vgg16  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier")
    parser.add_argument("--train", type=int, default=60_000, help="training examples")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=5, help="of the cosine schedule")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=seed_type, default=0)
    add_overrides_option(parser)
    args = parser.parse_args(argv)
    data = fmnist32(load_dataset("fashion-mnist", args.data_dir))
    if args.train < len(data.x_train):
        data = data.subset(args.train, seed=args.seed)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=128,
        lr_schedule="cosine",
        device=args.device,
        seed=args.seed,
        **parse_overrides(args.set),
    )
    torch.manual_seed(args.seed)
    pyro.set_rng_seed(args.seed)
    trainer = Trainer(vgg16(data.in_shape, 10, width_mult=args.width), data, config)
    n, guide = len(trainer.data.x_train), trainer.guide

    def stream():
        while True:
            perm = torch.randperm(n, device=trainer.device)
            yield from batches(trainer.data, config.batch_size, trainer.device, perm=perm)

    start, recent = time.perf_counter(), []
    with pyro.validation_enabled(False):
        for step, (x, y, index) in enumerate(stream(), start=1):
            if step > args.steps:
                break
            recent.append(float(trainer.train_step(x, y, index)["data"]) / n)
            if step % 10:
                continue
            moving = {}
            for name in trainer.net.gated:
                theta = guide.gate_probs(name).detach()
                if bool((theta < 1).any()):
                    moving[name] = (round(float(theta.min()), 3), int((theta < 1).sum()))
            print(f"step {step}  data {sum(recent) / len(recent):.4f}  "
                  f"{time.perf_counter() - start:.1f} s  {moving}", flush=True)  # fmt: skip
            recent = []
            if step % 50 == 0:
                widths = [guide.gate_probs(k).numel() for k in trainer.net.gated]
                x_test, y_test = trainer.data.x_test[:2000], trainer.data.y_test[:2000]
                error = evaluate(deterministic_network(guide), x_test, y_test)
                print(f"  widths {'-'.join(map(str, widths))}  test error {error:.4f}", flush=True)


if __name__ == "__main__":
    main()
