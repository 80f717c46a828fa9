"""Gated networks: shapes, and physical removal for every pattern of LeNet-5 and VGG16."""

import pytest
import torch

from bayesprune.export import architecture, count_weights, deterministic_network
from bayesprune.guides import GateGuide
from bayesprune.inference import remove_units
from bayesprune.models import GatedNet, HyperPrior, build_network, lenet5, vgg16

# (network, layer to prune, the pattern it exercises)
SCENARIOS = {
    "conv->conv": (lambda: lenet5((1, 28, 28), 10, width_mult=0.3), "conv1"),
    "conv->pool->flatten->linear": (lambda: lenet5((1, 28, 28), 10, width_mult=0.3), "conv2"),
    "linear->linear": (lambda: lenet5((1, 28, 28), 10, width_mult=0.3), "fc1"),
    "conv->batchnorm->conv": (lambda: vgg16((3, 32, 32), 10, width_mult=0.125), "conv1"),
    "conv->batchnorm->pool->flatten->linear": (
        lambda: GatedNet((3, 8, 8), [("conv", 6, 3, 1), ("pool",), ("fc", 7)], 4, batch_norm=True),
        "conv1",
    ),
}


def _set_theta(guide, layer, index, value):
    theta = guide.gate_probs(layer).detach().clone()
    theta[index] = value
    guide.set_gate_probs(layer, theta)


def _prepared(make, weights):
    """A network with non-trivial BatchNorm statistics and affine parameters, and its guide.

    The classifier starts at 0 (its outputs would be 0 before and after any removal, which
    compared nothing); it is drawn here so that the outputs read every unit."""
    torch.manual_seed(0)
    net = make()
    guide = GateGuide(net, HyperPrior(), weights=weights)
    x = torch.randn(16, *net.in_shape)
    with torch.no_grad():
        torch.nn.init.normal_(net.layers["out"].weight)
        for norm in net.norms.values():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        net.train()
        for _ in range(3):
            net(x + torch.randn_like(x))
    net.eval()
    return net, guide, x


def _gated_output(net, guide, x):
    gates = {n: guide.gate_probs(n).detach() for n in net.gated}  # θ ∈ {0, 1}: deterministic
    return net(x, gates=gates)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("weights", ["point", "gaussian"])
def test_removing_a_zero_gate_unit_keeps_outputs(scenario, weights):
    make, layer = SCENARIOS[scenario]
    net, guide, x = _prepared(make, weights)
    opt = torch.optim.Adam(guide.parameters(), lr=1e-2)
    net.augmented(layer).sum().backward()  # give the optimiser some state
    opt.step()
    with torch.no_grad():
        _set_theta(guide, layer, 1, 0.0)
    nxt = net.next_layer(layer)
    before = _gated_output(net, guide, x)
    assert before.abs().max() > 1e-2  # outputs that tell a wrong slice apart
    width, fan_in = net.width(layer), net.fan_in(layer)
    fan_out, block = net.width(nxt), net.blocks[nxt]
    count = count_weights(net)
    keep = torch.tensor([i for i in range(width) if i != 1])
    remove_units(guide, layer, keep, [opt])

    assert torch.allclose(_gated_output(net, guide, x), before, atol=1e-5)
    # shapes and parameter counts: one row + bias (+ γ, β), and fan_out · block input columns
    assert net.width(layer) == width - 1 and guide.gate_probs(layer).shape == (width - 1,)
    removed = fan_in + 1 + (2 if layer in net.norms else 0) + fan_out * block
    assert count_weights(net) == count - removed
    assert net.fan_in(nxt) == (width - 1) * block
    if layer in net.norms:
        norm = net.norms[layer]
        assert norm.running_mean.shape == norm.running_var.shape == (width - 1,)
    for p in guide.parameters():  # optimiser moments follow their parameters
        for v in opt.state[p].values():
            if v.dim():
                assert v.shape == p.shape
    if weights == "gaussian":
        assert guide.weight_posterior(layer).base_dist.scale.shape == (width - 1, fan_in + 1)
        assert guide.weight_posterior(nxt).base_dist.scale.shape == (
            fan_out,
            (width - 1) * block + 1,
        )
    opt.step()  # the optimiser still works
    # the exported network is the gated one with its zero-gate units gone
    det = deterministic_network(guide)
    assert torch.allclose(det(x), _gated_output(net, guide, x), atol=1e-5)


