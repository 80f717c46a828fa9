"""GatedELBO's fast evaluation computes the same numbers and gradients as its traced one."""

import pyro
import pytest
import torch

from bayesprune.guides import GateGuide
from bayesprune.inference import GatedELBO, update_slab_variances
from bayesprune.inference.elbo_fast import point_mass_prior
from bayesprune.inference.pruning import PruneMessenger
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
    torch.nn.init.normal_(net.layers["out"].weight)  # a read-out that reads every unit
    hyper = HyperPrior(temperature=0.3)
    guide = GateGuide(net, hyper, weights=weights, posterior=posterior, init_sigma=0.05)
    for name in net.gated:
        guide.set_gate_probs(name, THETAS[: net.width(name)])
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
def test_fast_evaluation_matches_the_traced_one(estimator, weights, posterior, conv):
    net, hyper, guide, model, x, y = _setup(weights, posterior, conv)
    results = {}
    for implementation in ("traced", "fast"):
        pyro.set_rng_seed(5)
        elbo = GatedELBO(estimator, implementation=implementation)
        with pyro.validation_enabled(False):
            terms = elbo.loss_and_grads_terms(model, guide, x, y, num_data=110)
        results[implementation] = terms, _grads(guide)
    (ref, ref_grads), (fast, fast_grads) = results["traced"], results["fast"]
    for key in ("loss", "data", "prior"):
        assert float(fast[key]) == pytest.approx(float(ref[key]), rel=1e-5, abs=1e-4)
    assert set(fast_grads) == set(ref_grads)
    assert any("theta" in name for name in ref_grads)
    for name, grad in ref_grads.items():
        assert torch.allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("posterior", ["coupled", "structured"])
@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_closed_form_prior_gradients_are_autograds_of_the_same_function(posterior, conv):
    net, hyper, guide, *_ = _setup("point", posterior, conv)
    thetas = {name: guide.gate_probs(name).detach() for name in net.gated}
    grads = []
    value = point_mass_prior(guide, hyper, thetas, None, grads)
    attached = point_mass_prior(guide, hyper, thetas, None, [], attach_weights=True)
    assert float(value.detach()) == pytest.approx(float(attached.detach()), rel=1e-6)
    params = [p for p, *_ in grads]
    assert len(params) == 2 * len(net.layers)
    autograd = torch.autograd.grad(attached, params)
    for (param, base, coef), reference in zip(grads, autograd, strict=True):
        closed_form = (base * coef).reshape(param.shape)
        assert torch.allclose(closed_form, reference, rtol=1e-5, atol=1e-7), param.shape


@pytest.mark.parametrize("case", ["plain", "vertex", "pruned"])
@pytest.mark.parametrize("posterior", ["coupled", "structured"])
@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_closed_form_theta_gradients_are_autograds_of_the_same_function(case, posterior, conv):
    """The prior's θ-gradient written by ``theta_grads`` (no autograd graph) is autograd's of
    the same value: with every unit priced, with Eq. (10e)'s vertex (two consumer units heading
    for 0) and under a pruning handler (one unit of each layer collapsed)."""
    net, hyper, guide, *_ = _setup("point", posterior, conv)
    producer, consumer = net.gated
    vertex = {consumer: torch.tensor([True, False, True, True, False])}
    pruning = None
    if case == "pruned":
        pruning = PruneMessenger(
            net, {name: torch.arange(net.width(name)) == 2 for name in net.gated}
        )
    if case != "vertex" or posterior != "coupled":
        vertex = None
    thetas = {name: guide.gate_probs(name).detach().requires_grad_(True) for name in net.gated}
    reference = point_mass_prior(guide, hyper, thetas, pruning, [], vertex=vertex)
    autograd = torch.autograd.grad(reference, list(thetas.values()))
    closed_form: dict = {}
    value = point_mass_prior(
        guide, hyper, thetas, pruning, [], vertex=vertex, theta_grads=closed_form
    )
    assert not value.requires_grad  # θ read detached: nothing for autograd to do
    assert float(value) == float(reference.detach())
    assert set(closed_form) == set(net.gated)
    for name, grad in zip(net.gated, autograd, strict=True):
        assert grad.abs().max() > 1e-3, name
        assert torch.allclose(closed_form[name], grad, rtol=1e-5, atol=1e-7), name
    if pruning is not None:  # a collapsed unit's θ is not in the pruned network's objective
        assert all(float(closed_form[name][2]) == 0.0 for name in net.gated)


