"""Datasets: the embedded ``teacher``; MNIST, Fashion-MNIST and CIFAR-10 from local files; a
user's own arrays from one ``.npz`` file."""

from __future__ import annotations

import gzip
import hashlib
import math
import operator
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATASETS = ("teacher", "mnist", "fashion-mnist", "cifar10", "npz")
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
STANDARDISE = ("all", "feature", "none")  # how load_npz standardises: Dataset.standardised
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class DataError(Exception):
    """A dataset is missing, unreadable or unfit to train on (or does not fit the network); the
    message says where the files belong, or which field is wrong."""


@dataclass
class Dataset:
    """Tensors of a classification dataset, standardised: ``(N, D)`` or images ``(N, C, H, W)``.

    :param augment: optional training-time augmentation, applied to each mini-batch on the
        batch's device (e.g. :class:`RandomCropFlip` for CIFAR-10).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: dict = field(default_factory=dict)
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return tuple(self.x_train.shape[1:])

    @property
    def in_features(self) -> int:
        """Number of input values per example."""
        return math.prod(self.in_shape)

    def check(self) -> None:
        """Refuse, with a :class:`DataError` naming the field, a dataset that a run cannot
        train on or would score wrongly (the loaders' datasets pass; a user's own tensors are
        checked here instead of failing deep inside torch, or after an epoch, or not at all)."""
        try:  # an int, a numpy integer or a 0-d integer tensor (y.max() + 1)
            if isinstance(self.num_classes, bool):
                raise TypeError
            operator.index(self.num_classes)
        except TypeError:
            raise DataError(f"num_classes must be an integer, got {self.num_classes!r}") from None
        if self.num_classes < 2:
            raise DataError(f"num_classes must be at least 2, got {self.num_classes}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(
                    f"x_{split} and y_{split} must be torch tensors, got "
                    f"{type(x).__name__} and {type(y).__name__}"
                )
            if x.dim() < 2:
                raise DataError(
                    f"x_{split} must hold one row per example, (N, features) or (N, C, H, W); "
                    f"got shape {tuple(x.shape)}"
                )
            if len(x) == 0:
                raise DataError(f"the {split} set is empty (x_{split} has no rows)")
            if x[0].numel() == 0:
                raise DataError(f"x_{split} has no input values per example: {tuple(x.shape)}")
            if x.dtype != torch.float32:
                raise DataError(
                    f"x_{split} must be float32, got {x.dtype}: convert with .float() (scale "
                    "8-bit pixels to floats first)"
                )
            if y.dim() != 1 or y.dtype not in (torch.int64, torch.uint8):
                raise DataError(
                    f"y_{split} must be a 1-d tensor of integer class labels (torch.long, or "
                    f"uint8), got {y.dtype} of shape {tuple(y.shape)}: use y.long(), y.reshape(-1) "
                    "for a column of labels, or y.argmax(1) for one-hot labels"
                )
            if len(y) != len(x):
                raise DataError(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}")
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                raise DataError(
                    f"y_{split}: labels must lie in 0..{self.num_classes - 1} "
                    f"(num_classes={self.num_classes}), found {low}..{high}"
                )
            if not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).sum())
                raise DataError(f"x_{split} holds {bad} NaN or infinite value(s)")
        self.check_classes()
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"training inputs have shape {tuple(self.x_train.shape[1:])} per example, test "
                f"inputs {tuple(self.x_test.shape[1:])}"
            )

    def scale_note(self) -> str | None:
        """A one-line note when the training inputs are not standardised (their mean over all
        values beyond ±0.5, or their standard deviation outside [0.5, 2]), else ``None``.

        Not an error: such inputs train, but the first layer's width follows their scale (the
        price of a first-layer unit is about the same, what the trained network makes of its
        units is not; docs/method.md §6zm), and dense networks train worse on them too.
        :meth:`standardised` mends it.
        """
        if (self.meta.get("normalisation") or {}).get("per_feature"):
            return None  # standardised feature by feature: constant features stay at 0
        std, mean = (float(v) for v in torch.std_mean(self.x_train))
        if std == 0:  # nothing to standardise: every value the same
            return (
                f"the training inputs are constant (every value is {mean:.3g}): the network "
                "sees nothing that tells the classes apart, and can learn only their frequencies"
            )
        if abs(mean) <= 0.5 and 0.5 <= std <= 2:
            return self._feature_scale_note()
        return (
            f"the training inputs have mean {mean:.3g} and standard deviation {std:.3g}, not "
            "standardised: they train, but the first layer's width follows their scale "
            "(Fashion-MNIST at 10,000 examples, seeds 0-1, keeps 39-41 first-layer units with "
            "pixels/255, 58-63 standardised, 100-102 with raw pixels, and dense networks are 1-3 "
            "points worse on either; docs/method.md §6zm): Dataset.standardised(), or "
            "--standardise with --dataset npz, standardises them"
        )

    def class_note(self) -> str | None:
        """A note when test labels name classes no training example has: the network cannot
        predict them, and the test error counts every such example wrong."""
        trained = torch.unique(self.y_train)
        absent = torch.unique(self.y_test[~torch.isin(self.y_test, trained)])
        if not len(absent):
            return None
        share = float(torch.isin(self.y_test, absent).float().mean())
        listed = ", ".join(str(int(c)) for c in absent[:10]) + (", …" if len(absent) > 10 else "")
        return (
            f"the test labels hold class(es) {listed} that no training example has "
            f"({100 * share:.1f}% of the test set): the network cannot predict them, and its "
            "test error counts all of them wrong"
        )

    def _feature_scale_note(self) -> str | None:
        """For flat inputs ``(N, features)``: a note when the features' standard deviations
        (the non-constant ones) span more than 50× between their 10% and 90% quantiles, which
        one mean and standard deviation over all values cannot mend (tabular data)."""
        if self.x_train.dim() != 2 or len(self.x_train) < 2:
            return None
        stds = self.x_train.std(0)
        stds = stds[stds > 0].double()
        if len(stds) < 2:
            return None
        low, high = (float(torch.quantile(stds, q)) for q in (0.1, 0.9))
        if high <= 50 * low:
            return None
        return (
            f"the training inputs' features have standard deviations from {low:.3g} to "
            f"{high:.3g} (10% and 90% quantiles): on features of such different scales the "
            "network sees the small ones hardly at all; Dataset.standardised(per_feature=True), "
            "or --standardise feature with --dataset npz, gives each feature its own pair"
        )

    def standardised(self, per_feature: bool = False) -> Dataset:
        """The same dataset with its inputs standardised: minus the training inputs' mean, over
        their standard deviation, the test inputs with the same numbers. One mean and one
        standard deviation over all values (as the MNIST and Fashion-MNIST loaders do), or with
        ``per_feature`` one of each per input value (tabular features of different scales; a
        constant feature is centred, not divided by 0). The transformation is recorded in
        ``meta`` (``"normalisation"``, which a run writes to config.json for the deployed
        network), composed with the record there is already, if any (not with ``per_feature``,
        which refuses a dataset that has one: standardise such inputs over all values)."""
        self.check()  # floats, no NaN, matching shapes: one DataError naming the field
        before = self.meta.get("normalisation")
        if per_feature:
            if isinstance(before, dict):
                raise DataError(
                    "per_feature standardisation of inputs that have a normalisation record "
                    "already (a loader's, or an earlier standardised()): use standardised() "
                    "without per_feature"
                )
            std, mean = _safe_std_mean(self.x_train, dim=0)
            norm = {"pixel_scale": 1.0, "mean": mean.flatten().tolist(),
                    "std": std.flatten().tolist(), "per_feature": True}  # fmt: skip
        else:
            std, mean = (float(v) for v in _safe_std_mean(self.x_train))
            if isinstance(before, dict):  # x = (v·scale − m)/s, then (x − mean)/std
                pairs = zip(before["mean"], before["std"], strict=True)
                norm = {**before, "mean": [m + mean * s for m, s in pairs],
                        "std": [s * std for s in before["std"]]}  # fmt: skip
            else:
                norm = {"pixel_scale": 1.0, "mean": [mean], "std": [std]}
        return Dataset(
            self.name, (self.x_train - mean) / std, self.y_train, (self.x_test - mean) / std,
            self.y_test, self.num_classes, meta={**self.meta, "normalisation": norm},
            augment=self.augment,
        )  # fmt: skip

    def check_classes(self) -> None:
        """Refuse a training set of one class (a constant predictor is perfect there, so no
        run could learn anything or be told from a collapsed one); e.g. a subset of 1."""
        present = torch.unique(self.y_train)
        if len(present) < 2:
            raise DataError(
                f"the training set holds examples of one class only (label {int(present[0])}) "
                f"in {len(self.y_train)} example(s): there is nothing to learn"
            )

    def check_fits(self, in_shape: tuple[int, ...], num_classes: int, flattens: bool) -> None:
        """Refuse (:class:`DataError`) a network whose inputs or outputs do not match this
        dataset: ``flattens`` networks (MLPs) take any shape with as many values per example,
        convolutional ones exactly their ``in_shape``."""
        if num_classes != self.num_classes:
            raise DataError(
                f"the network has {num_classes} outputs but the dataset {self.num_classes} classes"
            )
        fits = (
            math.prod(in_shape) == self.in_features
            if flattens
            else tuple(in_shape) == self.in_shape
        )
        if not fits:
            raise DataError(
                f"the network takes inputs of shape {tuple(in_shape)}, the dataset's are "
                f"{self.in_shape}"
            )

    def check_subset(self, size: int) -> int:
        """The number of training examples, if a subset of ``size`` can be drawn (else
        :class:`DataError`)."""
        total = len(self.x_train)
        if not 1 <= size <= total:
            raise DataError(f"train subset must be between 1 and {total} examples, got {size}")
        return total

    def constant_predictor(self) -> tuple[int, float, float]:
        """What a network that learnt nothing scores: the training set's most frequent class,
        the training error of answering it always, and the loss per example (nats) of
        predicting the training set's class frequencies (the trainer's collapse test and the
        warm-up of Eq. (10w) read these; ``bayesprune baseline`` reads the dense twin by them)."""
        counts = torch.bincount(self.y_train.cpu(), minlength=self.num_classes).double()
        freq = counts / counts.sum()
        seen = freq[freq > 0]
        return int(counts.argmax()), float(1 - freq.max()), float(-(seen * seen.log()).sum())

    def subset(self, size: int, seed: int = 0) -> Dataset:
        """The same dataset trained on a fixed random subset of ``size`` training examples.

        The subset is drawn with its own generator seeded by ``seed``, so it is the same in every
        run with that seed (learning curves, the robustness matrix); the test set is unchanged.
        """
        total = self.check_subset(size)
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(total, generator=gen)[:size].sort().values.to(self.x_train.device)
        meta = {**self.meta, "train_subset": size, "train_total": total}
        return Dataset(
            self.name,
            self.x_train[index],
            self.y_train[index],
            self.x_test,
            self.y_test,
            self.num_classes,
            meta=meta,
            augment=self.augment,
        )

    def hold_out(
        self, share: float, seed: int = 0
    ) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
        """Split off a fixed random ``share`` of the training examples: the dataset without them
        (what the weights train on) and the held-out ``(x, y)`` (what the gates' evidence is
        measured on, Eq. (9h)). Drawn with its own generator seeded by ``seed``, so a run's split
        is the same on resuming; the test set is unchanged. :class:`DataError` unless both parts
        keep at least one example and the training part two classes."""
        total = len(self.x_train)
        held = round(share * total)
        if not 1 <= held < total:
            raise DataError(
                f"holding out {share:g} of {total} training example(s) leaves "
                f"{held} for the evidence and {total - held} to train on: both need at least one"
            )
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(total, generator=gen).to(self.x_train.device)
        out, kept = order[:held].sort().values, order[held:].sort().values
        meta = {**self.meta, "evidence_examples": held}
        rest = Dataset(
            self.name, self.x_train[kept], self.y_train[kept], self.x_test, self.y_test,
            self.num_classes, meta=meta, augment=self.augment,
        )  # fmt: skip
        rest.check_classes()
        return rest, (self.x_train[out], self.y_train[out])

    def to(self, device: str | torch.device) -> Dataset:
        """The same dataset with its tensors on ``device`` (itself if they are there already)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return Dataset(
            self.name, num_classes=self.num_classes, meta=self.meta, augment=self.augment, **moved
        )


