"""The secant's ĝ pass with and without rerunning only the examples whose drawn label differs.

Issue 12, deliverable 3 (docs/method.md §3, §6u). For each ``--epochs`` value it trains LeNet-5 on
a Fashion-MNIST subset (``--train-subset``, seed 0, the shipped rule), then times training steps
on random mini-batches of that training set (batch 100, 1 thread) in interleaved blocks of
``--steps`` steps:

- ``rerun``: the default, ĝ_n taken from the loss's own gate gradient where the label drawn from
  the model is the observed one, and only the other examples run through the network again;
- ``full``: ``RERUN_SHARE = -1``, ĝ through the whole batch's graph (the code before it).

Reported: medians over ``--blocks`` blocks, the network's widths and the mean share of drawn
labels expected to differ (1 − mean p(y | x) over the timed batches). Both variants keep
training the same trainer, so the blocks see the same state to within a few steps. Writes
``results/secant_rerun.json`` and its table in ``README.md``.

Usage: ``.venv/bin/python benchmarks/secant_rerun.py [--epochs 3 10] [--blocks 8]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import description, environment, write  # noqa: E402


def measure(epochs: int, subset: int, blocks: int, steps: int) -> dict:
    import torch

    import bayesprune.inference.elbo as elbo
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    data = load_dataset("fashion-mnist")
    config = TrainConfig(train_subset=subset, seed=0, epochs=epochs)
    torch.manual_seed(0)
    net = build_network("lenet5", data.in_shape, data.num_classes)
    trainer = Trainer(net, data, config)
    trainer.fit(progress=False)
    xs, ys = trainer.data.x_train, trainer.data.y_train
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"rerun": [], "full": []}
    shares = []
    default = elbo.RERUN_SHARE
    try:
        for _ in range(blocks):
            for variant in times:
                elbo.RERUN_SHARE = default if variant == "rerun" else -1.0
                total = 0.0
                for _ in range(steps):
                    index = torch.randint(len(xs), (config.batch_size,), generator=generator)
                    x, y = xs[index], ys[index]
                    with torch.no_grad():
                        p = torch.softmax(trainer.net(x), -1)
                        shares.append(float(1 - p[torch.arange(len(y)), y].mean()))
                    start = time.perf_counter()
                    trainer.train_step(x, y, index)
                    total += time.perf_counter() - start
                times[variant].append(1e3 * total / steps)
    finally:
        elbo.RERUN_SHARE = default
    rerun, full = (statistics.median(times[k]) for k in ("rerun", "full"))
    return {
        "epochs": epochs,
        "train_subset": subset,
        "widths": [trainer.net.width(n) for n in trainer.net.gated],
        "share_differing": sum(shares) / len(shares),
        "rerun_ms": rerun,
        "full_ms": full,
        "saving": 1 - rerun / full,
        "blocks": times,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = {"threads": 1, "batch_size": 100, **environment(), "runs": []}
    for epochs in args.epochs:
        run = measure(epochs, args.train_subset, args.blocks, args.steps)
        print({k: v for k, v in run.items() if k != "blocks"}, flush=True)
        result["runs"].append(run)
    write("secant_rerun", result)
    return result


if __name__ == "__main__":
    main()
