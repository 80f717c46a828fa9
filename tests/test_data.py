import gzip
import json
import math

import numpy as np
import pytest
import torch

from bayesprune.data import DataError, Dataset, RandomCropFlip, load_dataset, make_teacher


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


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_named_as_mirrors_name_them_are_read(tmp_path, gz):
    # Kaggle's and other mirrors' copies are train-images.idx3-ubyte, not train-images-idx3-ubyte
    raw = _fake_mnist(tmp_path, gz=gz)
    for path in list(raw.iterdir()):
        path.rename(raw / path.name.replace("-idx", ".idx"))
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)


def test_a_folder_without_the_dataset_says_what_it_holds(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images.ubyte", "labels.csv"):  # a copy under names no loader knows
        (raw / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"raw holds labels\.csv, train-images\.ubyte\)$"):
        load_dataset("mnist", tmp_path)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "cifar-10-python.tar.gz").write_bytes(b"")  # downloaded, not unpacked
    with pytest.raises(DataError, match=r"is the archive: `tar xzf .*cifar-10-python\.tar\.gz -C"):
        load_dataset("cifar10", cifar)


def test_corrupt_dataset_is_reported(tmp_path):
    raw = _fake_mnist(tmp_path, folder="FashionMNIST")
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


def test_cifar10_is_read_from_the_pickles_and_standardised(fake_cifar10):
    data = load_dataset("cifar10", fake_cifar10)
    assert data.x_train.shape == (250, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert data.in_shape == (3, 32, 32) and data.num_classes == 10
    mean, std = data.x_train.mean(dim=(0, 2, 3)), data.x_train.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(std, torch.ones(3), atol=1e-4)
    assert data.augment is not None


def test_cifar10_missing_or_corrupt_is_a_data_error(tmp_path, fake_cifar10):
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)
    (fake_cifar10 / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", fake_cifar10)


def test_cifar10_batches_that_are_not_cifars_bytes_say_what_is_wrong(fake_cifar10):
    import pickle

    folder = fake_cifar10 / "cifar-10-batches-py"
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="incomplete: data_batch_2 missing"):
        load_dataset("cifar10", fake_cifar10)
    for name, batch, message in (
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "uint8"),
        ("data_batch_2", {b"data": np.zeros((4, 3072), np.uint8)}, "no 'labels' entry"),
    ):
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        with pytest.raises(DataError, match=message):  # floats in [0, 1] are not cast to 0
            load_dataset("cifar10", fake_cifar10)
    with open(folder / "data_batch_2", "wb") as f:  # integers 0-255 in a wider type: bytes
        pickle.dump({b"data": np.full((4, 3072), 255, np.int64), b"labels": [1] * 4}, f)
    assert load_dataset("cifar10", fake_cifar10).x_train.shape[0] == 4 * 50 + 4


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
    fill = torch.tensor([-1.0, -2.0, -3.0])
    augment = RandomCropFlip(4, fill)
    x = torch.randn(64, 3, 8, 8)
    out = augment(x)
    padded = fill.view(1, 3, 1, 1).expand(64, 3, 16, 16).clone()
    padded[:, :, 4:12, 4:12] = x
    flips = 0
    for i in range(64):
        windows = [
            (padded[i, :, dy : dy + 8, dx : dx + 8], flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
        ]
        matches = [f for w, f in windows if torch.equal(w.flip(-1) if f else w, out[i])]
        assert matches, f"example {i} is not a crop of its padded image"
        flips += all(matches)
    assert 10 < flips < 54  # both flipped and unflipped crops occur


class _Payload:
    """Unpickling this calls os.system: the classic crafted pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_pickle_is_refused_and_nothing_runs(tmp_path, fake_cifar10):
    import pickle

    marker = tmp_path / "pwned"
    batch = fake_cifar10 / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(DataError, match="refused to load"):
        load_dataset("cifar10", fake_cifar10)
    assert not marker.exists()


def _replace(raw, name, array):
    for suffix in ("", ".gz"):
        (raw / f"{name}{suffix}").unlink(missing_ok=True)
    _write_idx(raw / name, array)


@pytest.mark.parametrize(
    "name,array,message",
    [
        ("train-labels-idx1-ubyte", np.full(30, 255), "labels must lie in 0..9"),
        ("t10k-labels-idx1-ubyte", np.full(10, 77), "labels must lie in 0..9"),
        ("t10k-images-idx3-ubyte", np.zeros((10, 14, 14)), "test images"),
        ("train-images-idx3-ubyte", np.zeros(30), "expected images of shape"),
        ("train-labels-idx1-ubyte", np.full(30, 10), "labels must lie in 0..9"),
        ("train-labels-idx1-ubyte", np.zeros(20), ""),
    ],
    ids=["train-labels-255", "test-labels-77", "test-14x14", "rank-1-images", "labels-10",
         "30-images-20-labels"],  # fmt: skip
)
def test_valid_idx_files_with_wrong_content_are_refused(tmp_path, name, array, message):
    raw = _fake_mnist(tmp_path)
    _replace(raw, name, array)
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", tmp_path)


def test_constant_images_give_finite_inputs(tmp_path):
    raw = _fake_mnist(tmp_path)
    _replace(raw, "train-images-idx3-ubyte", np.zeros((30, 28, 28)))
    _replace(raw, "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)))
    data = load_dataset("mnist", tmp_path)
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_test).all()


def test_a_data_dir_given_is_used_or_refused_never_bypassed(tmp_path):
    # Fashion-MNIST may exist system-wide: a typo in --data-dir must not train on it silently
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("fashion-mnist", tmp_path / "typo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", tmp_path / "empty")


def test_data_files_are_recorded_with_size_and_hash(tmp_path):
    import hashlib

    raw = _fake_mnist(tmp_path)
    files = load_dataset("mnist", tmp_path).meta["files"]
    assert len(files) == 4
    first = next(f for f in files if f["path"].endswith("train-images-idx3-ubyte"))
    content = (raw / "train-images-idx3-ubyte").read_bytes()
    assert first["bytes"] == len(content)
    assert first["sha256"] == hashlib.sha256(content).hexdigest()


def _own(**change):
    """A user's own tabular dataset (20 features, 2 classes), with ``change`` applied."""
    gen = torch.Generator().manual_seed(0)
    x, xt = torch.randn(60, 20, generator=gen), torch.randn(20, 20, generator=gen)
    fields = dict(name="own", x_train=x, y_train=(x[:, 0] > 0).long(), x_test=xt,
                  y_test=(xt[:, 0] > 0).long(), num_classes=2)  # fmt: skip
    fields.update({k: v(fields) if callable(v) else v for k, v in change.items()})
    return Dataset(**fields)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(y_train=lambda f: f["y_train"].float()), "y_train must be a 1-d tensor of integer"),
        (dict(y_train=lambda f: f["y_train"].int()), "got torch.int32"),
        (dict(y_train=lambda f: f["y_train"] + 1), "labels must lie in 0..1"),
        (dict(y_test=lambda f: torch.cat([f["y_test"][:-1], torch.tensor([2])])), "y_test"),
        (dict(num_classes=1), "num_classes must be at least 2"),
        (dict(y_train=lambda f: torch.zeros_like(f["y_train"])), "one class only (label 0)"),
        (dict(y_train=lambda f: torch.nn.functional.one_hot(f["y_train"])), "y.argmax(1)"),
        (dict(x_train=lambda f: f["x_train"].double()), "x_train must be float32"),
        (dict(y_train=lambda f: f["y_train"][:-5]), "x_train has 60 examples but y_train has 55"),
        (dict(x_test=lambda f: f["x_test"][:0], y_test=lambda f: f["y_test"][:0]), "test set is"),
        (dict(x_train=lambda f: f["x_train"][:, 0]), "one row per example"),
        (dict(x_train=lambda f: f["x_train"][:, :0]), "no input values per example: (60, 0)"),
        (dict(x_test=lambda f: f["x_test"][:, :19]), "test inputs (19,)"),
        (
            dict(x_test=lambda f: f["x_test"].index_fill(0, torch.tensor([3]), float("nan"))),
            "x_test holds 20 NaN",
        ),  # fmt: skip
    ],
)
def test_a_users_own_dataset_is_checked_before_anything_runs(tmp_path, change, message):
    """Mistakes with one's own tensors are one DataError naming the field, raised when the
    Trainer is built: not a torch error from inside the step, an error after the first epoch
    (a test set of other shape), or a silently wrong score (a NaN or an out-of-range test
    label), and nothing is written."""
    from bayesprune.config import TrainConfig
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP

    out = tmp_path / "run"
    with pytest.raises(DataError) as err:
        Trainer(GatedMLP(20, (8,), 2), _own(**change), TrainConfig(epochs=1), out=out)
    assert message in str(err.value)
    assert not out.exists()


