"""The fused objective computes the same numbers and gradients as GatedELBO."""

import pyro
import pytest
import torch

from bayesprune.guides import GateGuide
from bayesprune.inference import GatedELBO
from bayesprune.inference.fused import FusedObjective
from bayesprune.models import GatedMLP, GatedModel, GatedNet, HyperPrior

THETAS = (1.0, 0.5, 0.2, 0.0, 0.9, 1.0, 0.3, 1.0, 0.6, 0.7)


def _setup(weights, posterior, conv=False):
    torch.manual_seed(3)
    if conv:  # conv (filter gates) -> pool -> flatten -> fc (unit gates) -> out
        plan = [("conv", 6, 3, 1), ("pool",), ("fc", 5)]
        net = GatedNet((2, 6, 6), plan, 3)
        x = torch.randn(11, 2, 6, 6)
    else:
        net = GatedMLP(7, (6, 5), 3)
        x = torch.randn(11, 7)
    hyper = HyperPrior(temperature=0.3)
    guide = GateGuide(net, hyper, weights=weights, posterior=posterior, init_sigma=0.05)
    with torch.no_grad():
        for name in net.gated:
            theta = guide.raw_param("theta", name)
            theta.copy_(torch.tensor(THETAS[: theta.numel()]))
    y = torch.randint(0, 3, (11,))
    return net, hyper, guide, GatedModel(net, hyper), x, y


def _grads(guide):
    grads = {n: p.grad.clone() for n, p in guide.named_parameters() if p.grad is not None}
    guide.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("estimator", ["first-order", "secant"])
@pytest.mark.parametrize("weights", ["point", "gaussian"])
@pytest.mark.parametrize("posterior", ["coupled", "structured", "mean-field"])
@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_fused_matches_the_pyro_elbo(estimator, weights, posterior, conv):
    net, hyper, guide, model, x, y = _setup(weights, posterior, conv)
    pyro.set_rng_seed(5)
    with pyro.validation_enabled(False):
        ref = GatedELBO(estimator).loss_and_grads_terms(model, guide, x, y, num_data=110)
    ref_grads = _grads(guide)
    pyro.set_rng_seed(5)
    fused = FusedObjective(guide, hyper, estimator).loss_and_grads_terms(x, y, num_data=110)
    fused_grads = _grads(guide)
    for key in ("loss", "data", "prior"):
        assert float(fused[key]) == pytest.approx(float(ref[key]), rel=1e-5, abs=1e-4)
    assert set(fused_grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        assert torch.allclose(fused_grads[name], grad, rtol=1e-4, atol=1e-5), name


def test_fused_rejects_oracle_estimators():
    net, hyper, guide, *_ = _setup("point", "structured")
    with pytest.raises(ValueError):
        FusedObjective(guide, hyper, "exact")
