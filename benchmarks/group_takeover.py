"""Why single merge moves cannot take over a teacher's first-layer unit, and groups can (§6zb).

Trains the teacher (4 inputs, teacher widths 10-5, 20,000 examples) from each starting width
with the defaults (single merge moves only), then, on the final network and without changing
it, measures the test of Eq. (14) for groups of k of a layer's units taken over jointly by the
others: the units ordered by backward elimination (``MergeMoves._group_move``'s order), the
consumer re-wired to the group's least-squares reconstruction fitted on one half of the
training set, the loss change measured on the other half (``--held-out`` examples each).
k = 1 is a single move. Columns: N·mean(d), the noise term N·2·sd(d)/√n, ΔP (the prior's
change: the group's price saved, less what the re-wired weights now cost) and the bound
N(mean + 2 sd/√n) + ΔP (a move passes when it is below 0). Writes
``results/group_takeover.json`` and its table in README.md.

Usage: ``.venv/bin/python benchmarks/group_takeover.py [--starts 300,100 1000,500] [--seed 0]``
(about 1 minute).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import description, environment, seed_type, write  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import load_dataset  # noqa: E402
from bayesprune.inference.elbo_fast import point_mass_prior  # noqa: E402
from bayesprune.inference.merge import (  # noqa: E402
    elimination_order,
    joint_coefficients,
    rewire_jointly,
)
from bayesprune.inference.trainer import Trainer  # noqa: E402
from bayesprune.models import GatedMLP  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@torch.no_grad()
def takeover(guide, hyper, data, layer: str, held_out: int, seed: int) -> list[dict]:
    """The test of Eq. (14) for groups of ``layer``'s units on the trained network."""
    net = guide.net
    net.eval()
    names = list(net.layers)
    consumer = names[names.index(layer) + 1]
    gates = {n: torch.ones(net.width(n)) for n in net.gated}
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    fit, test = order[:held_out], order[held_out : 2 * held_out]
    start = net.op_index(consumer)
    h_fit = net.run_ops(data.x_train[fit], gates, stop=start)
    h, y = net.run_ops(data.x_train[test], gates, stop=start), data.y_train[test]
    width = h.shape[1]
    aug = torch.cat([h_fit, torch.ones(len(h_fit), 1)], 1).double()
    gram = aug.T @ aug / len(aug)
    ridge = 1e-8 * float(gram.diagonal().mean())
    eye = torch.eye(width + 1, dtype=gram.dtype)
    weight, bias = net.layers[consumer].weight.clone(), net.layers[consumer].bias.clone()

    def losses(w, b, g):
        z = F.linear(h, w, b)
        logits = net.run_ops(net.activate(consumer, z, g), g, start=start + 1)
        return F.cross_entropy(logits, y, reduction="none")

    def prior(w, b, g):
        other = copy.deepcopy(guide)
        other.net.layers[consumer].weight.copy_(w)
        other.net.layers[consumer].bias.copy_(b)
        return float(point_mass_prior(other, hyper, g, None, []))

    before, prior_before = losses(weight, bias, gates), prior(weight, bias, gates)
    # backward elimination, as MergeMoves._group_move orders the units
    inv = torch.linalg.inv(gram + ridge * eye)
    picks = elimination_order(inv, weight.square().sum(0).double(), width // 2)
    rows, n_data = [], len(data.x_train)
    for k in (k for k in SIZES if k <= width // 2):
        group = torch.tensor(picks[:k])
        keep = torch.ones(width, dtype=torch.bool)
        keep[group] = False
        kept = torch.cat([torch.nonzero(keep).flatten(), torch.tensor([width])])
        coef = joint_coefficients(gram, ridge, eye, kept, group)
        w, b = weight.clone(), bias.clone()
        rewire_jointly(w, b, kept, group, coef)
        g = {n: v.clone() for n, v in gates.items()}
        g[layer][group] = 0.0
        d = (losses(w, b, g) - before).double()
        mean, noise = float(d.mean()) * n_data, 2 * float(d.std()) / math.sqrt(len(d)) * n_data
        delta_prior = prior(w, b, g) - prior_before
        bound = mean + noise + delta_prior
        rows.append({"layer": layer, "width": width, "k": k, "data_nats": mean,
                     "noise_nats": noise, "delta_prior": delta_prior, "bound": bound})  # fmt: skip
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--starts", nargs="+", default=["300,100", "1000,500"])
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--held-out", type=int, default=10_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("teacher")
    result: dict = {"seed": args.seed, "held_out": args.held_out, "threads": 1, **environment()}
    runs = []
    for start in args.starts:
        widths = tuple(int(w) for w in start.split(","))
        torch.manual_seed(args.seed)
        trainer = Trainer(GatedMLP(data.in_features, widths, data.num_classes), data,
                          TrainConfig(seed=args.seed))  # fmt: skip
        summary = trainer.fit(progress=False, write_summary=False)
        rows = []
        for layer in trainer.net.gated:
            rows += takeover(trainer.guide, trainer.hyper, data, layer, args.held_out, args.seed)
        runs.append({"start": list(widths), "widths": summary["widths"],
                     "test_error": summary["test_error"], "rows": rows})  # fmt: skip
        for r in rows:
            print(start, r["layer"], r["k"], *(round(r[c], 2) for c in
                  ("data_nats", "noise_nats", "delta_prior", "bound")))  # fmt: skip
    result["group_takeover"] = runs
    write("group_takeover", result)
    return result


if __name__ == "__main__":
    main()
