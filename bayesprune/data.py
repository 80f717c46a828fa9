"""Datasets: the embedded ``teacher`` default, and MNIST / Fashion-MNIST from local files."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATASETS = ("teacher", "mnist", "fashion-mnist")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class DataError(Exception):
    """A dataset is missing or unreadable; the message says where the files belong."""


@dataclass
class Dataset:
    """Tensors of a classification dataset, inputs flattened to ``(N, D)`` and standardised."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: dict = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return self.x_train.shape[1]


def teacher_network(
    in_features: int, widths: tuple[int, ...], num_classes: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random ReLU teacher with orthogonal weight rows, so no hidden unit is dead or a copy."""
    sizes = [in_features, *widths, num_classes]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        a = torch.randn(max(fan_in, fan_out), max(fan_in, fan_out), generator=generator)
        q, _ = torch.linalg.qr(a)
        w = q[:fan_out, :fan_in] * (2.0 * max(fan_in, fan_out) / fan_in) ** 0.5
        b = 0.1 * torch.randn(fan_out, generator=generator)
        layers.append((w, b))
    return layers


def make_teacher(
    num_train: int = 20000,
    num_test: int = 5000,
    in_features: int = 4,
    widths: tuple[int, ...] = (10, 5),
    num_classes: int = 3,
    seed: int = 0,
) -> Dataset:
    """Synthetic classification labelled, noise-free, by a random ReLU teacher MLP.

    The teacher's hidden widths are the known answer a pruning method should recover (roughly: a
    student can sometimes imitate a teacher with fewer units).
    """
    gen = torch.Generator().manual_seed(seed)
    layers = teacher_network(in_features, widths, num_classes, gen)
    x = torch.randn(num_train + num_test, in_features, generator=gen)
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = torch.relu(h)
    y = (h - h.mean(0)).argmax(-1)  # output bias calibrated so that every class occurs
    return Dataset(
        "teacher",
        x[:num_train],
        y[:num_train],
        x[num_train:],
        y[num_train:],
        num_classes,
        meta={"teacher_widths": list(widths)},
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (corrupt or wrong file)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt: expected {dims} values")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_folders(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where an MNIST-format dataset is looked for, in order."""
    folders = []
    if data_dir is not None:
        root = Path(data_dir)
        folders += [root / _FOLDERS[name] / "raw", root]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST or Fashion-MNIST from torchvision's layout ``<data_dir>/<MNIST|FashionMNIST>/raw/``.

    Fashion-MNIST is also found without flags where Debian's ``dataset-fashion-mnist`` puts it.
    Files may be raw or gzipped IDX.
    """
    folders = candidate_folders(name, data_dir)
    for folder in folders:
        paths = {key: _find_idx(folder, stem) for key, stem in _IDX_FILES.items()}
        if all(paths.values()):
            break
    else:
        where = (
            f"{Path(data_dir) / _FOLDERS[name] / 'raw'}"
            if data_dir
            else f"--data-dir DIR (files in DIR/{_FOLDERS[name]}/raw/)"
        )
        hint = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
        raise DataError(
            f"{name} not found: put {', '.join(_IDX_FILES.values())} (raw or .gz) in {where}{hint}"
        )
    arrays = {key: _read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        if arrays[f"{split}_x"].shape[0] != arrays[f"{split}_y"].shape[0]:
            raise DataError(f"{name}: {split} images and labels differ in count (corrupt files)")
    x_train = torch.from_numpy(
        arrays["train_x"].reshape(len(arrays["train_x"]), -1).astype(np.float32) / 255
    )
    x_test = torch.from_numpy(
        arrays["test_x"].reshape(len(arrays["test_x"]), -1).astype(np.float32) / 255
    )
    mean, std = x_train.mean(), x_train.std()
    return Dataset(
        name,
        (x_train - mean) / std,
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        (x_test - mean) / std,
        torch.from_numpy(arrays["test_y"].astype(np.int64)),
        10,
        meta={"source": str(paths["train_x"].parent)},
    )


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name (one of :data:`DATASETS`)."""
    if name == "teacher":
        return make_teacher()
    if name in _FOLDERS:
        return load_idx_dataset(name, data_dir)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