def test_exported_network_drops_units_with_theta_below_half():
    net, guide, x = _prepared(SCENARIOS["conv->batchnorm->conv"][0], "point")
    with torch.no_grad():
        _set_theta(guide, "conv2", slice(None, 3), 0.0)
        _set_theta(guide, "conv5", slice(None), 0.0)  # a whole layer off: one silent filter stays
    det = deterministic_network(guide)
    assert torch.allclose(det(x), _gated_output(net, guide, x), atol=1e-5)
    widths = [m.out_channels for m in det.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[1] == net.width("conv2") - 3 and widths[4] == 1
    assert count_weights(det) < count_weights(net)


def test_architectures_and_their_notation():
    net = lenet5((1, 28, 28), 10)
    assert net.widths == [20, 50, 500] and net.fan_in("fc1") == 800 and net.blocks["fc1"] == 16
    assert architecture(net.to_sequential()) == "20-50-800-500"
    assert count_weights(net) == 431080  # LeNet-5-Caffe's 431K parameters
    vgg = vgg16((3, 32, 32), 10)
    assert len([n for n in vgg.gated if n.startswith("conv")]) == 13 and vgg.fan_in("fc1") == 512
    assert len(vgg.norms) == 13
    assert vgg(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_network("vgg16", (3, 32, 32), 10, width_mult=0.25).widths[0] == 16
    assert architecture(build_network("mlp", (1, 28, 28), 10).to_sequential()) == "784-300-100"
    narrow = build_network("lenet5", (1, 28, 28), 10, (8, 30, 100))  # --widths conv1,conv2,fc1
    assert narrow.widths == [8, 30, 100] and narrow.fan_in("fc1") == 30 * 16
    assert architecture(narrow.to_sequential()) == "8-30-480-100"
    assert build_network("lenet5", (1, 28, 28), 10, (8, 30, 100), 0.5).widths == [4, 15, 50]


@pytest.mark.parametrize(
    "args",
    [
        (("lenet5", (4,), 3, None), "needs image inputs"),  # flat inputs
        (("lenet5", (1, 8, 8), 10, None), r"at least 16×16 pixels, got \(1, 8, 8\)"),  # digits
        (("lenet5", (1, 15, 30), 10, None), "at least 16×16 pixels"),
        # channels last, as numpy and TensorFlow keep images: was "needs 32×32, got (32, 32, 3)"
        (("vgg16", (32, 32, 3), 10, None), r"channels last, it seems; transpose them"),
        (("lenet5", (28, 28, 1), 10, None), r"these are \(28, 28, 1\): channels last"),
        (("vgg16", (3, 32, 32), 10, (10, 5)), "--widths applies"),  # for the MLP and LeNet-5
        (("lenet5", (1, 28, 28), 10, (20, 50)), "takes three widths"),  # conv1, conv2, fc1
        (("resnet", (3, 32, 32), 10, None), "unknown architecture"),
        # widths and factors that are not what they say: refused, not rounded or replaced
        (("mlp", (4,), 3, (10.5,)), "must be an integer, got 10.5"),
        (("mlp", (4,), 3, (10, 0)), "at least 1, got 0"),
        (("mlp", (4,), 3, ()), "widths is empty"),  # not the default 300-100
        (("mlp", (4,), 3, None, -2), "width_mult must be a positive number, got -2"),
        (("vgg16", (3, 32, 32), 10, None, float("nan")), "positive number, got nan"),
        (("lenet5", (1, 28, 28), 10, (3.7, 0, 7)), "must be an integer, got 3.7"),
        (("lenet5", (1, 28, 28), 10, (20, 50, 500), True), "positive number, got True"),
    ],
)
def test_build_network_rejects_mismatches(args):
    args, message = args
    with pytest.raises(ValueError, match=message):
        build_network(*args)


@pytest.mark.parametrize(
    "in_shape, plan, classes, message",
    [
        # a 2-d or 4-d input shape before an fc was a Linear over the last dimension
        ((28, 28), [("fc", 8)], 3, r"in_shape must be \(D,\) .* got \(28, 28\)"),
        ((1, 1, 28, 28), [("fc", 8)], 3, "a 4-d shape"),
        ((1, 12, 12), [("pool", 3), ("fc", 4)], 3, r"\('pool',\): 2×2 max-pooling, no arg"),
        ((64,), [("fc", 8), ("out", 3)], 3, "'out' is appended by GatedNet"),
        ((1, 28, 28), [("conv", 4, 3)], 3, r"plan step 0 \('conv', 4, 3\): expected"),
        ((1, 28, 28), [("conv", 4, 3, 0, 2)], 3, "expected .'conv', channels, kernel, padding"),
        ((784,), [("fc", 8), ("fc",)], 3, r"plan step 1 \('fc',\): expected \('fc', width\)"),
        ((784,), [()], 3, "first item names its kind"),
        ((784,), ["pool"], 3, "first item names its kind"),
        ((784,), [("fc", 8.0)], 3, "width must be an integer, got 8.0"),
        ((784,), [("fc", True)], 3, "width must be an integer, got True"),
        ((784,), [("fc", 8)], 10.0, "num_classes must be an integer"),
        ((1, 28, 28), [("conv", 4, 3, "same")], 3, "padding must be an integer, got 'same'"),
        ((1, 28, 28), [("conv", 4, (3, 5), 0)], 3, r"kernel must be an integer, got \(3, 5\)"),
        ((1, 8, 8), [("conv", 4, 0, 0)], 3, "kernel must be at least 1, got 0"),
        ((1, 8, 8), [("conv", 4, 3, -1)], 3, "padding must be at least 0, got -1"),
        ((1, 8, 8), [("conv", 0, 3, 0)], 3, "channels must be at least 1"),
        ((1, 8, 8), [("dense", 4)], 3, "unknown kind 'dense'"),
        ((64,), [], 3, "needs at least one hidden layer"),
        ((1, 28, 28), [("pool",)], 3, "needs at least one hidden layer"),
    ],
)
def test_a_plan_off_its_documented_form_is_refused_naming_the_step(
    in_shape, plan, classes, message
):
    """Before, several of these built a different network than asked (a Linear over an image's
    last dimension, a 2×2 pool for ('pool', 3), the last of two classifiers) or failed later
    deep in torch or the trainer."""
    with pytest.raises(ValueError, match=message):
        GatedNet(in_shape, plan, classes)


def test_batch_norm_on_a_plan_without_convolutions_is_refused():
    """BatchNorm goes after convolutions only; an MLP asked for it was built without a word
    and without any (net.norms empty while net.batch_norm was True)."""
    with pytest.raises(ValueError, match="this plan has none"):
        GatedNet((64,), [("fc", 32)], 10, batch_norm=True)
    assert len(GatedNet((1, 8, 8), [("conv", 4, 3, 1), ("fc", 5)], 3, batch_norm=True).norms) == 1
    # runs recorded before the refusal (config.json, checkpoints) are still read: such a
    # network had no BatchNorm, and that is what the record builds
    spec = {**GatedNet((64,), [("fc", 32)], 10).spec(), "batch_norm": True}
    assert len(GatedNet.from_spec(spec).norms) == 0


def test_a_plan_of_numpy_integers_and_lists_builds_as_one_of_ints():
    import json

    import numpy as np

    net = GatedNet([np.int64(1), 8, 8], [["conv", np.int32(3), 3, 1], ("fc", np.int64(5))], 4)
    assert net.spec()["plan"] == [["conv", 3, 3, 1], ["flatten"], ["fc", 5]]
    json.dumps(net.spec())  # plain ints: the spec goes into checkpoints and config.json
    assert net.map_sizes == {"conv1": (8, 8)}


def test_gates_broadcast_over_feature_maps():
    torch.manual_seed(1)
    net = lenet5((1, 28, 28), 10, width_mult=0.2)
    x = torch.randn(3, 1, 28, 28)
    per_example = {n: torch.ones(3, net.width(n)) for n in net.gated}
    per_example["conv2"][0] = 0.0  # example 0: every conv2 filter off
    out = net(x, gates=per_example)
    fc_only = net(x[:1], gates={"conv2": torch.zeros(net.width("conv2"))})
    assert torch.allclose(out[:1], fc_only, atol=1e-6)
    assert torch.allclose(out[1:], net(x[1:]), atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 4, 24, 24), (2, 5, 7, 9), (1, 2, 2, 2)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_max_pool_2x2_is_max_pool2d_in_values_and_gradients(shape, memory_format):
    """The fast 2×2 pooling gives F.max_pool2d's values and routes each window's gradient to
    the same element: the first maximum in scan order, ties included (ReLU zeros, off gates),
    for NCHW maps and channels-last ones alike (each against max_pool2d of an NCHW map)."""
    import torch.nn.functional as F

    from bayesprune.models.network import MaxPool2x2, max_pool_2x2

    torch.manual_seed(0)
    h = torch.randn(*shape).relu()  # a quarter of the windows have tied zeros
    h[0, 0] = 0.0  # an all-zero map: every window tied
    h[..., 0, 1] = h[..., 0, 0]  # tied positive maxima in the first windows
    grad = torch.randn(*F.max_pool2d(h, 2).shape)
    got_h = h.clone(memory_format=memory_format).requires_grad_()
    want_h = h.clone().requires_grad_()
    got, want = max_pool_2x2(got_h), F.max_pool2d(want_h, 2)
    assert torch.equal(got, want)
    got.backward(grad.clone(memory_format=memory_format))
    want.backward(grad)
    assert torch.equal(got_h.grad, want_h.grad)
    assert got_h.grad.is_contiguous(memory_format=memory_format)
    with torch.no_grad():
        assert torch.equal(max_pool_2x2(h), want)
        assert torch.equal(MaxPool2x2()(h), want)
        assert torch.equal(torch.jit.script(MaxPool2x2())(h), want)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_pooling_before_relu_and_gates_keeps_values_and_gradients(batch_norm):
    """A convolution followed by a pool runs BatchNorm → pool → ReLU → gate instead of
    BatchNorm → ReLU → gate → pool: the same values and weight gradients; the same gate gradient
    where a gate is on, and for a gate drawn 0 the derivative of the pooled output (the window
    maxima), not max_pool2d's tie-break among the zeros."""
    import torch.nn.functional as F

    from bayesprune.models.network import GatedNet

    torch.manual_seed(0)
    plan = [("conv", 6, 3, 1), ("pool",), ("conv", 5, 3, 0), ("pool",), ("fc", 7)]
    net = GatedNet((2, 10, 10), plan, 3, batch_norm=batch_norm).double().eval()
    with torch.no_grad():
        net.layers["out"].weight.normal_()  # a read-out that reads every unit
        for norm in net.norms.values():  # negative scales: BatchNorm must come before the pool
            norm.weight.normal_()
            norm.running_mean.normal_()
    x, y = torch.randn(8, 2, 10, 10, dtype=torch.double), torch.randint(0, 3, (8,))
    gates = {
        name: torch.bernoulli(torch.full((8, net.width(name)), 0.6, dtype=torch.double))
        for name in net.gated
    }
    gates["conv1"][:, 0] = 0.0  # a filter drawn off for every example

    def pool_last(h, gates):  # the order of Eq. (1) as written: gate, then pool
        for kind, name in net.ops:
            if kind == "pool":
                h = F.max_pool2d(h, 2)
            elif kind == "flatten":
                h = h.flatten(1)
            else:
                h = net.activate(name, net.map(name, h), gates)
        return h

    results = []
    for run in (lambda g: net(x, gates=g), lambda g: pool_last(x, g)):
        net.zero_grad()
        leaves = {n: g.clone().requires_grad_() for n, g in gates.items()}
        logits = run(leaves)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters()]
        results.append((logits.detach(), grads, {n: g.grad for n, g in leaves.items()}))
    (logits, grads, gate_grads), (want_logits, want_grads, want_gate_grads) = results
    want_loss = loss.detach()
    with torch.no_grad():  # a slice that ends between a convolution and its pool pools later
        for shared in (gates, {n: g[0] for n, g in gates.items()}):  # (B, S) and (S,) gates
            split = net.run_ops(net.run_ops(x, shared, stop=1), shared, start=1)
            assert torch.equal(split, net(x, gates=shared))
    assert torch.equal(logits, want_logits)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want)
    for name in net.gated:
        on = gates[name] > 0
        torch.testing.assert_close(gate_grads[name][on], want_gate_grads[name][on])
    # the off filter: the gradient is the derivative of the loss as the gate opens from 0
    # (a one-sided difference; the loss is smooth in ξ ≥ 0 near 0), which pooling last misses
    off = gate_grads["conv1"][:, 0].sum()
    eps = 1e-3
    with torch.no_grad():
        opened = {n: g.clone() for n, g in gates.items()}
        opened["conv1"][:, 0] = eps
        difference = (F.cross_entropy(net(x, gates=opened), y) - want_loss) / eps
    torch.testing.assert_close(off, difference, rtol=1e-2, atol=1e-5)
    assert not torch.allclose(off, want_gate_grads["conv1"][:, 0].sum(), rtol=1e-2, atol=1e-5)
