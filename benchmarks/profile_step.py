"""Where a full-width training step's time goes (issue 12, deliverable 3: the profile).

For LeNet-300-100 and LeNet-5 (Fashion-MNIST shapes, batch 100, 1 thread), in one process with
blocks interleaved, medians of:

- ``plain``: the same network, cross-entropy, Adam (``torch.optim``);
- ``step``: ``Trainer.train_step`` (SVI, fast ELBO, secant estimator, GateOptim, bookkeeping);
- ``first_order``: the same with the first-order estimator: ``step − first_order`` is the
  secant's cost (its backward at sampled labels and the evidence pass);
- ``elbo``: ``GatedELBO.loss_and_grads`` alone (no SVI, no optimiser): ``step − elbo`` is SVI's
  parameter trace, GateOptim (Adam and the projected θ step) and the trainer's bookkeeping;
- ``prior``: the fast evaluation's prior with its closed-form weight gradients;

and the number of aten operations per step (``torch.profiler``) of ``plain`` and ``step``; then the
same at the widths the training-cost benchmarks ended with (``results/fmnist_lenet300.json``,
``fmnist_lenet5.json``: the first units of each layer kept), where about nine tenths of a run's
steps are taken, with the full-width plain step (``dense``) beside them.

The full-width rows time a fresh network on random data, as a run's first steps see an
untrained one. The pruned-width rows stand for the trained network of a run's later steps, and
the secant's ĝ pass depends on it: ĝ re-runs only the examples whose label drawn from the model
differs from the observed one (``sampled_label_gate_grads``), nine in ten on random labels, one
in five or fewer on a trained network. So where Fashion-MNIST is on the machine, the pruned-width
trainers first take ``--train-steps`` steps on its examples (θ then set back to 1, no unit
removed) and are timed on one of its batches; otherwise on random data, as the results say.
Writes ``benchmarks/results/profile_step.json`` and its table in benchmarks/README.md.

Usage: ``.venv/bin/python benchmarks/profile_step.py [--blocks 5]``
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from common import RESULTS, description, environment, interleaved_ms, narrowed, plain_step, write  # noqa: E402
from step_cost import NETWORKS, synthetic  # noqa: E402

from bayesprune.config import TrainConfig, positive  # noqa: E402
from bayesprune.inference.elbo_fast import point_mass_prior  # noqa: E402
from bayesprune.inference.trainer import Trainer  # noqa: E402


def aten_ops(step, count: int = 5) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(count):
            step()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / count


def pruned_widths(name: str) -> list[int]:
    """The widths bayesprune ended with in the training-cost benchmark of ``name``."""
    file = {"mlp": "fmnist_lenet300", "lenet5": "fmnist_lenet5"}[name]
    return json.loads((RESULTS / f"{file}.json").read_text())["bayesprune"]["widths"]


def build(name: str, widths: list[int] | None = None):
    """The network at full width, or with its gated layers cut to ``widths`` (the first units)."""
    net = NETWORKS[name]()
    return net if widths is None else narrowed(net, widths)


def real_data():
    """Fashion-MNIST if it is on this machine, else None."""
    from bayesprune.data import DataError, load_dataset

    try:
        return load_dataset("fashion-mnist")
    except DataError:
        return None


def train_first(trainers: list[Trainer], data, steps: int) -> None:
    """``steps`` steps of each trainer on the same random batches of ``data`` (no unit is
    removed: the checks are off), then θ back to 1: a trained network at its widths."""
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, len(data.x_train), (trainers[0].config.batch_size,), generator=gen)
        for _ in range(steps)
    ]
    with pyro.validation_enabled(False):
        for trainer in trainers:
            for index in batches:
                trainer.train_step(data.x_train[index], data.y_train[index], index)
            for layer in trainer.net.gated:
                trainer.guide.set_gate_probs(layer, 1.0)


def measure(
    name: str, blocks: int, steps: int, widths: list[int] | None = None, real=None, train_steps=0
) -> dict:
    """Time the variants of one network; with ``real`` (a dataset), on its first batch after
    ``train_steps`` steps of training (:func:`train_first`)."""
    config = TrainConfig(check_every=10**9)
    data = synthetic(config.batch_size) if real is None else real
    x, y = data.x_train[: config.batch_size], data.y_train[: config.batch_size]
    index = torch.arange(len(x))
    torch.manual_seed(0)
    recipe = (config.lr, config.optimizer, config.momentum)
    plain = plain_step(build(name, widths), x, y, *recipe)
    secant = Trainer(build(name, widths), data, config)
    first = Trainer(build(name, widths), data, replace(config, estimator="first-order"))
    if real is not None and train_steps:
        train_first([secant, first], data, train_steps)
    guide = secant.guide
    thetas = {n: guide.gate_probs(n).detach() for n in secant.net.gated}

    def elbo_only():
        secant.elbo.loss_and_grads(secant.model, guide, x, y, num_data=len(data.x_train))
        for p in guide.parameters():
            p.grad = None

    runners = {
        "plain": plain,
        **({"dense": plain_step(build(name), x, y, *recipe)} if widths else {}),
        "step": lambda: secant.train_step(x, y, index),
        "first_order": lambda: first.train_step(x, y, index),
        "elbo": elbo_only,
        "prior": lambda: point_mass_prior(guide, secant.hyper, thetas, None, []),
    }
    out = interleaved_ms(runners, blocks, steps, warmup=3)
    with pyro.validation_enabled(False):
        ops = {"plain_aten_ops": aten_ops(plain), "step_aten_ops": aten_ops(runners["step"])}
    out["secant_ms"] = out["step_ms"] - out["first_order_ms"]
    out["svi_optimiser_bookkeeping_ms"] = out["step_ms"] - out["elbo_ms"]
    data_note = {"data": "random" if real is None else f"{real.name}, after {train_steps} steps"}
    return {**out, **ops, **data_note, **({"widths": list(widths)} if widths else {})}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--blocks", type=positive(int), default=5)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=300,
        help="steps on Fashion-MNIST before the pruned-width timings (where it is available)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result: dict = {"threads": 1, "batch_size": 100, **environment()}
    for name, steps in (("mlp", 30), ("lenet5", 10)):
        result[name] = measure(name, args.blocks, steps)
        shown = {k: v if isinstance(v, str) else round(v, 3) for k, v in result[name].items()}
        print(name, shown, flush=True)
    real = real_data()
    for name, steps in (("mlp", 30), ("lenet5", 10)):  # where 90% of a run's steps are taken
        key = f"{name}_pruned"
        result[key] = measure(
            name, args.blocks, steps, pruned_widths(name), real=real, train_steps=args.train_steps
        )
        print(key, result[key], flush=True)
    write("profile_step", result)
    return result


if __name__ == "__main__":
    main()
