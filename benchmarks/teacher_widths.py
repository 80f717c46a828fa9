"""What issue 9's teacher target asks: narrow dense students against bayesprune's widths.

Usage: ``.venv/bin/python benchmarks/teacher_widths.py [--seeds 0 1] [--jobs 2]``. On the embedded
teacher data (4 inputs, teacher widths 10-5, 3 classes, 20,000 noise-free training examples)
it trains

- dense students (plain PyTorch, the dense recipe of every benchmark) of the full starting
  widths and of narrow widths, among them the target's bound 20-10 (within 2× of 10-5);
- bayesprune from 300-100 and 32-16 at the shipped temperature τ(N) = 0.03·(N/60,000)^½ and at
  the fixed τ = 0.3 and 1 (the Bayesian posterior),

each for 10 epochs (``make demo``'s recipe) and 30, and writes ``results/teacher_widths.json``
and its table in ``README.md``. One run takes seconds; the whole script a few minutes.
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import commit, cpu_model, seed_type, write  # noqa: E402

from bayesprune.config import positive  # noqa: E402

DENSE_WIDTHS = [(300, 100), (32, 16), (49, 7), (20, 10), (10, 5)]
STARTS = [(300, 100), (32, 16)]
TEMPERATURES = [None, 0.3, 1.0]  # None: the shipped τ(N)
EPOCHS = [10, 30]


def run(kind: str, widths: tuple[int, ...], epochs: int, seed: int, tau: float | None) -> dict:
    """One training on the teacher data; its widths, test error and weights kept."""
    import torch

    from bayesprune.baseline import train_dense
    from bayesprune.config import TrainConfig
    from bayesprune.data import load_dataset
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import build_network

    torch.set_num_threads(1)
    data = load_dataset("teacher")
    torch.manual_seed(seed)
    net = build_network("mlp", data.in_shape, data.num_classes, widths)
    out = {"kind": kind, "start": list(widths), "epochs": epochs, "seed": seed}
    if kind == "dense":
        summary = train_dense(net, data, epochs, seed=seed)
        out.update(widths=list(widths), test_error=summary["test_error"])
    else:
        config = TrainConfig(epochs=epochs, seed=seed, temperature=tau)
        summary = Trainer(net, data, config).fit(progress=False)
        out.update(
            widths=summary["widths"],
            test_error=summary["test_error"],
            temperature=summary["temperature"],
            weights_kept_fraction=summary["weights_kept_fraction"],
            status=summary["status"],
        )
    print(kind, widths, epochs, seed, tau, out["widths"], out["test_error"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=seed_type, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=positive(int), default=2, help="processes (1 thread each)")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--name", default="teacher_widths")
    args = parser.parse_args()
    jobs = [("dense", w, e, s, None) for w in DENSE_WIDTHS for e in EPOCHS for s in args.seeds]
    jobs += [
        ("bayesprune", w, e, s, t)
        for w in STARTS
        for t in TEMPERATURES
        for e in EPOCHS
        for s in args.seeds
    ]
    started_at = commit()  # the code the runs import, whatever is committed while they run
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    write(
        args.name,
        {"runs": runs, "seeds": args.seeds, "commit": started_at, "cpu": cpu_model()},
        args.results_dir,
    )


if __name__ == "__main__":
    main()
