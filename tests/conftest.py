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
