"""The second layer at the step its θ is released: why its final width follows the start.

Usage: ``.venv/bin/python benchmarks/release_state.py [--mults 1 2] [--batches 100 256]
[--seed 0] [--jobs 2]``.

From 600-200 LeNet-300-100 keeps 129-131 second-layer units at batch 256 and 93 at batch 100
(87-96 and 89-91 from 300-100; docs/method.md §6l). This script trains the shipped rule on full
Fashion-MNIST (Adam 1e-3, 1 thread) with the starting widths scaled by each ``--mults`` and each
batch size, stops at the step where the second layer (fc2, released first by Eq. (10o)) is
released, and reads, per fc2 unit: its evidence m (the θ optimiser's average of the per-example
θ-gradient, Eq. (10); m > 0 means θ moves to 0), its price τ KL_s / N under the coupled
posterior (Eq. (4c): every live fc1 input counted, all of them at this step), its value
price − m, and how often it is active on 10,000 training examples. It also prices the units
against only the fc1 units whose own evidence favours keeping them (a gate-side Eq. (14e)).
Writes ``results/release_state.json`` and its table in README.md.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

SAMPLE = 10_000


def measure(mult: float, batch: int, seed: int) -> dict:
    import pyro
    import torch

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.loop import batches
    from bayesprune.models.distributions import point_mass_structured_kl
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, None, mult)
    trainer = Trainer(net, data, TrainConfig(seed=seed, batch_size=batch))
    with pyro.validation_enabled(False):
        while "fc2" not in trainer.release_steps:
            for x, y, index in batches(trainer.data, batch, trainer.device):
                trainer.train_step(x, y, index)
                if "fc2" in trainer.release_steps:
                    break
    guide, hyper, n = trainer.guide, trainer.hyper, len(trainer.data.x_train)

    def evidence(layer: str) -> torch.Tensor:
        return trainer.optim.gates.state[guide.theta_parameters([layer])[0]]["evidence"]

    def price(inputs: torch.Tensor) -> torch.Tensor:
        layer = trainer.net.layers["fc2"]
        sq = layer.weight.detach().square() @ inputs + layer.bias.detach().square()
        kl = point_mass_structured_kl(sq, guide.slab_var("fc2"), hyper.rho, 1 + inputs.sum())
        return hyper.temperature * kl / n

    m = evidence("fc2")
    live = guide.gate_probs("fc1").detach()
    priced = price(live)
    value = priced - m
    keeping = (evidence("fc1") <= 0).float()
    priced_keeping = price(keeping)
    with torch.no_grad():
        h = trainer.data.x_train[:SAMPLE]
        relus = []
        for module in trainer.net.to_sequential():
            h = module(h)
            if isinstance(module, torch.nn.ReLU):
                relus.append(h)
        active = (relus[1] > 0).float().mean(0)
    return {
        "mult": mult,
        "batch_size": batch,
        "seed": seed,
        "release_step": trainer.step,
        "examples": trainer.step * batch,
        "fc1_width": len(live),
        "fc2_width": len(m),
        "fc2_leaving": int((m > 0).sum()),
        "fc2_price_median": float(priced.median()),
        "fc2_value_median": float(value.median()),
        "fc2_rare": int((active < 0.01).sum()),
        "fc1_keeping": int(keeping.sum()),
        "fc2_price_at_keeping_median": float(priced_keeping.median()),
        "fc2_below_price_at_keeping": int((value < priced_keeping).sum()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--mults", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 256])
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--jobs", type=positive(int), default=2)
    args = parser.parse_args(argv)
    jobs = [(mult, batch, args.seed) for mult in args.mults for batch in args.batches]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    for run in runs:
        print(run, flush=True)
    result = {"commit": commit(), "cpu": cpu_model(), "threads": 1, "runs": runs}
    write("release_state", result)
    return result


if __name__ == "__main__":
    main()
