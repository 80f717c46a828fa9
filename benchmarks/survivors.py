"""Are the units a run keeps decided, and what are they worth out of sample?

Usage: ``.venv/bin/python benchmarks/survivors.py [--arch mlp] [--widths 300,100]
[--train-subset N] [--seeds 0] [--jobs 2] [--set key=value ...] [--dataset fashion-mnist]
--name NAME`` (10 epochs, the shipped rule unless ``--set`` says otherwise; a LeNet-300-100
run on Fashion-MNIST about a minute, LeNet-5 on the full set about six).

After ``Trainer.fit`` it reads, for every live unit of every gated layer,

- the θ optimiser's evidence m (the running average of the θ-gradient per example: positive
  when the unit costs more than it is worth) and se(m) of Eq. (10s), and summarises m/se per
  layer (how many survivors are *decided*, i.e. worth their price by z standard errors);
- for the last hidden layer, on the posterior-mode network, each unit's value alone: the mean
  cross-entropy increase when its output is set to 0, on the N training examples and on the
  10,000 test examples (the test set is read by this diagnostic only), against its price
  τ·∂KL/∂θ_s / N (the prior's closed form, with the run's (10e) heading).

With ``--first-layer`` (MLPs), the same for the first hidden layer, whose units feed another
hidden layer rather than the read-out: each live unit's value alone on 20,000 training examples
and on the test examples, beside the value θ's evidence gives it (price − m: the secant of Eq.
(9s) averaged over the last evidence window), their correlation, and the units the evidence
keeps (m < 0) whose value alone on the training examples is below their price (docs/method.md
§6zze).

Writes ``results/<name>.json`` and its table in ``README.md`` (docs/method.md §6y).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import add_overrides_option, parse_overrides  # noqa: E402

from bayesprune.config import positive  # noqa: E402

QUANTILES = (0.1, 0.5, 0.9)


def _quantiles(values) -> list[float]:
    if len(values) == 0:
        return []
    return [float(q) for q in torch.as_tensor(values).quantile(torch.tensor(QUANTILES))]


def unit_values(head, tail, x, y) -> torch.Tensor:
    """Each last-hidden unit's value alone: the mean cross-entropy increase over ``(x, y)`` when
    its output is 0. ``head`` maps inputs to the last hidden layer's outputs, ``tail`` is the
    read-out (a Linear): silencing unit u shifts the logits by −h_u·W[:, u]."""
    with torch.no_grad():
        h = torch.cat([head(xb) for xb in x.split(2000)])
        logits = tail(h)
        base = F.cross_entropy(logits, y, reduction="none")
        return torch.tensor([
            (F.cross_entropy(logits - h[:, u : u + 1] * tail.weight[:, u], y, reduction="none")
             - base).mean().item()
            for u in range(h.shape[1])
        ])  # fmt: skip


def layer_values(head, tail, x, y) -> torch.Tensor:
    """Each unit's value alone in the layer whose outputs ``head`` gives (a hidden layer read by
    more hidden layers): the mean cross-entropy increase over ``(x, y)`` with its output 0."""
    with torch.no_grad():
        h = torch.cat([head(xb) for xb in x.split(5000)])
        base = F.cross_entropy(tail(h), y)
        values = []
        for u in range(h.shape[1]):
            silenced = h.clone()
            silenced[:, u] = 0
            values.append((F.cross_entropy(tail(silenced), y) - base).item())
        return torch.tensor(values)


def first_layer(trainer, mode, price, m, test) -> dict:
    """The first hidden layer's units: value alone on 20,000 training examples and on ``test``,
    against their price and the value θ's evidence gives them (price − m)."""
    from torch import nn

    relu = next(i for i, module in enumerate(mode) if isinstance(module, nn.ReLU))
    head, tail = mode[: relu + 1], mode[relu + 1 :]
    x, y = trainer.data.x_train, trainer.data.y_train
    sample = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:20_000]
    train = layer_values(head, tail, x[sample], y[sample])
    held = layer_values(head, tail, *test)
    evidence = price - m  # the value θ's evidence reads: m = price − value
    return {
        "units": len(train),
        "price": _quantiles(price.tolist()),
        "value_train": _quantiles(train.tolist()),
        "value_test": _quantiles(held.tolist()),
        "value_evidence": _quantiles(evidence.tolist()),
        "below_price_train": int((train < price).sum()),
        "below_price_test": int((held < price).sum()),
        "kept_below_price_train": int(((m < 0) & (train < price)).sum()),
        "evidence_train_corr": float(torch.corrcoef(torch.stack([evidence, train]))[0, 1]),
    }


