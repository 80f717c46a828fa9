"""LeNet-300-100 on Fashion-MNIST: dense against bayesprune (issue 2's benchmark).

Usage: ``.venv/bin/python benchmarks/fmnist_lenet300.py [--epochs 10] [--threads 1]``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fashion_mnist_main  # noqa: E402

from bayesprune.models.network import GatedMLP  # noqa: E402

if __name__ == "__main__":
    fashion_mnist_main(
        __doc__,
        "fmnist_lenet300",
        lambda data: GatedMLP(data.in_features, (300, 100), data.num_classes),
    )
