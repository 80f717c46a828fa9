"""The weights' optimiser: Adam by default, SGD with heavy-ball momentum (``--optimizer sgd``)."""

import copy
import dataclasses

import pytest
import torch

from bayesprune.baseline import train_dense
from bayesprune.config import TrainConfig, weights_optimizer
from bayesprune.data import Dataset, load_dataset
from bayesprune.inference.shrink import remove_units
from bayesprune.inference.trainer import Trainer
from bayesprune.models.network import build_network

N, B = 400, 100  # every step takes the first B examples, so the two recipes can be compared


def _images() -> Dataset:
    """N random 16×16 images with random labels: a convolutional network's step to compare."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 1, 16, 16, generator=gen), torch.randint(0, 10, (N,), generator=gen)
    return Dataset("images", x, y, x[:50], y[:50], 10)


def _trainer(optimizer: str, lr: float, arch: str = "mlp", **settings) -> Trainer:
    data = load_dataset("teacher").subset(N, seed=0) if arch == "mlp" else _images()
    torch.manual_seed(0)
    widths = (12, 6) if arch == "mlp" else None
    net = build_network(arch, data.in_shape, data.num_classes, widths, 1.0 if widths else 0.25)
    torch.nn.init.normal_(net.layers["out"].weight, std=0.3)  # a classifier that reads the units
    config = TrainConfig(
        optimizer=optimizer, lr=lr, batch_size=B, warmup_tolerance=0.1, seed=0, **settings
    )
    return Trainer(net, data, config)


def _params(net) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize(
    "optimizer,lr,arch", [("sgd", 0.2, "mlp"), ("adam", 1e-2, "mlp"), ("sgd", 0.05, "lenet5")]
)
def test_a_step_is_the_dense_recipes_step_on_the_per_example_objective(optimizer, lr, arch):
    """Gates all on (θ₀ = 1, the warm-up) and a negligible prior (τ = 1e-7): two bayesprune
    steps on a batch of B of the N training examples move every weight as two steps of the dense
    baseline with the same optimiser on that batch's mean cross-entropy. The ELBO's data term is
    N times a per-example mean, so SGD must step by lr/N (without it the steps are 400 times too
    long, with lr/B 4 times); Adam does not see the scale. LeNet-5 too (docs §6zq: its SGD step
    is the dense one, so a stalled run that does not recover is not the step's doing)."""
    trainer = _trainer(optimizer, lr, arch, temperature=1e-7)
    dense = copy.deepcopy(trainer.net)
    before = _params(trainer.net)
    x, y = trainer.data.x_train[:B], trainer.data.y_train[:B]
    for _ in range(2):
        trainer.train_step(x, y, torch.arange(B))
    assert all(bool((trainer.guide.gate_probs(n) == 1).all()) for n in trainer.net.gated)
    batch = dataclasses.replace(trainer.data, x_train=x, y_train=y)  # the dense run's one batch
    train_dense(dense, batch, epochs=2, batch_size=B, lr=lr, optimizer=optimizer)
    gated, plain = _params(trainer.net), _params(dense)
    for name, start in before.items():
        moved = plain[name] - start
        assert moved.abs().max() > 1e-4, name  # the comparison has something to compare
        torch.testing.assert_close(gated[name] - start, moved, rtol=2e-3, atol=1e-6)


def test_sgds_momentum_is_its_own_and_follows_the_units_that_stay():
    trainer = _trainer("sgd", 0.05, momentum=0.5)
    weights = trainer.optim.weights
    assert isinstance(weights, torch.optim.SGD)
    assert weights.param_groups[0]["momentum"] == 0.5
    assert weights.param_groups[0]["lr"] == pytest.approx(0.05 / N)
    x, y = trainer.data.x_train[:B], trainer.data.y_train[:B]
    trainer.train_step(x, y, torch.arange(B))
    w = trainer.net.layers["fc1"].weight
    buffer = weights.state[w]["momentum_buffer"].clone()
    keep = torch.tensor([0, 3, 4, 9])
    remove_units(trainer.guide, "fc1", keep, trainer.optim.torch_optimizers())
    assert w.shape[0] == 4
    torch.testing.assert_close(weights.state[w]["momentum_buffer"], buffer[keep])
    trainer.train_step(x, y, torch.arange(B))  # and the next step runs on the sliced state


def test_momentum_belongs_to_sgd():
    with pytest.raises(ValueError, match="--optimizer sgd's"):
        TrainConfig(momentum=0.5)
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(optimizer="sgd", momentum=1.0)
    assert TrainConfig(optimizer="sgd", momentum=0.0).momentum == 0.0
    config = TrainConfig()
    config.momentum = 0.5  # set after construction: refused where the optimiser is built
    with pytest.raises(ValueError, match="--optimizer sgd's"):
        weights_optimizer(config)