def measure(
    arch: str, widths, subset, seed: int, overrides: dict, dataset: str = "fashion-mnist",
    first: bool = False,
) -> dict:
    """Train one run; return its survivors' evidence and the last hidden layer's values."""
    import pyro
    from torch import nn

    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.export import deterministic_network
    from bayesprune.inference.elbo_fast import point_mass_prior
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    pyro.set_rng_seed(0)
    torch.manual_seed(seed)
    net = build_network(arch, data.in_shape, data.num_classes, widths, 1.0)
    config = TrainConfig(seed=seed, train_subset=subset, **overrides)
    trainer = Trainer(net, data, config)
    summary = trainer.fit(progress=False)
    guide, gated = trainer.guide, list(trainer.net.gated)
    state = trainer.optim.gates.state
    # each unit's price per example, τ KL_s / N with the producers priced as θ's step prices
    # them (Eq. (10e)): m is this less the unit's value
    thetas = {n: guide.gate_probs(n).detach() for n in gated}
    theta_grads: dict = {}
    with torch.no_grad():
        point_mass_prior(guide, trainer.hyper, thetas, None, [], vertex=trainer.heading_for(),
                         theta_grads=theta_grads)  # fmt: skip
    prices = {n: theta_grads[n] / len(trainer.data.x_train) for n in gated}
    layers = {}
    for name, p in zip(gated, guide.theta_parameters(), strict=True):
        live = guide.mode_mask(name)
        m = state[p]["evidence"][live]
        se = state[p].get("evidence_se")
        ratio = (m / se[live]).tolist() if se is not None else []
        layers[name] = {
            "live": int(live.sum()),
            "costly": int((m > 0).sum()),  # worth less than their price on the point estimate
            "m": _quantiles(m.tolist()),
            "m_over_se": _quantiles(ratio),
            "within_2se": sum(abs(r) < 2 for r in ratio),
            "price": _quantiles(prices[name][live].tolist()),
        }
    # the last hidden layer, unit by unit, on the posterior-mode network
    name = gated[-1]
    live = guide.mode_mask(name)
    price = prices[name][live]
    mode = deterministic_network(guide).eval()
    last = max(i for i, m in enumerate(mode) if isinstance(m, nn.Linear))
    head, tail = mode[:last], mode[last]
    train = unit_values(head, tail, trainer.data.x_train, trainer.data.y_train)
    test = unit_values(head, tail, data.x_test, data.y_test)
    if first:
        layer0 = gated[0]
        kept = guide.mode_mask(layer0)
        p = next(iter(guide.theta_parameters()))
        extra = {"first_layer": {"layer": layer0, **first_layer(
            trainer, mode, prices[layer0][kept], state[p]["evidence"][kept],
            (data.x_test, data.y_test),
        )}}  # fmt: skip
    else:
        extra = {}
    return {
        **extra,
        "arch": arch,
        "dataset": dataset,
        "seed": seed,
        "train_subset": subset,
        "overrides": overrides,
        "epochs": summary["epochs"],
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "layers": layers,
        "last_hidden": {
            "layer": name,
            "units": len(train),
            "price": _quantiles(price.tolist()),
            "value_train": _quantiles(train.tolist()),
            "value_test": _quantiles(test.tolist()),
            "below_price_train": int((train < price).sum()),
            "below_price_test": int((test < price).sum()),
            "negative_test": int((test < 0).sum()),
            "optimism_over_price": float(((train - test) / price).median()),
        },
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--arch", default="mlp", choices=["mlp", "lenet5"])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--widths", default=None, help="e.g. 600,200 (default: the arch's)")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument(
        "--first-layer", action="store_true",
        help="also the first hidden layer's units (MLPs): value alone, direct and as θ's "
        "evidence reads it",
    )  # fmt: skip
    add_overrides_option(parser)
    parser.add_argument("--name", required=True, help="results/<name>.json")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    args = parser.parse_args(argv)
    if args.first_layer and args.arch != "mlp":
        parser.error("--first-layer reads an MLP's first hidden layer (not --arch lenet5)")
    widths = None if args.widths is None else tuple(int(w) for w in args.widths.split(","))
    overrides = parse_overrides(args.set)
    started_at = commit()
    jobs = [
        (args.arch, widths, args.train_subset, seed, overrides, args.dataset, args.first_layer)
        for seed in args.seeds
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    result = {"survivors": runs, "commit": started_at, "cpu": cpu_model(), "threads": 1}
    for run in runs:
        print(run["widths"], run["test_error"], run["last_hidden"])
    write(args.name, result, args.results_dir)
    return result


if __name__ == "__main__":
    main()
