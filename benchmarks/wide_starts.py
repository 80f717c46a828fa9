"""What a wide start costs: LeNet-300-100 from ×1, ×2 and ×4 its widths on Fashion-MNIST.

Usage: ``.venv/bin/python benchmarks/wide_starts.py [--sizes 10000 60000] [--mults 1 2 4]
[--seeds 0] [--no-dense] [--name wide_starts]``. For every training-set size, starting width
multiple and seed, one process (1 thread) trains bayesprune with the default
:class:`~bayesprune.config.TrainConfig` (``train_subset`` drawn with the seed) and times its
merge rounds (Eq. (14), ``Trainer.merge``, wrapped), then the dense network of the starting
widths on the same examples (``bayesprune.baseline.train_dense``, the same recipe). Writes
``results/<name>.json`` and its table in ``README.md``.

A merge round inverts the Gram matrix of a layer's outputs, O(width³); before commit d57c9ce it
did so again after every accepted move, which made the rounds of a layer started at 1,200 units
cost more than its training steps (docs/method.md §6zu).
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

WIDTHS = (300, 100)  # LeNet-300-100


def run(size: int, mult: int, seed: int, dense: bool, dataset: str = "fashion-mnist",
        epochs: int = 10) -> dict:  # fmt: skip
    """One start: bayesprune's summary with its merge rounds' seconds, and the dense run's."""
    import torch

    from bayesprune.baseline import train_dense
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    start = [w * mult for w in WIDTHS]
    subset = None if size >= len(data.x_train) else size
    config = TrainConfig(seed=seed, epochs=epochs, train_subset=subset)
    torch.manual_seed(seed)
    trainer = Trainer(build_network("mlp", data.in_shape, data.num_classes, start), data, config)
    spent = [0.0]
    merge = trainer.merge

    def timed_merge():
        t0 = time.perf_counter()
        try:
            return merge()
        finally:
            spent[0] += time.perf_counter() - t0

    trainer.merge, trainer.echo = timed_merge, False
    summary = trainer.fit(progress=False)
    out = {
        "dataset": dataset,
        "epochs": epochs,
        "size": size if subset is not None else len(data.x_train),  # (what it trained on)
        "mult": mult,
        "seed": seed,
        "start": start,
        "widths": summary["widths"],
        "test_error": summary["test_error"],
        "weights_kept_fraction": summary["weights_kept_fraction"],
        "status": summary["status"],
        "train_wall_seconds": summary["train_wall_seconds"],
        "merge_seconds": spent[0],
    }
    if dense:
        trained = data if config.train_subset is None else data.subset(size, seed=seed)
        torch.manual_seed(seed)
        net = build_network("mlp", data.in_shape, data.num_classes, start)
        d = train_dense(net, trained, config.epochs, config.batch_size, config.lr, seed)
        out["dense"] = {k: d[k] for k in ("test_error", "train_wall_seconds")}
    print(size, start, seed, out["widths"], out["test_error"],
          round(out["train_wall_seconds"], 1), round(spent[0], 1), flush=True)  # fmt: skip
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=positive(int), nargs="+", default=[10_000, 60_000])
    parser.add_argument("--mults", type=positive(int), nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=seed_type, nargs="+", default=[0])
    parser.add_argument("--no-dense", action="store_true", help="bayesprune runs only")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=positive(int), default=10)
    parser.add_argument("--jobs", type=positive(int), default=1, help="processes (1 thread each)")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--name", default="wide_starts")
    args = parser.parse_args(argv)
    from bayesprune.data import DataError, load_dataset

    try:  # here, not in the workers after other runs have finished
        load_dataset(args.dataset)
    except (DataError, ValueError) as err:
        parser.error(f"--dataset {args.dataset}: {err}")
    dense = not args.no_dense
    jobs = [(n, m, s, dense, args.dataset, args.epochs)
            for n in args.sizes for m in args.mults for s in args.seeds]  # fmt: skip
    started_at = commit()  # the code the runs import, whatever is committed while they run
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    write(
        args.name,
        {"wide_starts": runs, "commit": started_at, "cpu": cpu_model(), "threads": 1},
        args.results_dir,
    )


if __name__ == "__main__":
    main()
