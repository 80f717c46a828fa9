"""Cost of one full-width training step through SVI against a plain PyTorch step (issue 10).

For LeNet-300-100 and LeNet-5 on Fashion-MNIST-shaped data (batch 100, 1 thread by default), in
one process, blocks of steps interleaved so that load from elsewhere hits every variant alike:

- ``plain``: the same network without gates, cross-entropy, Adam (``torch.optim``);
- ``svi``: ``Trainer.train_step``: one ``pyro.infer.SVI`` step with ``GatedELBO`` (its fast
  evaluation) and ``GateOptim``, plus the trainer's bookkeeping (prior update every 10 steps);
- ``svi_traced``: the same with ``GatedELBO(implementation="traced")`` (the reference).

No unit is pruned (checks disabled). Writes ``benchmarks/results/step_cost.json`` as
``{"mlp": {"plain_ms": …, "svi_ms": …, "svi_traced_ms": …}, "lenet5": {…}}`` and the table in
benchmarks/README.md.

Usage: ``.venv/bin/python benchmarks/step_cost.py [--threads 1] [--blocks 7] [--steps 40]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import description, environment, step_cost, write  # noqa: E402

from bayesprune.config import TrainConfig, positive  # noqa: E402
from bayesprune.data import Dataset  # noqa: E402
from bayesprune.models.network import GatedMLP, lenet5  # noqa: E402

NETWORKS = {
    "mlp": lambda: GatedMLP(784, (300, 100), 10),
    "lenet5": lambda: lenet5((1, 28, 28), 10),
}


def synthetic(batch: int) -> Dataset:
    """Fashion-MNIST-shaped random data (the step cost does not depend on the values)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch * 10, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch * 10,), generator=g)
    return Dataset("synthetic", x, y, x[:batch], y[:batch], 10)


def measure(name: str, config: TrainConfig, blocks: int, steps: int) -> dict:
    torch.manual_seed(0)
    cost = step_cost(synthetic(config.batch_size), NETWORKS[name], config, blocks, steps)
    return {("plain_ms" if k == "dense_ms" else k): v for k, v in cost.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--threads", type=positive(int), default=1)
    parser.add_argument("--blocks", type=positive(int), default=7)
    parser.add_argument("--steps", type=positive(int), default=40)
    parser.add_argument("--batch-size", type=positive(int), default=100)
    parser.add_argument("--networks", default="mlp,lenet5")
    args = parser.parse_args(argv)
    unknown = [n for n in args.networks.split(",") if n not in NETWORKS]
    if unknown:
        parser.error(f"--networks: unknown {', '.join(unknown)} (known: {', '.join(NETWORKS)})")
    torch.set_num_threads(args.threads)
    config = TrainConfig(batch_size=args.batch_size)
    result: dict = {"threads": args.threads, "batch_size": args.batch_size, **environment()}
    for name in args.networks.split(","):
        result[name] = measure(name, config, args.blocks, args.steps)
        print(name, {k: round(v, 3) for k, v in result[name].items()}, flush=True)
    write("step_cost", result)
    return result


if __name__ == "__main__":
    main()
