"""P5: gate-gradient estimators against exact enumeration of every gate configuration."""

import itertools

import pyro
import pytest
import torch
import torch.nn.functional as F

from bayesprune.guides import GateGuide
from bayesprune.inference import GatedELBO
from bayesprune.models import GatedMLP, GatedModel, GatedNet, HyperPrior

B = 24


@pytest.fixture
def tiny():
    """A toy: 3 inputs, 4 + 3 gated units (7 gates), 2 classes, trained with gates ~ q(ξ)."""
    torch.manual_seed(1)
    net = GatedMLP(3, (4, 3), 2)
    torch.nn.init.kaiming_uniform_(net.layers["out"].weight, nonlinearity="relu")  # random read-out
    x = torch.randn(B, 3)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    theta = {"fc1": torch.tensor([0.5, 0.3, 0.7, 0.5]), "fc2": torch.tensor([0.6, 0.5, 0.4])}
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        gates = {n: torch.bernoulli(t.expand(B, -1)) for n, t in theta.items()}
        F.cross_entropy(net(x, gates=gates), y).backward()
        opt.step()
    with torch.no_grad():  # one clearly harmful unit: its output pushes towards the wrong class
        net.layers["out"].weight[:, 2] = torch.tensor([0.5, -0.5]) * torch.sign(
            net.layers["out"].weight[1, 2] - net.layers["out"].weight[0, 2] + 1e-9
        )
    hyper = HyperPrior()
    guide = GateGuide(net, hyper, init_theta=0.5)
    for name, t in theta.items():
        guide.set_gate_probs(name, t)
    return net, guide, GatedModel(net, hyper), x, y


def exact_gradient(net, guide, x, y):
    """∂/∂θ of E_q[Σ_n ℓ_n(ξ_n)] by enumerating all 2^7 gate configurations."""
    thetas = [guide.gate_probs(n).detach().clone().requires_grad_(True) for n in net.gated]
    sizes = [t.numel() for t in thetas]
    total = torch.zeros(())
    for bits in itertools.product([0.0, 1.0], repeat=sum(sizes)):
        xi = torch.tensor(bits)
        parts = torch.split(xi, sizes)
        prob = torch.ones(())
        for t, p in zip(thetas, parts, strict=True):
            prob = prob * torch.prod(t * p + (1 - t) * (1 - p))
        gates = dict(zip(net.gated, parts, strict=True))
        nll = F.cross_entropy(net(x, gates=gates), y, reduction="sum")
        total = total + prob * nll.detach()
    grads = torch.autograd.grad(total, thetas)
    return torch.cat(grads)


def estimator_samples(estimator, net, guide, model, x, y, draws):
    elbo = GatedELBO(estimator=estimator, implementation="traced")
    out = []
    with pyro.validation_enabled(False):
        for _ in range(draws):
            grads = elbo.data_gate_gradients(model, guide, x, y, num_data=B)
            out.append(torch.cat([grads[n] for n in net.gated]))
    return torch.stack(out)


@pytest.mark.parametrize("estimator,draws", [("exact", 150), ("score", 3000)])
def test_unbiased_estimators_agree_with_enumeration(tiny, estimator, draws):
    net, guide, model, x, y = tiny
    truth = exact_gradient(net, guide, x, y)
    samples = estimator_samples(estimator, net, guide, model, x, y, draws)
    mean, se = samples.mean(0), samples.std(0) / draws**0.5
    assert torch.all((mean - truth).abs() <= 4 * se + 1e-3), (mean, truth, se)
    clear = truth.abs() > 4 * se  # components the draws resolve: their signs must agree
    assert clear.any(), (truth, se)
    assert torch.equal(torch.sign(mean[clear]), torch.sign(truth[clear])), (mean, truth)