def test_the_fast_evaluation_refuses_what_it_cannot_do():
    *_, guide, model, x, y = _setup("point", "structured")
    with pytest.raises(ValueError, match="fast evaluation supports"):
        GatedELBO("exact", implementation="fast")
    with pytest.raises(ValueError, match="does not apply"):
        with pyro.poutine.scale(scale=2.0):
            GatedELBO("secant", implementation="fast").loss(model, guide, x, y)
    elbo = GatedELBO("secant")  # auto: falls back to the traced evaluation under a handler
    with pyro.validation_enabled(False), pyro.poutine.scale(scale=2.0):
        assert elbo.fast_applies(model, guide) is not None
        pyro.set_rng_seed(5)
        auto = elbo.loss(model, guide, x, y)
        pyro.set_rng_seed(5)
        traced = GatedELBO("secant", implementation="traced").loss(model, guide, x, y)
    assert auto == traced  # the same evaluation, the same draws
    pyro.set_rng_seed(5)
    with pyro.validation_enabled(False):  # and the handler is applied: twice the plain value
        assert auto == pytest.approx(2 * GatedELBO("secant").loss(model, guide, x, y), rel=1e-5)


@pytest.mark.parametrize("implementation", ["fast", "traced"])
@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_vertex_pricing_moves_only_the_producers_gradient_by_the_leaving_consumers_share(
    implementation, conv
):
    """Eq. (10e): with two of the consumer's five units heading for 0, the producer's θ-gradient
    loses exactly what those two add to its price (their θ times the change of their KL with
    the producer's θ, computed here by autograd of the prior with the consumer's θ replaced);
    the value, the consumer's θ-gradient and every weight gradient stay as they were."""
    net, hyper, guide, model, x, y = _setup("point", "coupled", conv)
    producer, consumer = net.gated
    heading = torch.tensor([True, False, True, True, False])  # units 1 and 4 head for 0
    results = {}
    for vertex in (None, {consumer: heading}):
        pyro.set_rng_seed(5)
        elbo = GatedELBO("secant", implementation=implementation)
        elbo.vertex = None if vertex is None else (lambda v=vertex: v)
        with pyro.validation_enabled(False):
            terms = elbo.loss_and_grads_terms(model, guide, x, y, num_data=110)
        results[vertex is None] = float(terms["loss"]), _grads(guide)
    (loss, plain), (loss_v, priced) = results[True], results[False]
    assert loss_v == pytest.approx(loss, rel=1e-6)
    key = {name: f"theta.{name}_unconstrained" for name in net.gated}
    assert set(priced) == set(plain)
    for name, grad in plain.items():
        if name != key[producer]:
            assert torch.allclose(priced[name], grad, rtol=1e-5, atol=1e-7), name

    theta_p = guide.gate_probs(producer).detach().requires_grad_(True)
    theta_c = guide.gate_probs(consumer).detach()

    def price_gradient(consumer_theta):
        thetas = {producer: theta_p, consumer: consumer_theta}
        (grad,) = torch.autograd.grad(point_mass_prior(guide, hyper, thetas, None, []), theta_p)
        return grad

    share = price_gradient(theta_c * ~heading) - price_gradient(torch.zeros_like(theta_c))
    assert share.abs().max() > 1e-3  # the leaving units' share is not negligible here
    shift = plain[key[producer]] - priced[key[producer]]
    assert torch.allclose(shift, share, rtol=1e-4, atol=1e-6)


def test_vertex_pricing_is_refused_where_no_unit_pays_for_the_weights_it_feeds():
    net, hyper, guide, model, x, y = _setup("point", "structured")
    elbo = GatedELBO("secant")
    elbo.vertex = lambda: {net.gated[1]: torch.ones(5, dtype=torch.bool)}
    with pytest.raises(ValueError, match="coupled posterior"):
        elbo.loss(model, guide, x, y)


def test_fast_loss_equals_traced_loss_after_the_slab_variances_change():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = GatedMLP(7, (6, 5), 3)
    torch.nn.init.normal_(net.layers["out"].weight)
    hyper = HyperPrior(temperature=0.3)
    guide, model = GateGuide(net, hyper, init_theta=0.6), GatedModel(net, hyper)
    x, y = torch.randn(11, 7), torch.randint(0, 3, (11,))

    def losses():
        out = []
        for implementation in ("fast", "traced"):
            pyro.set_rng_seed(5)
            with pyro.validation_enabled(False):
                out.append(GatedELBO("secant", implementation=implementation).loss(
                    model, guide, x, y, num_data=110))
        return out

    fast, traced = losses()  # fills the cache
    assert fast == pytest.approx(traced, rel=1e-5)
    update_slab_variances(guide, hyper)  # σ̂₁² of every layer moves
    guide.set_slab_var("fc1", guide.slab_var("fc1") * 3.0)
    fast2, traced2 = losses()
    assert traced2 != pytest.approx(traced, rel=1e-3)  # the hyper-prior term did change
    assert fast2 == pytest.approx(traced2, rel=1e-5)