def test_a_network_that_does_not_fit_the_dataset_is_refused():
    from bayesprune.config import TrainConfig
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP, lenet5

    with pytest.raises(DataError, match="3 outputs but the dataset 2 classes"):
        Trainer(GatedMLP(20, (8,), 3), _own(), TrainConfig(epochs=1))
    with pytest.raises(DataError, match=r"inputs of shape \(200,\), the dataset's are \(20,\)"):
        Trainer(GatedMLP(200, (8,), 2), _own(), TrainConfig(epochs=1))
    images = torch.randn(12, 1, 16, 16)
    labels = torch.arange(12) % 10
    flat = Dataset("flat", images.flatten(1), labels, images[:4].flatten(1), labels[:4], 10)
    with pytest.raises(DataError, match=r"\(1, 16, 16\), the dataset's are \(256,\)"):
        Trainer(lenet5((1, 16, 16), 10), flat, TrainConfig(epochs=1))
    # num_classes as a user may write it: y.max() + 1 (a 0-d tensor), a numpy integer
    Trainer(GatedMLP(20, (8,), 2), _own(num_classes=torch.tensor(2)), TrainConfig(epochs=1))
    Trainer(GatedMLP(20, (8,), 2), _own(num_classes=np.int64(2)), TrainConfig(epochs=1))
    # what fits is accepted: an MLP flattens images, a conv net takes its own shape
    square = Dataset("img", images, labels, images[:4], labels[:4], 10)
    Trainer(GatedMLP(256, (8,), 10), square, TrainConfig(epochs=1))
    Trainer(lenet5((1, 16, 16), 10), square, TrainConfig(epochs=1))