def test_first_order_gets_the_sign_of_clearly_useful_and_useless_units(tiny):
    net, guide, model, x, y = tiny
    truth = exact_gradient(net, guide, x, y)
    clear = truth.abs() > 0.2 * truth.abs().max()
    assert (truth[clear] > 0).any() and (truth[clear] < 0).any(), truth  # both kinds present
    mean = estimator_samples("first-order", net, guide, model, x, y, 400).mean(0)
    assert torch.equal(torch.sign(mean[clear]), torch.sign(truth[clear])), (mean, truth)


def test_secant_matches_enumeration_when_unit_effects_are_small(tiny):
    """The secant is exact for a loss quadratic in ξ_s: true when one unit moves the logits
    little, as in wide layers (Evidence 3). Shrinking the output weights puts the toy there."""
    net, guide, model, x, y = tiny
    with torch.no_grad():
        net.layers["out"].weight.mul_(0.1)
    truth = exact_gradient(net, guide, x, y)
    clear = truth.abs() > 0.2 * truth.abs().max()
    assert (truth[clear] > 0).any() and (truth[clear] < 0).any(), truth
    secant = estimator_samples("secant", net, guide, model, x, y, 400).mean(0)
    assert torch.equal(torch.sign(secant[clear]), torch.sign(truth[clear])), (secant, truth)
    scale = truth.abs().max()
    assert torch.all((secant - truth).abs() <= 0.2 * scale), (secant, truth)


def test_exact_gate_differences_match_explicit_flips(tiny):
    net, guide, model, x, y = tiny
    from bayesprune.inference import exact_gate_differences

    xi = {"fc1.gate": torch.ones(B, 4), "fc2.gate": torch.bernoulli(torch.full((B, 3), 0.5))}
    values = {**xi, **{f"{n}.weight": net.augmented(n).detach() for n in net.layers}}
    values.update({f"{n}.slab_var": guide.slab_var(n) for n in net.layers})
    values.update({f"{n}.prob": guide.gate_probs(n).detach() for n in net.gated})
    delta = exact_gate_differences(model, values, "fc2.gate", (x, y), {"num_data": B})
    for s in range(3):
        on, off = xi["fc2.gate"].clone(), xi["fc2.gate"].clone()
        on[:, s], off[:, s] = 1, 0
        nll = lambda g: F.cross_entropy(  # noqa: E731
            net(x, gates={"fc1": xi["fc1.gate"], "fc2": g}), y, reduction="none"
        )
        assert torch.allclose(delta[:, s], (nll(on) - nll(off)).detach(), atol=1e-5)


def _curvature_from_the_whole_batch(net, x):
    """Gates drawn at 0.7, labels drawn from the model with two of them changed (examples 2 and
    5), the data term's backward pass at scale 7.5, and ĝ of the secant from the whole batch."""
    from bayesprune.inference.elbo import sample_labels, sampled_label_gate_grads

    batch = x.shape[0]
    gates = {
        n: torch.bernoulli(torch.full((batch, net.width(n)), 0.7)).requires_grad_(True)
        for n in net.gated
    }
    leaves = list(gates.values())
    logits = net(x, gates=gates)
    torch.manual_seed(1)
    labels = sample_labels(logits)
    labels[[2, 5]] = (labels[[2, 5]] + 1) % logits.shape[1]  # two differ from the draw
    scale = 7.5
    (scale * F.cross_entropy(logits, labels, reduction="sum")).backward(retain_graph=True)
    torch.manual_seed(1)
    return logits, leaves, labels, scale, sampled_label_gate_grads(logits, leaves)


