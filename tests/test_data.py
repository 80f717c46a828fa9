import gzip

import numpy as np
import pytest
import torch

from bayesprune.data import DataError, load_dataset, make_teacher


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _fake_mnist(root, folder="MNIST", gz=False, n=30):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, count in (("train", n), ("t10k", n // 3)):
        _write_idx(
            raw / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 255, (count, 28, 28)), gz
        )
        _write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (count,)), gz)
    return raw


def test_teacher_is_deterministic_and_labelled_by_the_teacher():
    a, b = make_teacher(num_train=500, num_test=100), make_teacher(num_train=500, num_test=100)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.meta["teacher_widths"] == [10, 5]
    assert a.in_features == 4 and set(a.y_train.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_layout_is_read(tmp_path, gz):
    _fake_mnist(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.in_features == 784 and data.in_shape == (1, 28, 28)
    assert abs(data.x_train.mean().item()) < 1e-4


def test_missing_dataset_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="MNIST/raw"):
        load_dataset("mnist", tmp_path)


def test_corrupt_dataset_is_reported(tmp_path):
    raw = _fake_mnist(tmp_path, folder="FashionMNIST")
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