def test_inputs_not_standardised_are_noted_and_standardised_mends_them(tmp_path):
    """Raw-scale inputs train (no error), but the run says, when the Trainer is built and in the
    summary's note, that they are not standardised (the prior assumes they are, and the first
    layer's width follows their scale: docs/method.md §6zm). ``Dataset.standardised()`` removes
    the note, standardises the test inputs with the training inputs' two numbers, and records
    them (composed with a loader's record) so a deployed network's inputs are made the same way."""
    import warnings

    from bayesprune.config import TrainConfig
    from bayesprune.export import input_note
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP

    assert _own().scale_note() is None  # standard normal features
    raw = _own(x_train=lambda f: f["x_train"] * 80 + 70, x_test=lambda f: f["x_test"] * 80 + 70)
    assert raw.scale_note().startswith("the training inputs have mean 7")
    assert _own(x_train=lambda f: f["x_train"] * 0.3).scale_note() is not None  # too narrow
    assert _own(x_train=lambda f: f["x_train"] * 3).scale_note() is not None  # too wide
    assert _own(x_train=lambda f: f["x_train"] + 3).scale_note() is not None  # not centred
    out = tmp_path / "raw"
    with pytest.warns(UserWarning, match="not standardised"):
        trainer = Trainer(GatedMLP(20, (8,), 2), raw, TrainConfig(epochs=1), out=out)
    assert "not standardised" in trainer.fit()["note"]

    fixed = raw.standardised()
    assert fixed.scale_note() is None
    std, mean = torch.std_mean(raw.x_train)
    torch.testing.assert_close(fixed.x_test, (raw.x_test - mean) / std)
    norm = fixed.meta["normalisation"]
    assert norm == {"pixel_scale": 1.0, "mean": [float(mean)], "std": [float(std)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note now
        trainer = Trainer(GatedMLP(20, (8,), 2), fixed, TrainConfig(epochs=1), out=tmp_path / "ok")
        summary = trainer.fit()
    assert "not standardised" not in (summary["note"] or "")
    assert f"x = (x - mean) / std with mean {norm['mean']}" in input_note(tmp_path / "ok")
    from safetensors import safe_open

    from bayesprune.export import export_model

    ok = tmp_path / "ok"
    path = export_model(ok / "model.pt", "safetensors", ok / "m.safetensors")
    with safe_open(path, "pt") as f:  # the file says how its inputs are made, passed on alone
        meta = f.metadata()
    assert json.loads(meta["normalisation"]) == norm
    assert meta["inputs"].endswith(input_note(tmp_path / "ok"))

    # on top of a loader's standardisation of 8-bit pixels: one record from the pixels
    pixels = torch.randint(0, 256, (40, 20), generator=torch.Generator().manual_seed(1)).float()
    record = {"pixel_scale": 1 / 255, "mean": [0.2], "std": [0.5]}
    loaded = Dataset("own", (pixels / 255 - 0.2) / 0.5, torch.arange(40) % 2, pixels[:8] / 255,
                     torch.arange(8) % 2, 2, meta={"normalisation": record})  # fmt: skip
    again = loaded.standardised()
    rec = again.meta["normalisation"]
    rebuilt = (pixels * rec["pixel_scale"] - rec["mean"][0]) / rec["std"][0]
    torch.testing.assert_close(rebuilt, again.x_train)

    # per feature, for tabular features of different scales (the global pair would leave the
    # small ones at ~0); a constant feature is centred, not divided by 0
    scales = torch.logspace(-3, 3, 20)
    tab = _own(x_train=lambda f: f["x_train"] * scales + 5, x_test=lambda f: f["x_test"] * scales)
    tab.x_train[:, 3] = 7.0
    per = tab.standardised(per_feature=True)
    std, mean = torch.std_mean(per.x_train, dim=0)
    torch.testing.assert_close(mean, torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(std[torch.arange(20) != 3], torch.ones(19))
    assert std[3] == 0 and torch.isfinite(per.x_test).all()
    rec = per.meta["normalisation"]
    rebuilt = (tab.x_test - torch.tensor(rec["mean"])) / torch.tensor(rec["std"])
    torch.testing.assert_close(rebuilt, per.x_test)
    assert "per_feature=True" in tab.standardised().scale_note()  # one pair cannot mend it
    assert per.scale_note() is None and _own().standardised().scale_note() is None
    padded = _own(x_train=lambda f: torch.cat([f["x_train"], torch.ones(60, 100)], 1),
                  x_test=lambda f: torch.cat([f["x_test"], torch.ones(20, 100)], 1))  # fmt: skip
    assert padded.standardised(per_feature=True).scale_note() is None  # constants stay at 0
    with pytest.raises(DataError, match="x_train must be float32"):  # checked first
        _own(x_train=lambda f: (f["x_train"] * 10).to(torch.uint8)).standardised()
    trainer = Trainer(GatedMLP(20, (8,), 2), per, TrainConfig(epochs=1), out=tmp_path / "tab")
    trainer.fit()
    assert "per input value, with the 20 means" in input_note(tmp_path / "tab")
    with pytest.raises(DataError, match="without per_feature"):
        loaded.standardised(per_feature=True)


def test_user_copies_that_are_damaged_partial_or_mixed_are_refused_by_name(tmp_path):
    """A helper's copies (session 21): each trained on the wrong data without a word, or was a
    traceback."""
    import pickle

    from bayesprune.data import LABEL_SIGNATURES
    from tests.conftest import write_fake_cifar10

    gz = _fake_mnist(tmp_path / "gz", gz=True)  # a damaged compressed stream: zlib.error
    path = gz / "train-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    start = raw.index(0, 10) + 1  # the deflate stream, after the header's file name
    raw[start] |= 0b110  # its first block's type: 3, which does not exist
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path / "gz")
    # an interrupted download in <root>/MNIST/raw beside a complete copy in <root> itself
    partial = _fake_mnist(tmp_path / "partial")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (partial / name).rename(tmp_path / "partial" / name)
    (partial / "train-images-idx3-ubyte").link_to(tmp_path / "partial" / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=r"MNIST/raw is incomplete: train-labels-idx1-ubyte, t10k"):
        load_dataset("mnist", tmp_path / "partial")
    # one split of each dataset: MNIST's training files, Fashion-MNIST's test files
    mixed = _fake_mnist(tmp_path / "mixed")
    _replace(mixed, "t10k-images-idx3-ubyte", np.zeros((12, 28, 28)))
    _replace(mixed, "t10k-labels-idx1-ubyte", np.array(LABEL_SIGNATURES["fashion-mnist"][1]))
    with pytest.raises(DataError, match="the test files in .* are fashion-mnist's, not mnist's"):
        load_dataset("mnist", tmp_path / "mixed")
    empty = _fake_mnist(tmp_path / "empty")  # no images: torch's std() warning, then the error
    _replace(empty, "train-images-idx3-ubyte", np.zeros((0, 28, 28)))
    _replace(empty, "train-labels-idx1-ubyte", np.zeros(0))
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds no images"):
        load_dataset("mnist", tmp_path / "empty")

    def cifar(root, labels=None, protocol=4, only=None):
        folder = write_fake_cifar10(root)
        if labels is not None:
            path = folder / "data_batch_2"
            batch = pickle.loads(path.read_bytes())
            batch[b"labels"] = labels(len(batch[b"labels"]))
            path.write_bytes(pickle.dumps(batch, protocol=protocol))
        if only is not None:
            (root / "cifar-10-batches-py").rename(root / "full")
            (root / "cifar-10-batches-py").mkdir()
            (root / "full" / only).rename(root / "cifar-10-batches-py" / only)
            for f in (root / "full").iterdir():
                f.rename(root / f.name)
        return root

    for labels, message in (
        (lambda n: [1.7] * n, "labels must be integers, got float64"),  # was read as 1
        (lambda n: [True] * n, "labels must be integers, got bool"),
        (lambda n: [2**70] * n, "labels must be integers, got object"),  # an OverflowError
    ):
        with pytest.raises(DataError, match=message):
            load_dataset("cifar10", cifar(tmp_path / f"c{len(message)}", labels))
    column = load_dataset("cifar10", cifar(tmp_path / "col", lambda n: [[1]] * n))  # a column
    assert column.y_train.dim() == 1 and column.y_train[50:100].eq(1).all()
    proto2 = load_dataset("cifar10", cifar(tmp_path / "p2", lambda n: [3] * n, protocol=2))
    assert proto2.y_train[50:100].eq(3).all()  # Python 3's bytes at protocol 2: _codecs.encode
    with pytest.raises(DataError, match="cifar-10-batches-py is incomplete: data_batch_1, "):
        load_dataset("cifar10", cifar(tmp_path / "half", only="test_batch"))


def test_the_constant_predictor_answers_the_most_frequent_training_class():
    """Its training error and loss are what a network that learnt nothing scores: the collapse
    test and the warm-up read them, and ``bayesprune baseline`` its test error."""
    from bayesprune.baseline import chance_errors

    y = torch.tensor([2] * 6 + [0] * 3 + [1])  # frequencies 0.3 / 0.1 / 0.6, class 3 unseen
    yt = torch.tensor([2, 2, 0, 3])
    data = Dataset("own", torch.randn(10, 2), y, torch.randn(4, 2), yt, num_classes=4)
    label, error, nll = data.constant_predictor()
    assert label == 2 and error == pytest.approx(0.4)
    assert nll == pytest.approx(-(0.3 * math.log(0.3) + 0.1 * math.log(0.1) + 0.6 * math.log(0.6)))
    assert chance_errors(data) == pytest.approx((0.4, 0.5))


def test_test_classes_no_training_example_has_and_constant_inputs_are_noted():
    """A test set with a class the training set lacks trains (it is the user's split) but is
    said when the run starts and in its summary: every such test example counts wrong. With
    ``--train-subset`` it is the subset's classes that count. Constant inputs are said to be
    constant (they were called "not standardised", standardising cannot mend them)."""
    import warnings

    from bayesprune.config import TrainConfig
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models.network import GatedMLP

    assert _own().class_note() is None
    absent = _own(y_test=lambda f: f["y_test"] * 2, num_classes=3)  # class 2 only in the test
    share = 100 * float((absent.y_test == 2).float().mean())
    assert absent.class_note().startswith(
        f"the test labels hold class(es) 2 that no training example has ({share:.1f}% of"
    )
    with pytest.warns(UserWarning, match="the test labels hold class"):
        trainer = Trainer(GatedMLP(20, (8,), 3), absent, TrainConfig(epochs=1))
    assert "no training example has" in trainer.fit(progress=False)["note"]
    y = torch.cat([torch.arange(58) % 2, torch.tensor([2, 2])])  # class 2: two examples
    three = _own(y_train=lambda f: y, y_test=lambda f: torch.arange(20) % 3, num_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(GatedMLP(20, (8,), 3), three, TrainConfig(epochs=1))  # no note
    seed = next(s for s in range(100) if 2 not in three.subset(10, seed=s).y_train)
    with pytest.warns(UserWarning, match="the test labels hold class"):
        Trainer(GatedMLP(20, (8,), 3), three, TrainConfig(epochs=1, train_subset=10, seed=seed))
    # with held-out evidence the weights train on what the share leaves: a class held out whole
    # is one no training example of theirs has (the note read the set before the split)
    seed = next(s for s in range(100) if 2 not in three.hold_out(0.5, seed=s)[0].y_train)
    held = TrainConfig(epochs=1, evidence="held-out", evidence_share=0.5, seed=seed)
    with pytest.warns(UserWarning, match="the test labels hold class"):
        Trainer(GatedMLP(20, (8,), 3), three, held)
    constant = _own(x_train=lambda f: torch.zeros_like(f["x_train"]))
    assert constant.scale_note().startswith("the training inputs are constant (every value is 0)")


def test_an_idx_file_of_another_element_type_is_refused(tmp_path):
    # the type byte 0x08 (unsigned bytes) is checked: 0x0D (float32) read as bytes is noise
    raw = _fake_mnist(tmp_path)
    path = raw / "train-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[2] = 0x0D
    path.write_bytes(bytes(content))
    with pytest.raises(DataError):
        load_dataset("mnist", tmp_path)


def test_mnist_is_standardised_with_its_training_sets_statistics(tmp_path):
    # mean 0 and standard deviation 1 over the training pixels, whatever the test set's spread
    raw = _fake_mnist(tmp_path)
    rng = np.random.default_rng(1)
    _replace(raw, "t10k-images-idx3-ubyte", rng.integers(0, 60, (10, 28, 28)))
    data = load_dataset("mnist", tmp_path)
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(data.x_test.std()) < 0.5  # the test set keeps its own, narrower spread


def test_a_subset_is_seeded_without_replacement_and_records_the_full_size():
    data = make_teacher(num_train=500, num_test=50)
    first, again, other = data.subset(100, seed=0), data.subset(100, seed=0), data.subset(100, 1)
    assert torch.equal(first.x_train, again.x_train)
    assert not torch.equal(first.x_train, other.x_train)
    rows = {tuple(r.tolist()) for r in first.x_train}
    assert len(rows) == 100 and rows <= {tuple(r.tolist()) for r in data.x_train}
    assert first.meta["train_subset"] == 100 and first.meta["train_total"] == 500


def test_hashes_cover_whole_files_and_every_tensor(tmp_path):
    import hashlib
    from dataclasses import replace

    from bayesprune.data import file_records, tensors_sha256

    path = tmp_path / "big.bin"
    content = bytearray(np.random.default_rng(0).integers(0, 255, 3 << 20).astype(np.uint8))
    path.write_bytes(bytes(content))
    before = file_records([path])[0]["sha256"]
    content[-1] ^= 1  # the last byte, three MiB in
    path.write_bytes(bytes(content))
    after = file_records([path])[0]["sha256"]
    assert before != after == hashlib.sha256(bytes(content)).hexdigest()
    data = make_teacher(num_train=100, num_test=20)
    relabelled = replace(data, y_train=(data.y_train + 1) % data.num_classes)
    assert tensors_sha256(relabelled) != tensors_sha256(data)


def test_standardise_feature_is_per_column_and_recorded(tmp_path):
    from bayesprune.data import load_npz

    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 10.0, 100.0])
    x, xt = torch.randn(50, 3, generator=gen) * scales, torch.randn(10, 3, generator=gen)
    y = torch.arange(50) % 2
    np.savez(tmp_path / "own.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=xt.numpy(),
             y_test=(torch.arange(10) % 2).numpy())  # fmt: skip
    data = load_npz(tmp_path / "own.npz", "feature")
    assert data.meta["normalisation"]["per_feature"] is True
    torch.testing.assert_close(data.x_train.std(0), torch.ones(3), rtol=1e-4, atol=1e-4)
    assert load_npz(tmp_path / "own.npz", "all").meta["normalisation"].get("per_feature") in (
        None, False,
    )  # fmt: skip


def test_npz_classes_count_the_test_labels_and_boolean_inputs_are_refused(tmp_path):
    from bayesprune.data import load_npz

    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    train, test = np.arange(20) % 3, np.array([0, 1, 2, 3])  # a class only the test set has
    np.savez(tmp_path / "a.npz", x_train=x, y_train=train, x_test=x[:4], y_test=test)
    assert load_npz(tmp_path / "a.npz").num_classes == 4
    np.savez(tmp_path / "b.npz", x_train=x > 0, y_train=train, x_test=x[:4] > 0, y_test=test)
    with pytest.raises(DataError, match="must hold real numbers"):
        load_npz(tmp_path / "b.npz")


def test_a_relative_data_dir_given_on_resume_is_recorded_absolute(tmp_path, monkeypatch):
    from pathlib import Path

    from bayesprune.runs import run_data_dir

    monkeypatch.chdir(tmp_path)
    got = run_data_dir(tmp_path / "run", {"data_dir": "/old/own.npz"}, "data/own.npz")
    assert Path(got).is_absolute() and got == str((tmp_path / "data" / "own.npz").resolve())