def test_secant_curvature_reruns_only_the_examples_whose_drawn_label_differs():
    """ĝ of the secant (Eq. (9s)) for a convolutional network: where the label drawn from the
    model is the observed one, ĝ_n is the data term's gate gradient over N/B, and only the other
    examples go through the network again; the result is the full backward pass's."""
    from bayesprune.inference.elbo import _rerun, sampled_label_gate_grads
    from bayesprune.models.network import build_network

    torch.manual_seed(0)
    net = build_network("lenet5", (1, 28, 28), 10, None, 0.25)
    torch.nn.init.normal_(net.layers["out"].weight, std=0.3)  # the classifier starts at 0
    x = torch.randn(8, 1, 28, 28)
    logits, leaves, labels, scale, full = _curvature_from_the_whole_batch(net, x)
    torch.manual_seed(1)
    rerun = _rerun(net, x)
    assert rerun is not None
    calls = []
    counted = lambda index, g: calls.append(index.tolist()) or rerun(index, g)  # noqa: E731
    part = sampled_label_gate_grads(logits, leaves, labels, counted, scale)
    assert calls == [[2, 5]]
    for a, b in zip(full, part, strict=True):
        assert a.abs().max() > 1e-3  # gradients that can tell the two apart
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert _rerun(GatedMLP(784, [8, 4], 10), torch.randn(2, 784)) is None  # no convolution


def _scaled_setup(net_fn=lambda: GatedMLP(5, (6, 4), 3), shape=(5,)):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = net_fn()
    torch.nn.init.normal_(net.layers["out"].weight)
    hyper = HyperPrior(temperature=0.3)
    guide, model = GateGuide(net, hyper, init_theta=0.6), GatedModel(net, hyper)
    x, y = torch.randn(10, *shape), torch.randint(0, 3, (10,))
    return net, guide, model, x, y


def test_score_estimator_gradient_scales_with_num_data():
    """The score estimator's θ-gradient is N/B Σ_n (ℓ_n − b_n) ∂log q/∂θ: ten times N, ten
    times the gradient, for the same draws."""
    net, guide, model, x, y = _scaled_setup()
    grads = {}
    for num_data in (10, 100):
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False):
            grads[num_data] = GatedELBO("score").data_gate_gradients(
                model, guide, x, y, num_data=num_data)
    for name in net.gated:
        assert grads[10][name].abs().max() > 1e-3
        torch.testing.assert_close(grads[100][name], 10 * grads[10][name], rtol=1e-4, atol=1e-6)


def _batch_norm_net():
    return GatedNet((1, 6, 6), [("conv", 4, 3, 1), ("pool",), ("fc", 5)], 3, batch_norm=True)


def test_secant_curvature_with_batchnorm_is_the_full_batch_one():
    """With BatchNorm a part of the batch is not that part of the batch's pass: ĝ given the
    labels must equal ĝ from the whole batch (and leave the running statistics alone)."""
    from bayesprune.inference.elbo import _rerun, sampled_label_gate_grads

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = _batch_norm_net().train()
    torch.nn.init.normal_(net.layers["out"].weight)
    x = torch.randn(10, 1, 6, 6)
    logits, leaves, labels, scale, full = _curvature_from_the_whole_batch(net, x)
    mean = net.norms["conv1"].running_mean.clone()
    torch.manual_seed(1)
    part = sampled_label_gate_grads(logits, leaves, labels, _rerun(net, x), scale)
    assert torch.equal(net.norms["conv1"].running_mean, mean)
    for a, b in zip(full, part, strict=True):
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_the_score_estimators_baseline_leaves_each_example_out_on_a_batch_of_two(tiny):
    """On two examples the baseline that includes the example itself halves every draw
    ((ℓ_0 − ℓ_1)/2 where leave-one-out gives ℓ_0 − ℓ_1), a bias of 1/B that a batch of 24 hides
    under its noise; here the mean must be the enumerated gradient, not half of it."""
    net, guide, model, x, y = tiny
    x, y = x[:2], y[:2]
    truth = exact_gradient(net, guide, x, y)
    elbo = GatedELBO(estimator="score", implementation="traced")
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(False):
        draws = [elbo.data_gate_gradients(model, guide, x, y, num_data=2) for _ in range(4000)]
    samples = torch.stack([torch.cat([g[n] for n in net.gated]) for g in draws])
    mean, se = samples.mean(0), samples.std(0) / len(samples) ** 0.5
    assert torch.all((mean - truth).abs() <= 4 * se + 1e-3), (mean, truth, se)
    resolved = truth.abs() > 8 * se  # where half the truth lies outside the band above
    assert resolved.sum() >= 2, (truth, se)
