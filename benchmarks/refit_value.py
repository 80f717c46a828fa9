"""A unit's value with its consumer held fixed (what the gate's evidence measures) against its
value once the consumer reads the unit's reconstruction from the other units, per gated layer.

The secant's evidence Δ_s (docs/method.md §3) is the data term's change when unit s is switched
off with every other weight fixed: Optimal Brain Damage's saliency. A removal is followed by
training, and the first thing that can take over is the consumer, the layer that reads unit s.
The cheapest take-over is linear: the consumer re-wired to read s's least-squares
reconstruction from the layer's other live units and a constant (the merge move of s into all
the others, Eq. (14j) with one unit; to second order in a Kronecker-factored metric this is
Optimal Brain Surgeon's saliency, Δ_s (1 − R²_s)). If the last hidden layer were over-kept
because its evidence ignores such take-overs more than the other layers' does, its ratio
Δ_s / Δ_s^lin would exceed theirs by about the price factor its units tolerate (docs §6zi:
about 2 for LeNet-300-100, at least 4 for LeNet-5).

For a cell (the default rule, ``robustness_matrix.py``'s recipe) the script trains one run and,
on its posterior-mode network, for every live unit s of every gated layer measures

- Δ_s: the mean cross-entropy's increase when s's output is set to 0 (consumer fixed);
- Δ_s^lin: the increase once the consumer reads s's reconstruction (fitted on the same
  examples' inputs) instead of s,

on ``--examples`` of the run's training examples and, with the same weights, on the 10,000
test examples (a diagnostic only). Per layer: the medians, the ratio Δ/Δ^lin (median over the
units and pooled, Σ Δ / Σ Δ^lin), and the pooled ratio over the other layers'. Writes
``results/<name>.json`` and its README table.

Usage: ``.venv/bin/python benchmarks/refit_value.py [--cells mlp-n60k lenet5-n60k] [--seed 0]
[--examples 10000] [--jobs 2] [--name refit_value]``. One thread per process.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, seed_type, write  # noqa: E402
from robustness_matrix import (  # noqa: E402
    CASES,
    cell_config,
    cell_data,
    cell_network,
    training_data,
)

from bayesprune.config import positive  # noqa: E402


def unit_off(received, unit: int, width: int):
    """``received`` (what the consumer reads) with unit ``unit`` of its ``width`` producers off."""
    h = received.clone()
    if h.dim() == 4:  # a convolution's maps: one channel per unit
        h[:, unit] = 0
    else:  # a Linear's input, or a Flatten's: P contiguous columns per unit
        h.view(h.shape[0], width, -1)[:, unit] = 0
    return h


def data_term(net, gates, consumer: str, received, y, wb) -> float:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = net.run_ops(received, gates, params={consumer: wb}, start=net.op_index(consumer))
        return float(F.cross_entropy(logits, y))


def reconstruction_wb(net, consumer: str, gram, live: list[int], unit: int, width: int):
    """The consumer's [W | b] re-wired to read unit ``unit``'s least-squares reconstruction
    from the other live units and a constant (``gram``: their second moments with the
    constant last), the merge move of the unit into all the others (Eq. (14j) with one unit)."""
    import torch

    from bayesprune.inference.merge import joint_coefficients, rewire_jointly

    layer = net.layers[consumer]
    kept = [u for u in live if u != unit] + [gram.shape[0] - 1]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    ridge = 1e-8 * float(gram.diagonal()[:-1].mean())
    coef = joint_coefficients(gram, ridge, eye, kept, [unit])
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    rewire_jointly(weight, bias, kept, [unit], coef, width)
    return torch.cat([weight.flatten(1), bias.unsqueeze(-1)], 1)


def layer_values(net, gates, layer: str, x, y, x_test, y_test):
    """Per live unit of ``layer``: Δ (consumer fixed) and Δ^lin (the consumer re-wired to the
    unit's linear reconstruction from the others, fitted on the inputs of x), on the training
    examples (x, y) and, with the same weights, on (x_test, y_test)."""
    import torch

    from bayesprune.inference.merge import unit_features

    consumer = net.next_layer(layer)
    stop, width = net.op_index(consumer), net.width(layer)
    with torch.no_grad():
        received = net.run_ops(x, gates, stop=stop)
        received_test = net.run_ops(x_test, gates, stop=stop)
        f = unit_features(received, width).double()
        f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)
        gram = f.T @ f / len(f)
        del f
    live = torch.nonzero(gates[layer]).flatten().tolist()
    wb0 = net.augmented(consumer).detach()
    full = {
        "fixed": data_term(net, gates, consumer, received, y, wb0),
        "fixed_test": data_term(net, gates, consumer, received_test, y_test, wb0),
    }
    rows = {k: [] for k in ("fixed", "linear", "fixed_test", "linear_test")}
    for unit in live:
        off, off_test = unit_off(received, unit, width), unit_off(received_test, unit, width)
        rows["fixed"].append(data_term(net, gates, consumer, off, y, wb0) - full["fixed"])
        rows["fixed_test"].append(
            data_term(net, gates, consumer, off_test, y_test, wb0) - full["fixed_test"]
        )
        wb = reconstruction_wb(net, consumer, gram, live, unit, width)
        rows["linear"].append(data_term(net, gates, consumer, off, y, wb) - full["fixed"])
        rows["linear_test"].append(
            data_term(net, gates, consumer, off_test, y_test, wb) - full["fixed_test"]
        )
    return consumer, full, rows


def summarise(rows: dict) -> dict:
    """Medians of every measure, and the ratio of Δ to its re-wired value."""
    import torch

    out = {key: float(torch.tensor(v, dtype=torch.float64).median()) for key, v in rows.items()}
    fixed = torch.tensor(rows["fixed"], dtype=torch.float64)
    out["units"] = len(fixed)
    after = torch.tensor(rows["linear"], dtype=torch.float64)
    out["ratio_linear_median"] = float((fixed / after.clamp(min=1e-12)).median())
    out["ratio_linear_pooled"] = float(fixed.sum() / after.sum())
    out["linear_at_or_below_zero"] = int((after <= 0).sum())
    return out


def run(case: str, seed: int, examples: int) -> dict:
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data = cell_data(case)
    trainer = Trainer(cell_network(case, seed, data), data, cell_config(case, seed))
    summary = trainer.fit(progress=False)
    train = training_data(case, seed, data)
    net = trainer.net.eval()
    gates = trainer.guide.mode_gates()
    n = len(train.x_train)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:examples]
    x = train.x_train[pick].reshape(-1, *net.in_shape)
    y = train.y_train[pick]
    x_test, y_test = data.x_test.reshape(-1, *net.in_shape), data.y_test
    layers = {}
    for layer in net.gated:
        consumer, full, rows = layer_values(net, gates, layer, x, y, x_test, y_test)
        layers[layer] = {"consumer": consumer, "base": full,
                         **summarise(rows), "per_unit": rows}  # fmt: skip
        print(case, layer, {k: v for k, v in layers[layer].items() if k != "per_unit"}, flush=True)
    for layer, row in layers.items():  # this layer's pooled ratio over the other layers'
        others = [r for name, r in layers.items() if name != layer]
        fixed = sum(sum(r["per_unit"]["fixed"]) for r in others)
        linear = sum(sum(r["per_unit"]["linear"]) for r in others)
        row["ratio_over_others"] = row["ratio_linear_pooled"] / (fixed / linear) if others else None
    return {"case": case, "seed": seed, "n_train": n, "widths": summary["widths"],
            "test_error": summary["test_error"], "layers": layers}  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--cells", nargs="+", default=["mlp-n60k", "lenet5-n60k"])
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--examples", type=int, default=10000, help="training examples used")
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--name", default="refit_value")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells if c not in CASES]
    if unknown:
        parser.error(f"not cells of robustness_matrix.py: {unknown}")
    jobs = [(c, args.seed, args.examples) for c in args.cells]
    if args.jobs <= 1:
        runs = [run(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(run, *zip(*jobs, strict=True)))
    result = {"refit_value": runs, "examples": args.examples,
              "commit": commit(), "cpu": cpu_model(), "threads": 1}  # fmt: skip
    write(args.name, result)
    return result


if __name__ == "__main__":
    main()
