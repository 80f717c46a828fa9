"""LeNet-5-Caffe on Fashion-MNIST: dense against bayesprune (issue 3's benchmark).

Usage: ``.venv/bin/python benchmarks/fmnist_lenet5.py [--epochs 10] [--threads 1]``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fashion_mnist_main  # noqa: E402

from bayesprune.models.network import lenet5  # noqa: E402

if __name__ == "__main__":
    fashion_mnist_main(
        __doc__, "fmnist_lenet5", lambda data: lenet5(data.in_shape, data.num_classes)
    )
