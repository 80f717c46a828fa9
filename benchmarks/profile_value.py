"""Each unit's profile value at the end of a run, against its price and the data's resolution.

Usage: ``.venv/bin/python benchmarks/profile_value.py [--runs 0.5:4096:3e-3 1:4096:3e-3 ...]
[--seed 0] [--jobs 2]``; each run is ``width multiplier:batch size:learning rate``.

The second layer's final width follows the starting width (docs/method.md §6l), and the merge
moves (Eq. (14)) that price redundancy remove few of its units. This script asks whether that is
the merge test's power or the objective. It trains the shipped rule (LeNet-300-100 on full
Fashion-MNIST, 10 epochs, 1 thread) and, on the final network, proposes the merge move of every
live unit of each hidden layer as Eq. (14) does (the consumer re-wired to the unit's linear
reconstruction from the others), fitting the reconstruction on 30,000 training examples and
measuring the change d of each of the other 30,000 examples' loss, and the change ΔP of the
prior term (its price, as the moves compute it). Per layer: the median price −ΔP/N and profile
cost mean(d); how many moves lower F on that mean; how many the merge test accepts, at z₁ = 2.28,
with the 2,048 held-out examples a round uses and with 30,000; and the price in standard errors
of a mean over the whole training set, −ΔP/N ÷ (sd(d)/√N). Nothing is accepted: every unit is
measured on the network as trained. Writes ``results/profile_value.json`` and its README table.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

HALF = 30_000  # examples fitting the reconstructions; the rest (30,000) measure the moves
Z1 = 2.28  # z of a unit's first merge test (Eq. (14a))


def layer_values(trainer, name: str, fit, held) -> dict:
    import torch
    import torch.nn.functional as F

    from bayesprune.inference.merge import unit_features

    moves, net, data = trainer.merges, trainer.net, trainer.data
    n = len(data.x_train)
    consumer = net.next_layer(name)
    layer = net.layers[consumer]
    gates = moves._mode_gates()
    start, width, block = net.op_index(consumer), net.width(name), net.blocks[consumer]

    def received(index):
        xs = data.x_train[index].reshape(len(index), *net.in_shape)
        return torch.cat([net.run_ops(c, gates, stop=start) for c in xs.split(2048)])

    def losses(z):
        logits = net.run_ops(net.activate(consumer, z, gates), gates, start=start + 1)
        return F.cross_entropy(logits, y, reduction="none")

    h_fit, h, y = received(fit), received(held), data.y_train[held]
    feats = unit_features(h_fit, width).to(torch.float64)
    aug = torch.cat([feats, feats.new_ones(feats.shape[0], 1)], 1)
    gram = aug.T @ aug / feats.shape[0]
    idx = torch.cat([torch.nonzero(gates[name].bool()).flatten(), torch.tensor([width])])
    ridge = 1e-8 * float(gram.diagonal().mean())
    inv = torch.linalg.inv(gram[idx][:, idx] + ridge * torch.eye(len(idx), dtype=gram.dtype))
    z = net.map(consumer, h)
    before = losses(z)
    priced = moves._pricing_gates(name, gates)
    prior = moves._prior(priced)
    cost, sd, price = [], [], []
    for pick in range(len(idx) - 1):
        unit = int(idx[pick])
        coef = -inv[:, pick] / inv[pick, pick]
        coef[pick] = 0.0
        gates[name][unit] = 0.0
        d = losses(z + moves._change(layer, h, width, unit, idx, coef)) - before
        saved = (layer.weight.detach().clone(), layer.bias.detach().clone())
        moves._rewire(layer, block, width, unit, idx, coef)
        price.append(-(moves._prior(priced) - prior) / n)
        layer.weight.copy_(saved[0])
        layer.bias.copy_(saved[1])
        gates[name][unit] = 1.0
        cost.append(float(d.mean()))
        sd.append(float(d.std()))
    units = [
        {"unit": int(u), "cost": c, "sd": d, "price": p}
        for u, c, d, p in zip(idx[:-1].tolist(), cost, sd, price, strict=True)
    ]
    cost, sd, price = (torch.tensor(v, dtype=torch.float64) for v in (cost, sd, price))
    quantiles = torch.quantile(cost, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "units": len(cost),
        "price_median": float(price.median()),
        "cost_q10_q50_q90": [float(q) for q in quantiles],
        "lower_F": int((cost < price).sum()),
        "accepted_2048": int((cost + Z1 * sd / 2048**0.5 < price).sum()),
        "accepted_30000": int((cost + Z1 * sd / len(held) ** 0.5 < price).sum()),
        "price_in_se_median": float((price / (sd / n**0.5)).median()),
        "per_unit": units,  # not kept in the JSON (measure drops it)
    }


def measure(mult: float, batch: int, lr: float, seed: int) -> dict:
    import pyro
    import torch

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, None, mult)
    trainer = Trainer(net, data, TrainConfig(seed=seed, batch_size=batch, lr=lr))
    with pyro.validation_enabled(False):
        summary = trainer.fit(progress=False, write_summary=False)
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    fit, held = order[:HALF], order[HALF:]
    trainer.net.eval()
    with torch.no_grad():
        layers = {name: layer_values(trainer, name, fit, held) for name in trainer.net.gated}
    for values in layers.values():
        values.pop("per_unit")
    return {
        "mult": mult,
        "batch_size": batch,
        "lr": lr,
        "seed": seed,
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "layers": layers,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument(
        "--runs", nargs="+", default=["0.5:4096:3e-3", "1:4096:3e-3", "2:4096:3e-3", "1:100:1e-3"]
    )
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--jobs", type=positive(int), default=2)
    args = parser.parse_args(argv)
    jobs = []
    for spec in args.runs:
        mult, batch, lr = spec.split(":")
        jobs.append((float(mult), int(batch), float(lr), args.seed))
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    for run in runs:
        print(run, flush=True)
    result = {"commit": commit(), "cpu": cpu_model(), "threads": 1, "runs": runs}
    write("profile_value", result)
    return result


if __name__ == "__main__":
    main()
