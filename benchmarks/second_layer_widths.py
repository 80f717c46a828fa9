"""What the objective asks of the second layer's width, with every width trained from scratch.

Usage: ``.venv/bin/python benchmarks/second_layer_widths.py [--fc2 25 50 90 130 200]
[--fc1 50 150 300] [--fc1-at 85] [--fc2-at 90] [--dataset fashion-mnist|teacher]
[--train-subset N] [--lr 1e-3] [--batch-size 100] [--seeds 0 1 2 3] [--price P] [--jobs 2]
[--name second_layer_widths]``.

LeNet-300-100 keeps 48 / 89 / 93 second-layer units from the starts 150-50 / 300-100 / 600-200
(batch 100, full Fashion-MNIST; docs/method.md §6n), and ``benchmarks/profile_value.py`` finds
the kept units worth 5-22 times their price even when the others take over (linear
reconstruction). Linear take-over is an upper bound on a unit's profile cost; this script
measures the profile itself: dense networks 784-``fc1-at``-k-10 for each second-layer width k in
``--fc2``, and 784-k-``fc2-at``-10 for each first-layer width k in ``--fc1`` (by default 85 and
90, where every start's first layer and the 300-100 start's second layer end on the full set),
trained with plain PyTorch and the matrix's recipe (Adam 1e-3, batch 100, 10 epochs, 1 thread),
on the full training set or, with ``--train-subset``, on each seed's subset as the matrix draws
it (``--dataset teacher``: the demo's 20,000 teacher examples instead). Per network: the final
training data term (mean cross-entropy over the whole training set, evaluation mode), its test
error, and the objective per example it implies, data term + price × the hidden layers' live
weights (inputs + 1 per first-layer unit, k₁ + 1 per second-layer unit: under Eq. (4c) a weight
costs while both its ends are on), ``--price`` being the price of one weight per example at
τ(60,000) that profile_value.py's measured unit prices imply (3.9e-5 for a second-layer unit
with 82 inputs and a bias, 4.5e-4 for a first-layer unit with 785 inputs and 89 outputs: about
4.8e-7 per weight at N = 60,000; τ(N)/N ∝ N^(−½), Eq. (13), scales it to other N). Where the
objective is lowest is the width the price asks for, whatever a run starts from.
Writes ``results/second_layer_widths.json`` and its README table.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, description, mean_nll, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

PRICE_60K = 4.8e-7  # one live weight's price per example at τ(60,000) (profile_value.py)


def weight_price(n: int) -> float:
    """A live weight's price per example at N = ``n``: τ(N)/N ∝ N^(−½) (Eq. (13))."""
    return PRICE_60K * (60_000 / n) ** 0.5


def run_sweep(name: str, measure, jobs: list, workers: int, price: float, **settings) -> dict:
    """Train every job (``measure(*job)``) in ``workers`` processes, add each run's objective
    per example (its final training data term + ``price`` per gated weight), and write
    ``results/<name>.json`` with ``settings``. One worker trains in this process."""
    if workers <= 1:
        runs = [measure(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(measure, *zip(*jobs, strict=True)))
    for run in runs:
        run["objective"] = run["train_data_term"] + run["gated_weights"] * price
        print(run, flush=True)
    result = {
        "commit": commit(),
        "cpu": cpu_model(),
        "threads": 1,
        "price": price,
        **settings,
        "runs": runs,
    }
    write(name, result)
    return result


def measure(
    fc1: int,
    fc2: int,
    seed: int,
    epochs: int,
    subset: int | None,
    lr: float,
    dataset: str,
    batch_size: int = 100,
) -> dict:
    import torch

    from bayesprune.baseline import train_dense
    from bayesprune.data import load_dataset
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    if subset is not None:
        data = data.subset(subset, seed=seed)
    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, (fc1, fc2))
    inputs = net.layers["fc1"].in_features
    summary = train_dense(net, data, epochs, batch_size, lr, seed)
    plain = net.to_sequential().eval()
    return {
        "fc1": fc1,
        "fc2": fc2,
        "seed": seed,
        "train_data_term": mean_nll(plain, data.x_train, data.y_train, 5000),
        "test_error": summary["test_error"],
        "gated_weights": fc1 * (inputs + 1) + fc2 * (fc1 + 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--fc2", type=int, nargs="+", default=[25, 50, 90, 130, 200])
    parser.add_argument("--fc1", type=int, nargs="+", default=[50, 150, 300])
    parser.add_argument("--fc1-at", type=int, default=85, help="fc1 width of the fc2 sweep")
    parser.add_argument("--fc2-at", type=int, default=90, help="fc2 width of the fc1 sweep")
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "teacher"])
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per step")
    parser.add_argument("--name", default="second_layer_widths")
    parser.add_argument("--seeds", type=seed_type, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--price",
        type=float,
        default=None,
        help="per weight and example (default 4.8e-7 × (60,000 / N)^½)",
    )
    parser.add_argument("--jobs", type=positive(int), default=2)
    args = parser.parse_args(argv)
    n = {"fashion-mnist": 60_000, "teacher": 20_000}[args.dataset]
    n = n if args.train_subset is None else args.train_subset
    price = weight_price(n) if args.price is None else args.price
    shapes = [(args.fc1_at, k) for k in args.fc2] + [(k, args.fc2_at) for k in args.fc1]
    shapes = list(dict.fromkeys(shapes))
    jobs = [
        (k1, k2, s, args.epochs, args.train_subset, args.lr, args.dataset, args.batch_size)
        for k1, k2 in shapes
        for s in args.seeds
    ]
    return run_sweep(
        args.name,
        measure,
        jobs,
        args.jobs,
        price,
        epochs=args.epochs,
        dataset=args.dataset,
        train_subset=args.train_subset,
        lr=args.lr,
        batch_size=args.batch_size,
        fc1_at=args.fc1_at,
        fc2_at=args.fc2_at,
    )


if __name__ == "__main__":
    main()
