"""LeNet-5-Caffe on Fashion-MNIST: dense against bayesprune (issue 3's benchmark).

Usage: ``.venv/bin/python benchmarks/fmnist_lenet5.py [--epochs 10] [--threads 1]``
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compare, write  # noqa: E402

from bayesprune.data import load_dataset  # noqa: E402
from bayesprune.inference.trainer import TrainConfig  # noqa: E402
from bayesprune.models.network import lenet5  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--name", default="fmnist_lenet5", help="results/<name>.json")
    parser.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    parser.add_argument("--lr-theta", type=float, default=TrainConfig.lr_theta)
    parser.add_argument("--theta-momentum", type=float, default=TrainConfig.theta_momentum)
    args = parser.parse_args()
    data = load_dataset("fashion-mnist", args.data_dir)
    config = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        temperature=args.temperature,
        lr_theta=args.lr_theta,
        theta_momentum=args.theta_momentum,
    )

    def make_net():
        return lenet5(data.in_shape, data.num_classes)

    write(args.name, compare(data, make_net, config, threads=args.threads))


if __name__ == "__main__":
    main()
