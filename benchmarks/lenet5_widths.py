"""What the objective asks of LeNet-5's widths, with every width trained from scratch.

Usage: ``.venv/bin/python benchmarks/lenet5_widths.py [--center 20 24 90] [--conv1 10 40]
[--conv2 12 50] [--fc1 45 180] [--train-subset 10000] [--seeds 0 1 2] [--jobs 2]
[--at 100 400 1000] [--name lenet5_widths]``.

The LeNet-300-100 version of this question is ``second_layer_widths.py`` (docs/method.md §6n).
Here: dense LeNet-5-Caffe networks (conv 5×5, pool, conv 5×5, pool, fc, fc) whose three hidden
widths are the ``--center`` (by default what the shipped rule keeps at 10,000 examples: 20
conv1 filters, 22-25 conv2 filters, 84-96 fc1 units) with one layer at a time moved to each
width of its sweep, trained with plain PyTorch and the matrix's recipe (Adam 1e-3, batch 100,
10 epochs, 1 thread) on each seed's subset as the matrix draws it. Per network: the final
training data term (mean cross-entropy over the training set, evaluation mode), the test
error, and the objective per example, data term + price × the live weights of the gated
layers (every weight and bias but the output layer's: under Eq. (4c) a weight costs while both
its ends are on), the price per weight 4.8e-7 × (60,000 / N)^½ as in second_layer_widths.py.
With ``--at STEP ...`` each network's training data term is also measured after those steps
(the run's ``curve``), so the table says which width the objective prefers at each point of
training, e.g. when the shipped rule decides a layer (docs/method.md §6p).
Writes ``results/<name>.json`` and its README table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import description, mean_nll, seed_type  # noqa: E402
from second_layer_widths import run_sweep, weight_price  # noqa: E402

from bayesprune.config import positive  # noqa: E402


def measure(
    widths: tuple[int, int, int], seed: int, epochs: int, subset: int | None, at: tuple = ()
) -> dict:
    import torch

    from bayesprune.baseline import train_dense
    from bayesprune.data import load_dataset
    from bayesprune.models.network import lenet5

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    if subset is not None:
        data = data.subset(subset, seed=seed)
    torch.manual_seed(seed)
    net = lenet5(data.in_shape, data.num_classes, widths=widths)
    curve: list[dict] = []

    def monitor(step: int, model) -> None:
        if step in at:
            model.eval()
            term = mean_nll(model, data.x_train, data.y_train, 2000)
            curve.append({"step": step, "train_data_term": term})
            model.train()

    summary = train_dense(net, data, epochs, 100, 1e-3, seed, monitor=monitor if at else None)
    plain = net.to_sequential().eval()
    linears = [m for m in plain.modules() if isinstance(m, torch.nn.Linear)]
    output = sum(p.numel() for p in linears[-1].parameters())
    return {
        "widths": list(widths),
        "seed": seed,
        "train_data_term": mean_nll(plain, data.x_train, data.y_train, 2000),
        "test_error": summary["test_error"],
        "gated_weights": sum(p.numel() for p in plain.parameters()) - output,
        **({"curve": curve} if at else {}),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--center", type=int, nargs=3, default=[20, 24, 90])
    parser.add_argument("--conv1", type=int, nargs="*", default=[10, 40])
    parser.add_argument("--conv2", type=int, nargs="*", default=[12, 50])
    parser.add_argument("--fc1", type=int, nargs="*", default=[45, 180])
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--seeds", type=seed_type, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=positive(int), default=2)
    parser.add_argument(
        "--at", type=int, nargs="*", default=[], help="steps at which to measure the data term too"
    )
    parser.add_argument("--name", default="lenet5_widths")
    args = parser.parse_args(argv)
    center = tuple(args.center)
    shapes = [center]
    for layer, sweep in enumerate((args.conv1, args.conv2, args.fc1)):
        for k in sweep:
            shape = list(center)
            shape[layer] = k
            shapes.append(tuple(shape))
    at = tuple(sorted(set(args.at)))
    steps = args.epochs * math.ceil((args.train_subset or 60_000) / 100)  # batch 100
    if at and (at[0] < 1 or at[-1] > steps):  # (a step never reached left the table a KeyError)
        parser.error(f"--at: steps from 1 to the runs' {steps} ({args.epochs} epochs), got {at}")
    jobs = [(shape, s, args.epochs, args.train_subset, at) for shape in shapes for s in args.seeds]
    price = weight_price(60_000 if args.train_subset is None else args.train_subset)
    return run_sweep(
        args.name,
        measure,
        jobs,
        args.jobs,
        price,
        epochs=args.epochs,
        train_subset=args.train_subset,
        center=list(center),
        **({"at": list(at)} if at else {}),
    )


if __name__ == "__main__":
    main()
