"""VGG16 (BatchNorm) on CIFAR-10: dense against bayesprune, for a GPU (issue 3's benchmark).

Usage on a GPU machine with CIFAR-10 in ``DIR/cifar-10-batches-py``:
``.venv/bin/python benchmarks/cifar10_vgg16.py --data-dir DIR [--epochs 60] [--device cuda]``

Both runs use Adam (lr 1e-3) with a cosine decay, batch 128, random crop (padding 4) and flip.
Target (issue 3): test error ≤ 7.5% with ≤ 10% of the weights kept. The CPU smoke run in
``tests/test_benchmarks.py`` runs this script at ``--width-mult 0.25`` on synthetic data.
Not yet run on CIFAR-10; at full width on a real image stand-in the current rule collapses
(docs/method.md §6f, ``benchmarks/gpu.py``).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compare, seed_type, write  # noqa: E402

from bayesprune.config import TrainConfig  # noqa: E402
from bayesprune.data import DataError, load_dataset  # noqa: E402
from bayesprune.models.network import vgg16  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the CPU smoke run)")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    parser.add_argument("--name", default="cifar10_vgg16", help="results/<name>.json")
    parser.add_argument("--results-dir", default=None, help="write the JSON elsewhere (smoke)")
    parser.add_argument("--no-step-cost", action="store_true", help="skip the step timing")
    args = parser.parse_args(argv)
    try:
        data = load_dataset("cifar10", args.data_dir)
    except DataError as err:  # the data are not on this machine: say where they go
        parser.error(str(err))
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_schedule="cosine",
        seed=args.seed,
        temperature=args.temperature,
        device=args.device,
    )

    def make_net():
        return vgg16(data.in_shape, data.num_classes, width_mult=args.width_mult)

    result = compare(
        data, make_net, config, threads=args.threads, measure_step_cost=not args.no_step_cost
    )
    write(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