class RandomCropFlip:
    """Random crop with zero padding (of the raw image) and random horizontal flip, per example.

    Works on standardised batches ``(B, C, H, W)`` on any device: the padding value is the
    standardised value of a black pixel, so the result equals torchvision's
    ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` applied before normalisation.

    :param padding: pixels of padding on each side (4 for CIFAR-10).
    :param fill: per-channel padding value (``(0 − mean)/std``).
    """

    def __init__(self, padding: int, fill: torch.Tensor):
        self.padding = int(padding)
        self.fill = torch.as_tensor(fill, dtype=torch.float32).flatten()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        padded = self.fill.to(x.device).view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        dy = torch.randint(0, 2 * p + 1, (b, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        flip = torch.rand(b, device=x.device) < 0.5
        cols = torch.where(flip.view(b, 1, 1, 1), cols.flip(-1), cols)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, channel, rows, cols]


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
    except (OSError, EOFError, zlib.error) as err:  # (zlib: a damaged compressed stream)
        raise DataError(f"cannot read {path}: {err}") from err
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (corrupt or wrong file)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt: expected {dims} values")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with a folder one may not look into named as a data problem (it
    reached the command line as a failed write: 'the files written so far are complete')."""
    try:
        return path.is_file()
    except PermissionError as err:
        raise DataError(f"cannot read {path.parent}: {err.strerror}") from None


def _complete_copy(name: str, folders, files, locate, forms: str = "") -> dict | None:
    """The paths of ``files`` in the first of ``folders`` that holds every one of them
    (``locate(folder, file)``: its path there, or ``None``), or ``None`` if none holds any.
    A folder holding some but not all (an interrupted download) is refused, naming what is
    missing, never passed over for another copy further down the list."""
    for folder in folders:
        paths = {file: locate(folder, file) for file in files}
        if all(paths.values()):
            return paths
        if any(paths.values()):
            missing = [file for file, path in paths.items() if path is None]
            raise DataError(
                f"{name} in {folder} is incomplete: {', '.join(missing)}{forms} missing"
            )
    return None


def _find_idx(folder: Path, stem: str) -> Path | None:
    """``stem`` in ``folder``, raw or gzipped, under LeCun's name (``train-images-idx3-ubyte``)
    or the one some mirrors use (``train-images.idx3-ubyte``, e.g. Kaggle's copies)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if _is_file(candidate):
                return candidate
    return None


def _folder_listing(folders) -> str:
    """What the folders looked in hold, for a not-found message (a misnamed copy shows)."""
    for folder in folders:
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError:  # absent or unreadable: nothing to show
            continue
        if names:
            shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
            return f" ({folder} holds {shown})"
    return ""


def candidate_folders(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where an MNIST-format dataset is looked for, in order."""
    if data_dir is not None:  # a folder the user named is used or refused, never bypassed
        root = Path(data_dir)
        return [root / _FOLDERS[name] / "raw", root]
    return [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else []


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST or Fashion-MNIST from torchvision's layout ``<data_dir>/<MNIST|FashionMNIST>/raw/``.

    Fashion-MNIST is also found without flags where Debian's ``dataset-fashion-mnist`` puts it
    (only when no ``data_dir`` is given). Files may be raw or gzipped IDX. The contents are
    validated: images of rank 3 with the same size in both splits, labels in 0-9.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    folders = candidate_folders(name, data_dir)
    copy = _complete_copy(name, folders, list(_IDX_FILES.values()), _find_idx, " (raw or .gz)")
    if copy is None:
        where = (
            f"{Path(data_dir) / _FOLDERS[name] / 'raw'}"
            if data_dir
            else f"--data-dir DIR (files in DIR/{_FOLDERS[name]}/raw/)"
        )
        hint = (  # (a --data-dir given is used or refused: the package would not be read)
            " or `apt-get install dataset-fashion-mnist`"
            if name == "fashion-mnist" and data_dir is None
            else ""
        )
        raise DataError(
            f"{name} not found: put {', '.join(_IDX_FILES.values())} (raw or .gz) in {where}{hint}"
            f"{_folder_listing(folders)}"
        )
    paths = {key: copy[stem] for key, stem in _IDX_FILES.items()}
    arrays = {key: _read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{paths[f'{split}_x']}: expected images of shape (N, H, W) and labels (N,), "
                f"got {images.shape} and {labels.shape}"
            )
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: {split} images and labels differ in count (corrupt files)")
        if images.shape[0] == 0:
            raise DataError(f"{paths[f'{split}_x']} holds no images")
        _check_labels(labels, 10, paths[f"{split}_y"])
    _check_identity(name, arrays, paths["train_x"].parent)
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise DataError(
            f"{name} in {paths['train_x'].parent}: training images are "
            f"{arrays['train_x'].shape[1:]} but test images {arrays['test_x'].shape[1:]}"
        )
    x_train = torch.from_numpy(arrays["train_x"].astype(np.float32) / 255).unsqueeze(1)
    x_test = torch.from_numpy(arrays["test_x"].astype(np.float32) / 255).unsqueeze(1)
    mean, std = x_train.mean(), _safe_std(x_train.std())
    return Dataset(
        name,
        (x_train - mean) / std,
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        (x_test - mean) / std,
        torch.from_numpy(arrays["test_y"].astype(np.int64)),
        10,
        meta={
            "source": str(paths["train_x"].parent),
            "files": file_records(paths.values()),
            "normalisation": normalisation(mean, std),
        },
    )


# The first twelve training and test labels of the published files: MNIST's and
# Fashion-MNIST's files have the same names and shapes, so a folder of one passed as the other
# would load without complaint (and its provenance would name the wrong dataset).
LABEL_SIGNATURES = {
    "mnist": ((5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5), (7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6)),
    "fashion-mnist": ((9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9), (9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5)),
}


def _check_identity(name: str, arrays: dict, folder: Path) -> None:
    """Refuse files that are the *other* dataset's: either split whose first labels match it
    (one split of each, a training set of one and a test set of the other, was taken)."""
    head = (
        tuple(int(v) for v in arrays["train_y"][:12]),
        tuple(int(v) for v in arrays["test_y"][:12]),
    )
    for other, signature in LABEL_SIGNATURES.items():
        if other == name:
            continue
        pairs = zip(("training", "test"), head, signature, strict=True)
        splits = [split for split, mine, theirs in pairs if mine == theirs]
        if len(splits) == 2:
            raise DataError(
                f"the files in {folder} are {other}'s, not {name}'s (their labels are "
                f"{other}'s): use --dataset {other}, or point --data-dir at {name}"
            )
        if splits:
            raise DataError(
                f"the {splits[0]} files in {folder} are {other}'s, not {name}'s (their labels "
                f"are {other}'s): the two splits come from different datasets"
            )


def _check_labels(labels: np.ndarray, num_classes: int, path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )


def normalisation(mean: torch.Tensor, std: torch.Tensor) -> dict:
    """How the network's inputs were made from the files' 8-bit pixels, for a deployed network
    (recorded in config.json): ``x = (pixel / 255 − mean) / std``, per channel."""
    return {
        "pixel_scale": 1 / 255,
        "mean": [float(v) for v in mean.flatten()],
        "std": [float(v) for v in std.flatten()],
    }


def _safe_std_mean(x: torch.Tensor, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.std_mean`` (over all values, or along ``dim``), the standard deviation made safe
    to divide by."""
    std, mean = torch.std_mean(x, dim=dim)
    return _safe_std(std), mean


def _safe_std(std: torch.Tensor) -> torch.Tensor:
    """A standard deviation to divide by: constant pixels (std 0) are left at 0, not NaN."""
    return torch.where(std > 0, std, torch.ones_like(std))


def file_records(paths) -> list[dict]:
    """Path, size and SHA-256 of each data file (provenance, recorded in config.json)."""
    records = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        records.append(
            {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}
        )
    return records


def tensors_sha256(data: Dataset) -> str:
    """SHA-256 of a dataset's four tensors (recorded for data that no files identify)."""
    digest = hashlib.sha256()
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_test):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def changed_files(recorded: list[dict], loaded: list[dict]) -> str:
    """Which of a run's data files differ from the ones read now (config.json's records)."""
    if len(recorded) != len(loaded):
        return f"the run read {len(recorded)} files, {len(loaded)} are read now"

    def shown(record: dict) -> str:
        size = record.get("bytes")
        size = f"{size:,} bytes" if isinstance(size, int) else "size not recorded"
        return f"{record.get('path')} ({size}, SHA-256 {str(record.get('sha256'))[:12]}…)"

    return "; ".join(
        f"{shown(new)} is not what the run read, {shown(old)}"
        for old, new in zip(recorded, loaded, strict=True)
        if old.get("sha256") != new.get("sha256")
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else: the only classes it will build are numpy's
    array reconstruction (a batch is a dict of bytes, lists and one uint8 array); any other
    global, the way a crafted pickle runs code, is refused before it is touched."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocols 0-2 (a codec)
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (not part of a CIFAR batch)")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"expected a dict, got {type(batch).__name__}")
        missing = [key.decode() for key in (b"data", b"labels") if key not in batch]
        if missing:
            raise ValueError(f"no {' or '.join(repr(k) for k in missing)} entry")
        data = np.asarray(batch[b"data"])
        if data.dtype.kind not in "ui":  # casting floats in [0, 1] to bytes would give zeros
            raise TypeError(f"pixels must be integers 0-255 (uint8 bytes), got {data.dtype}")
        if data.size and (data.min() < 0 or data.max() > 255):
            raise ValueError(f"pixels must lie in 0-255, got {data.min()}-{data.max()}")
        data = data.astype(np.uint8, copy=False)
        labels = np.asarray(batch[b"labels"])
        if labels.ndim == 2 and labels.shape[1] == 1:  # a column of labels
            labels = labels.reshape(-1)
        if labels.dtype.kind not in "ui":  # astype would make 1.7 a 1 and True a 1
            raise TypeError(f"labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.int64)
    except (
        OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
        AttributeError, IndexError, MemoryError,
    ) as err:  # fmt: skip
        from bayesprune.runs import first_line

        raise DataError(f"cannot read CIFAR-10 batch {path}: {first_line(err)}") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected N×3072 bytes and N labels)")
    _check_labels(labels, 10, path)
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | os.PathLike | None = None, augment: bool = True) -> Dataset:
    """CIFAR-10 from torchvision's layout ``<data_dir>/cifar-10-batches-py/`` (the Python pickles).

    The pickles are read directly (torchvision md5-checks them, which rules out test fixtures).
    Inputs are standardised per channel with the training set's statistics; with ``augment`` the
    training batches get a random crop with padding 4 and a random horizontal flip.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    candidates = [] if data_dir is None else [Path(data_dir) / CIFAR10_FOLDER, Path(data_dir)]
    copy = _complete_copy(
        "cifar10", candidates, _CIFAR10_FILES, lambda f, n: f / n if _is_file(f / n) else None
    )
    if copy is None:
        where = (
            f"{Path(data_dir) / CIFAR10_FOLDER}"
            if data_dir
            else f"--data-dir DIR (files in DIR/{CIFAR10_FOLDER}/)"
        )
        tarball = [
            f / "cifar-10-python.tar.gz"
            for f in candidates
            if _is_file(f / "cifar-10-python.tar.gz")
        ]
        hint = (  # the archive as downloaded, not unpacked
            f" ({tarball[0]} is the archive: `tar xzf {tarball[0]} -C {data_dir}` unpacks it)"
            if tarball
            else _folder_listing(candidates)
        )
        raise DataError(f"cifar10 not found: put {', '.join(_CIFAR10_FILES)} in {where}{hint}")
    folder = copy[_CIFAR10_FILES[0]].parent
    train = [_read_cifar_batch(folder / f) for f in _CIFAR10_FILES[:-1]]
    x_test_raw, y_test = _read_cifar_batch(folder / _CIFAR10_FILES[-1])
    for what, count in (("training batches", sum(len(y) for _, y in train)), ("test", len(y_test))):
        if count == 0:
            raise DataError(f"cifar10 in {folder}: the {what} hold no images")
    x_train = torch.from_numpy(np.concatenate([x for x, _ in train]).astype(np.float32) / 255)
    x_test = torch.from_numpy(x_test_raw.astype(np.float32) / 255)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = _safe_std(x_train.std(dim=(0, 2, 3), keepdim=True))
    return Dataset(
        "cifar10",
        (x_train - mean) / std,
        torch.from_numpy(np.concatenate([y for _, y in train])),
        (x_test - mean) / std,
        torch.from_numpy(y_test),
        10,
        meta={
            "source": str(folder),
            "files": file_records(folder / f for f in _CIFAR10_FILES),
            "normalisation": normalisation(mean, std),
        },
        augment=RandomCropFlip(4, (-mean / std).flatten()) if augment else None,
    )


def load_npz(path: str | os.PathLike | None, standardise: str | None = "all") -> Dataset:
    """A user's own arrays from one ``.npz`` file (``numpy.savez``): ``x_train``, ``y_train``,
    ``x_test``, ``y_test`` and, optionally, ``num_classes`` (else the largest label + 1).

    Inputs of shape ``(N, features)`` or ``(N, C, H, W)`` and any real dtype (converted to
    float32: 8-bit pixels stay 0-255 until standardised); labels integers in
    ``0..num_classes − 1``. ``standardise``: ``"all"`` one mean and standard deviation over all
    training values, as the MNIST and Fashion-MNIST loaders do (also for ``None``); ``"feature"``
    one pair per input value (tabular features of different scales); ``"none"`` the inputs as
    given (:meth:`Dataset.scale_note` then says whether they look standardised; the identity is
    recorded as the normalisation). The file is read without pickles, checked
    (:meth:`Dataset.check`: one :class:`DataError` naming the array), and its size and SHA-256
    are recorded.
    """
    standardise = "all" if standardise is None else standardise
    if standardise not in STANDARDISE:
        raise DataError(f"standardise must be one of {', '.join(STANDARDISE)}, got {standardise!r}")
    if path is None:
        raise DataError("--dataset npz reads one .npz file: give it with --data-dir FILE.npz")
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what} (--dataset npz reads one .npz file of numpy.savez)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        why = "no numpy array or archive" if "pickle" in str(err) else str(err)
        raise DataError(f"{path}: not a readable .npz file ({why})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):  # one array: numpy.save's .npy
        raise DataError(
            f"{path}: one array, not an .npz archive of named arrays (numpy.save writes .npy): "
            "save x_train, y_train, x_test and y_test with numpy.savez"
        )
    try:
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    missing = [key for key in NPZ_ARRAYS if key not in arrays]
    if missing:
        held = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(
            f"{path}: no array {', '.join(missing)} (it holds {held}); save x_train, y_train, "
            "x_test and y_test with numpy.savez"
        )
    for split in ("train", "test"):
        if arrays[f"y_{split}"].ndim == 2 and arrays[f"y_{split}"].shape[1] == 1:
            arrays[f"y_{split}"] = arrays[f"y_{split}"].reshape(-1)  # a column of labels
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1:  # (in numpy's words: the Dataset check speaks of tensors)
            raise DataError(
                f"{path}: y_{split} has shape {y.shape}: labels are one class index per "
                "example, a 1-d array (y.argmax(1) for one-hot labels)"
            )
        if x.dtype.kind not in "uif":
            raise DataError(f"{path}: x_{split} must hold real numbers, got dtype {x.dtype}")
        if y.dtype.kind not in "ui":
            raise DataError(
                f"{path}: y_{split} must hold integer class labels, got dtype {y.dtype} "
                "(y.argmax(1) for one-hot labels)"
            )
        if y.size and y.min() < 0:  # before num_classes is read off the largest label
            raise DataError(
                f"{path}: y_{split} holds negative labels (the smallest is {y.min()}): labels "
                "are 0..num_classes − 1"
            )
        if x.dtype.kind == "f" and x.size:
            with np.errstate(over="ignore"):  # (the overflow is the finding, said below)
                narrowed = x.astype(np.float32)
            if np.isfinite(x).all() and not np.isfinite(narrowed).all():
                raise DataError(f"{path}: x_{split} holds values beyond float32's range")
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.shape != () or value.dtype.kind not in "ui":
            raise DataError(f"{path}: num_classes must be one integer, got {value!r}")
        num_classes = int(value)
        if num_classes < 2:
            raise DataError(f"{path}: num_classes is {num_classes}: a classifier needs at least 2")
    else:
        train = arrays["y_train"]
        if not train.size:  # before num_classes is read off the labels: there are none
            raise DataError(f"{path}: the train set is empty (x_train has no rows)")
        labels = [arrays[k] for k in ("y_train", "y_test") if arrays[k].size]
        num_classes = int(max(int(y.max()) for y in labels)) + 1
        if train.min() > 0:
            raise DataError(
                f"{path}: the training labels run {train.min()}..{train.max()}, with no class 0: "
                "labels are 0..num_classes − 1 (subtract 1 from 1-based labels), or save "
                "num_classes to keep an empty class 0"
            )
        if num_classes < 2:
            raise DataError(
                f"{path}: every label is 0 (one class): there is nothing to learn, a classifier "
                "needs examples of at least two classes"
            )
        seen = np.unique(np.concatenate([y.reshape(-1) for y in labels]))
        if 2 * len(seen) < num_classes:  # most of 0..max never used: not class indices
            shown = ", ".join(str(v) for v in seen[:6]) + (", …" if len(seen) > 6 else "")
            raise DataError(
                f"{path}: the labels take {len(seen)} values ({shown}) but run up to "
                f"{num_classes - 1}, so {num_classes} classes would be built, most never seen: "
                "labels are class indices 0..num_classes − 1 (np.unique(y, "
                "return_inverse=True) maps them there), or save num_classes to keep empty classes"
            )
    tensors = {  # native byte order, copied into torch's own memory as the loaders' tensors are
        key: torch.from_numpy(
            np.array(arrays[key], dtype=np.float32 if key[0] == "x" else np.int64)
        ).clone()
        for key in NPZ_ARRAYS
    }
    meta = {"source": str(path), "files": file_records([path])}
    data = Dataset(path.stem, num_classes=num_classes, meta=meta, **tensors)
    try:  # the checks of every dataset (NaN, shapes, empty splits, ...), named by the file
        if standardise != "none":
            return data.standardised(per_feature=standardise == "feature")  # (checks first)
        data.check()
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    data.meta["normalisation"] = {"pixel_scale": 1.0, "mean": [0.0], "std": [1.0]}  # as stored
    return data


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, standardise: str | None = None
) -> Dataset:
    """Load a dataset by name (one of :data:`DATASETS`). ``data_dir``: the loaders' root
    folder, or for ``"npz"`` the file; ``standardise``: for ``"npz"`` only (:func:`load_npz`),
    the loaders standardise their images themselves (another value is refused for them)."""
    if name == "npz":
        return load_npz(data_dir, standardise)
    if standardise not in ("all", None):
        raise DataError(
            f"standardise={standardise!r} is for npz files: the {name} data are standardised by "
            "their loader"
        )
    if name == "teacher":
        return make_teacher()
    if name in _FOLDERS:
        return load_idx_dataset(name, data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
