import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():
    """Param store cleared and seeds fixed before each test (Pyro's test convention)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)
    yield


def one_error_line(capsys) -> str:
    """The one line a refused command writes to stderr, "bayesprune: error: …" (the project's
    rule for bad input: exactly one line, no traceback); the test fails on anything else."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesprune: error:"), err
    return err[0]


def write_fake_cifar10(root, n_train=50, n_test=20, seed=0):
    """Synthetic CIFAR-10 in torchvision's ``cifar-10-batches-py`` layout (pickled batches).

    torchvision md5-checks real batches, so the project reads the pickles itself; this fixture
    writes the same format: dicts with ``b"data"`` (N × 3072 uint8, channel-major) and
    ``b"labels"``.
    """
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


@pytest.fixture
def fake_cifar10(tmp_path):
    """Root folder holding a small synthetic CIFAR-10."""
    write_fake_cifar10(tmp_path / "data")
    return tmp_path / "data"
