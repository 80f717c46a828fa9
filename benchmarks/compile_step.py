"""``torch.compile`` of the training step on the CPU (issue 12, deliverable 3: an option).

LeNet-300-100 (Fashion-MNIST shapes, batch 100, 1 thread) at full width and at the widths the
training-cost run ended with, in one process with blocks interleaved (medians):

- ``plain`` / ``plain_compiled``: the plain PyTorch step (cross-entropy, Adam) with the network
  eager / wrapped in ``torch.compile`` (inductor);
- ``step`` / ``step_compiled``: ``Trainer.train_step`` (SVI, fast ELBO, secant estimator) with
  the network's forward eager / compiled with ``dynamic=True`` (pruning changes the shapes; the
  secant's second backward needs ``torch._functorch.config.donated_buffer = False``);

and the first call's compile time. The rest of the SVI step is Python (Pyro's parameter trace,
the optimisers, the bookkeeping) that a compiled forward does not touch. Writes
``results/compile_step.json`` and its table in ``README.md``.

Usage: ``.venv/bin/python benchmarks/compile_step.py [--blocks 5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import description, environment, interleaved_ms, plain_step, write  # noqa: E402
from profile_step import build, pruned_widths, synthetic  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402


def first_call(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(widths: list[int] | None, blocks: int, steps: int) -> dict:
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False  # the secant runs a second backward on the graph
    config = TrainConfig(check_every=10**9)
    data = synthetic(config.batch_size)
    x, y = data.x_train[: config.batch_size], data.y_train[: config.batch_size]
    index = torch.arange(len(x))
    torch.manual_seed(0)
    recipe = (config.lr, config.optimizer, config.momentum)
    plain = plain_step(build("mlp", widths), x, y, *recipe)
    plain_compiled = plain_step(torch.compile(build("mlp", widths)), x, y, *recipe)
    eager = Trainer(build("mlp", widths), data, config)
    compiled = Trainer(build("mlp", widths), data, config)
    compiled.net.forward = torch.compile(compiled.net.forward, dynamic=True)
    out = {
        "widths": list(widths) if widths else [300, 100],
        "plain_compile_s": first_call(plain_compiled),
        "step_compile_s": first_call(lambda: compiled.train_step(x, y, index)),
    }
    runners = {
        "plain": plain,
        "plain_compiled": plain_compiled,
        "step": lambda: eager.train_step(x, y, index),
        "step_compiled": lambda: compiled.train_step(x, y, index),
    }
    return {**out, **interleaved_ms(runners, blocks, steps, warmup=5)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result: dict = {"threads": 1, "batch_size": 100, "torch": torch.__version__, **environment()}
    result["runs"] = [measure(w, args.blocks, 50) for w in (None, pruned_widths("mlp"))]
    for r in result["runs"]:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    write("compile_step", result)
    return result


if __name__ == "__main__":
    main()
