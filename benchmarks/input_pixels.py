"""Probe: what gates on the input values could buy, simulated by dropping the least useful ones.

The open lead "gates on the input pixels" (docs/method.md §8; the bound is §6zi) would let the
rule remove input values whose evidence is below the price of the weights they feed. Before
building it, this probe measures what it could buy at most, with a fixed selection in place of
the gates: for a cell of ``benchmarks/robustness_matrix.py`` and a fraction ``f``, keep the
``f`` of the input values ranked first by ``--select`` (the values are not re-standardised, as a
gate would leave them):

- ``variance``: largest variance over the cell's training examples (no labels used);
- ``evidence``: largest loss increase when the value is replaced by its training mean (an
  input gate closed, with the first layer's bias taking the mean's share, as a hidden unit's
  consumer bias does), measured exactly on up to 5,000 of the cell's training examples on the
  cell's dense network trained with its recipe and seed (the evidence an input gate would read,
  at the end of training instead of during it; with the inputs standardised as a whole, not
  per value, setting a value to 0 instead would move a background pixel by about one standard
  deviation of the whole image, a perturbation, not a removal),

and train, with the cell's recipe and seed,

- **dense, all inputs**: the cell's own dense network (the reference of issue 9's gap);
- **dense, kept inputs**: the same network reading only the kept values;
- **bayesprune, kept inputs**: the default rule on the kept values.

It reports the test errors, the widths, and the weights bayesprune keeps as a fraction of the
*full* network's (784 inputs), the number issue 9's P4 bound reads. A fixed cut is a hand-set
threshold, which the library does not ship; the probe bounds the lead, it is not it.

Usage: ``.venv/bin/python benchmarks/input_pixels.py [--cells mlp-n60k mlp-lr3e-4]
[--keep 0.75 0.5] [--seeds 0 1] [--select variance|evidence] [--jobs 2] [--name input_pixels]``
(``results/input_pixels_evidence.json``: ``--cells mlp-n60k mlp-lr3e-4 mlp-n10k --keep 0.9 0.75
--seeds 0 1 2 3 --select evidence``, 9 minutes); writes
``results/<name>.json`` and its table in ``README.md``. One process per run, one thread.
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
    dense_summary,
    training_data,
)

from bayesprune.config import positive  # noqa: E402

KEYS = ("test_error", "widths", "weights_kept", "weights_total", "status", "architecture")


def input_evidence(case: str, seed: int, data, config):
    """Per input value, the mean loss increase over up to 5,000 of the cell's training examples
    when that value is replaced by its mean over the cell's training examples, on the cell's
    dense network (all inputs) trained with the cell's recipe and seed."""
    from bayesprune.baseline import train_dense

    net = cell_network(case, seed, data)
    train = training_data(case, seed, data)
    train_dense(net, train, config.epochs, config.batch_size, config.lr, seed,
                schedule=config.lr_schedule)
    flat = train.x_train.reshape(len(train.x_train), -1)
    x = flat[:5000]
    return removal_evidence(net.to_sequential().eval(), x, train.y_train[: len(x)], flat.mean(0))


def removal_evidence(model, x, y, mean):
    """Per input value i, the mean cross-entropy increase over the examples ``x`` (flattened),
    labels ``y``, when x_i is replaced by ``mean[i]``, for ``model``, an ``nn.Sequential`` MLP
    (a leading ``Flatten``, then a ``Linear``). Exact: that moves the first layer's
    pre-activations by −(x_i − mean_i) W[:, i], and the rest of the network runs on that."""
    import torch
    import torch.nn.functional as F

    start = 1 if isinstance(model[0], torch.nn.Flatten) else 0
    first, rest = model[start], model[start + 1 :]
    with torch.no_grad():
        z = F.linear(x, first.weight, first.bias)
        base = F.cross_entropy(rest(z), y, reduction="sum")
        out = torch.empty(x.shape[1])
        for i in range(x.shape[1]):
            moved = z - (x[:, i : i + 1] - mean[i]) * first.weight[:, i]
            out[i] = (F.cross_entropy(rest(moved), y, reduction="sum") - base) / len(x)
    return out


def kept_inputs(data, keep: float, subset: int | None, seed: int, score=None):
    """``data`` reduced to the ``keep`` fraction of its input values ranked first by ``score``
    (one value per input; None: the variance over the training examples the cell trains on, its
    seeded subset where it has one), flattened; and the indices kept (sorted)."""
    import dataclasses
    import math

    train = data if subset is None else data.subset(subset, seed=seed)
    flat = train.x_train.reshape(len(train.x_train), -1)
    count = max(1, math.ceil(keep * flat.shape[1]))
    score = flat.var(0) if score is None else score
    index = score.topk(count).indices.sort().values
    return dataclasses.replace(
        data,
        x_train=data.x_train.reshape(len(data.x_train), -1)[:, index].contiguous(),
        x_test=data.x_test.reshape(len(data.x_test), -1)[:, index].contiguous(),
        meta={**data.meta, "inputs_kept": count},
    ), index


def run(case: str, seed: int, keep: float | None, select: str = "variance") -> dict:
    """One run: ``keep`` None is the dense network on all inputs; else dense and bayesprune on
    the kept inputs."""
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    spec, data = CASES[case], cell_data(case)
    config = cell_config(case, seed)
    out = {"case": case, "seed": seed, "keep": keep}
    if keep is None:
        dense = dense_summary(case, seed, data, config.epochs, config.batch_size, config.lr)
        out["dense_full"] = {k: dense[k] for k in KEYS if k in dense}
        return out
    score = input_evidence(case, seed, data, config) if select == "evidence" else None
    reduced, index = kept_inputs(data, keep, spec.get("train_subset"), seed, score)
    out["inputs_kept"] = len(index)
    dense = dense_summary(case, seed, reduced, config.epochs, config.batch_size, config.lr)
    out["dense_kept"] = {k: dense[k] for k in KEYS if k in dense}
    summary = Trainer(cell_network(case, seed, reduced), reduced, config).fit(progress=False)
    out["bayesprune"] = {k: summary[k] for k in KEYS if k in summary}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--cells", nargs="*", default=["mlp-n60k", "mlp-lr3e-4"])
    parser.add_argument("--keep", nargs="*", type=float, default=[0.75, 0.5])
    parser.add_argument("--seeds", nargs="*", type=seed_type, default=[0, 1])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    parser.add_argument("--select", choices=("variance", "evidence"), default="variance")
    parser.add_argument("--name", default="input_pixels")
    args = parser.parse_args(argv)
    for case in args.cells:
        if case not in CASES or CASES[case]["arch"] != "mlp":
            parser.error(f"{case}: an MLP cell of robustness_matrix.py is needed")
    if any(not 0 < k <= 1 for k in args.keep):
        parser.error("--keep takes fractions in (0, 1]")
    jobs = [(c, s, k, args.select) for c in args.cells for s in args.seeds
            for k in [None, *args.keep]]  # fmt: skip
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    result = {
        "input_pixels": True,
        "cells": args.cells,
        "keep": args.keep,
        "select": args.select,
        "seeds": args.seeds,
        "commit": commit(),
        "cpu": cpu_model(),
        "threads": 1,
        "runs": runs,
    }
    write(args.name, result)
    return result


if __name__ == "__main__":
    main()
