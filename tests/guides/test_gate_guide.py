import pyro
import pytest
import torch
from pyro import poutine

from bayesprune.guides import GateGuide, StraightThroughBernoulli
from bayesprune.models import GatedMLP, HyperPrior


def test_theta_one_draws_deterministic_ones_and_zero_draws_zeros():
    d = StraightThroughBernoulli(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    xi = d.rsample((1000,))
    assert torch.all(xi[:, 0] == 1) and torch.all(xi[:, 2] == 1)
    assert torch.all(xi[:, 1] == 0) and torch.all(xi[:, 3] == 0)


def test_straight_through_value_is_exact_and_gradient_is_first_order():
    theta = torch.tensor([0.3, 0.8], requires_grad=True)
    xi = StraightThroughBernoulli(theta).rsample((50,))
    assert torch.all((xi == 0) | (xi == 1))
    weights = torch.tensor([2.0, -3.0])
    (xi * weights).sum().backward()  # ∂L/∂ξ summed over the 50 draws
    assert torch.allclose(theta.grad, 50 * weights)


def test_guide_sites_and_projection():
    net = GatedMLP(4, (3, 2), 2)
    guide = GateGuide(net, HyperPrior(), init_theta=0.5)
    x = torch.randn(7, 4)
    with pyro.validation_enabled(False):
        tr = poutine.trace(guide).get_trace(x, num_data=70, index=torch.arange(7))
    assert tr.nodes["fc1.gate"]["value"].shape == (7, 3)
    assert tr.nodes["fc2.weight"]["value"].shape == (2, 4)
    assert torch.equal(tr.nodes["fc1.prob"]["value"], guide.gate_probs("fc1"))
    guide.set_gate_probs("fc1", [-0.2, 0.4, 1.7])  # projected onto [0, 1]
    assert guide.gate_probs("fc1").tolist() == pytest.approx([0.0, 0.4, 1.0])
    # parameters are local to the module, not in Pyro's global param store
    assert len(pyro.get_param_store()) == 0


def test_guide_rejects_bad_settings():
    net = GatedMLP(4, (3,), 2)
    with pytest.raises(ValueError, match="weights must be"):
        GateGuide(net, HyperPrior(), weights="laplace")
    with pytest.raises(ValueError, match="init_theta must lie in"):
        GateGuide(net, HyperPrior(), init_theta=0.0)


def test_a_unit_at_theta_one_half_stays_in_the_posterior_mode():
    """mode_mask: θ_s ≥ ½ keeps the unit (a tie stays, docs of GateGuide.mode_mask)."""
    net = GatedMLP(4, (3,), 2)
    guide = GateGuide(net, HyperPrior(), init_theta=0.5)
    guide.set_gate_probs("fc1", [0.5, 0.4999, 1.0])
    assert guide.mode_gates()["fc1"].tolist() == [1.0, 0.0, 1.0]


def test_set_gate_probs_projects_the_storage_so_an_endpoint_gate_gets_its_gradient():
    """θ set outside [0, 1] is projected (stored at 0 or 1), so a gate set to 0 still receives
    its evidence (the clip's gradient passes at the end points, not beyond them)."""
    torch.set_num_threads(1)
    net = GatedMLP(4, (3,), 2)
    guide = GateGuide(net, HyperPrior())
    guide.set_gate_probs("fc1", [-0.2, 0.4, 1.7])
    (storage,) = guide.theta_parameters(["fc1"])
    assert storage.detach().tolist() == pytest.approx([0.0, 0.4, 1.0])
    (guide.gate_probs("fc1") * torch.tensor([-1.0, -1.0, 1.0])).sum().backward()
    assert storage.grad.tolist() == [-1.0, -1.0, 1.0]  # every gate moves, the ends included


def test_gaussian_weight_posterior_has_the_initial_standard_deviation():
    """init_sigma is q(w)'s standard deviation: the guide's weight draws spread by it."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = GatedMLP(30, (40,), 2)
    guide = GateGuide(net, HyperPrior(), weights="gaussian", init_sigma=0.05)
    x = torch.randn(2, 30)
    with pyro.validation_enabled(False):
        w = poutine.trace(guide).get_trace(x).nodes["fc1.weight"]["value"]
    spread = (w - net.augmented("fc1")).detach().std()
    assert float(spread) == pytest.approx(0.05, rel=0.05)  # 1240 draws


def test_theta_assigned_through_pyro_is_stored_projected():
    """PyroModule assignment (guide.theta.fc1 = t) stores the constraint's inverse: θ outside
    [0, 1] lands on the end points, where the clip still passes a gradient, as set_gate_probs
    stores it; stored at −0.2 the unit would be off with no gradient, never to come back."""
    guide = GateGuide(GatedMLP(4, (3,), 2), HyperPrior())
    guide.theta.fc1 = torch.tensor([-0.2, 0.4, 1.7])
    (storage,) = guide.theta_parameters(["fc1"])
    assert storage.detach().tolist() == pytest.approx([0.0, 0.4, 1.0])
