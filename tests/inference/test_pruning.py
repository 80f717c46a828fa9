"""Pruning handler and physical removal: outputs unchanged, shapes and counts shrink."""

import copy
from contextlib import nullcontext

import pyro
import pytest
import torch
from pyro import poutine

from bayesprune.config import TrainConfig
from bayesprune.data import make_teacher
from bayesprune.export import count_weights
from bayesprune.guides import GateGuide
from bayesprune.inference import (
    GatedELBO,
    PruneMessenger,
    PruningCondition,
    remove_units,
    update_slab_variances,
)
from bayesprune.inference.trainer import Trainer
from bayesprune.models import GatedMLP, GatedModel, GatedNet, HyperPrior


def _set_theta(guide, layer, index, value):
    theta = guide.gate_probs(layer).detach().clone()
    theta[index] = value
    guide.set_gate_probs(layer, theta)


def _guide(weights="point"):
    torch.manual_seed(0)
    net = GatedMLP(6, (5, 4), 3)
    torch.nn.init.normal_(net.layers["out"].weight)  # a trained-looking read-out, not zeros
    return net, GateGuide(net, HyperPrior(), weights=weights)


def _gated_output(net, guide, x):
    gates = {n: guide.gate_probs(n).detach() for n in net.gated}  # θ ∈ {0, 1}: deterministic
    return net(x, gates=gates)


@pytest.mark.parametrize("layer", ["fc1", "fc2"])
@pytest.mark.parametrize("weights", ["point", "gaussian"])
def test_removing_a_zero_gate_unit_keeps_outputs_and_shrinks_everything(layer, weights):
    net, guide = _guide(weights)
    x = torch.randn(10, 6)
    with torch.no_grad():
        _set_theta(guide, layer, 2, 0.0)
    opt = torch.optim.Adam(guide.parameters(), lr=1e-2)
    guide.net.augmented(layer).sum().backward()  # give the optimiser some state
    opt.step()
    with torch.no_grad():
        _set_theta(guide, layer, 2, 0.0)
    before = _gated_output(net, guide, x)
    count = count_weights(net)
    fan_out = net.layers[net.next_layer(layer)].out_features
    remove_units(
        guide, layer, torch.tensor([0, 1, 3, 4][: net.layers[layer].out_features - 1]), [opt]
    )
    after = _gated_output(net, guide, x)
    assert torch.allclose(before, after, atol=1e-6)
    width = net.layers[layer].out_features
    fan_in = net.layers[layer].in_features
    assert count_weights(net) == count - (fan_in + 1) - fan_out
    assert net.layers[net.next_layer(layer)].weight.shape == (fan_out, width)
    assert guide.gate_probs(layer).shape == (width,)
    for p in guide.parameters():  # optimiser moments follow their parameters
        for v in opt.state[p].values():
            if v.dim():
                assert v.shape == p.shape
    opt.step()  # and the optimiser still works
    if weights == "gaussian":
        assert guide.weight_posterior(layer).base_dist.scale.shape == (width, fan_in + 1)


def test_unit_ids_follow_their_units_through_removals():
    net, guide = _guide()
    remove_units(guide, "fc1", torch.tensor([0, 2, 4]))
    remove_units(guide, "fc1", torch.tensor([1, 2]))
    assert guide.unit_ids("fc1").tolist() == [2, 4]
    assert guide.unit_ids("fc2").tolist() == [0, 1, 2, 3]
    assert guide.state_dict()["unit_ids_fc1"].tolist() == [2, 4]  # saved with checkpoints


def test_never_removes_the_last_unit():
    net, guide = _guide()
    with torch.no_grad():
        guide.set_gate_probs("fc2", torch.zeros(net.width("fc2")))
        _set_theta(guide, "fc2", 1, 1e-9)
    condition = PruningCondition(patience=2)
    assert condition(guide) == {}
    collapsed = condition(guide)
    assert list(collapsed) == ["fc2"] and collapsed["fc2"].tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="refusing to remove the last unit"):
        remove_units(guide, "fc2", torch.tensor([], dtype=torch.long))


def test_patience_counts_consecutive_checks_at_zero():
    # Eq. (12): a unit collapses after `patience` checks in a row at θ = 0; one that leaves 0
    # in between starts counting again (it is outside the absorbing set), the others go on
    net, guide = _guide()
    condition = PruningCondition(patience=3)
    fc1 = lambda *values: guide.set_gate_probs("fc1", torch.tensor(values))  # noqa: E731
    guide.set_gate_probs("fc2", torch.ones(net.width("fc2")))
    for _ in range(2):
        fc1(0.0, 0.0, 1.0, 1.0, 1.0)
        assert condition(guide) == {}
    fc1(0.5, 0.0, 1.0, 1.0, 1.0)  # unit 0 back above 0 at the third check
    assert condition(guide)["fc1"].tolist() == [False, True, False, False, False]
    assert condition.counts["fc1"].tolist() == [0, 3, 0, 0, 0]
    fc1(0.0, 0.0, 1.0, 1.0, 1.0)
    for _ in range(2):
        assert condition(guide)["fc1"].tolist() == [False, True, False, False, False]
    assert condition(guide)["fc1"].tolist() == [True, True, False, False, False]


def test_removing_units_keeps_the_others_counts():
    # the counters follow the units that remain (a merge move or a collapse removed others):
    # two units at 0 for two checks collapse at the third, whatever was removed between
    net, guide = _guide()
    condition = PruningCondition(patience=3)
    guide.set_gate_probs("fc2", torch.ones(net.width("fc2")))
    guide.set_gate_probs("fc1", torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]))
    condition(guide)
    condition(guide)
    keep = torch.tensor([1, 2, 3])
    remove_units(guide, "fc1", keep)
    condition.removed("fc1", keep)
    assert condition.counts["fc1"].tolist() == [2, 0, 2]
    assert condition(guide)["fc1"].tolist() == [True, False, True]


def test_prune_messenger_removes_the_units_sites():
    net, guide = _guide()
    model = GatedModel(net, HyperPrior())
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    pruned = {"fc1": torch.tensor([False, True, False, False, True])}
    with pyro.validation_enabled(False):
        with PruneMessenger(net, pruned):
            guide_tr = poutine.trace(guide).get_trace(x, y)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
    gates = guide_tr.nodes["fc1.gate"]["value"]
    assert torch.all(gates[:, 1] == 0) and torch.all(gates[:, 4] == 0)
    assert torch.all(gates[:, [0, 2, 3]] == 1)
    site = model_tr.nodes["fc1.weight"]
    keep = ~pruned["fc1"]
    reduced = site["fn"].log_prob(site["value"])
    full = model_tr.nodes["fc1.weight"]["fn"].mask_rows(torch.ones(5, dtype=torch.bool))
    expected = full.log_prob(site["value"]) - (full.mask_rows(~keep).log_prob(site["value"]))
    assert torch.allclose(reduced, expected, atol=1e-4)

    # the pruned units no longer affect the output: perturb their weights and compare
    def run(handler):
        with pyro.validation_enabled(False), handler, torch.no_grad():
            tr = poutine.trace(guide).get_trace(x, y)
            return poutine.replay(model, trace=tr)(x, y)

    before, before_plain = run(PruneMessenger(net, pruned)), run(poutine.block())
    with torch.no_grad():
        net.layers["fc1"].weight[[1, 4]] += 5.0
    assert torch.allclose(run(PruneMessenger(net, pruned)), before)
    assert not torch.allclose(run(poutine.block()), before_plain)


def test_rejects_bad_masks():
    net, _ = _guide()
    with pytest.raises(ValueError, match="boolean"):
        PruneMessenger(net, {"fc1": torch.tensor([1, 0, 0, 0, 0])})
    with pytest.raises(ValueError, match="entries"):
        PruneMessenger(net, {"fc1": torch.tensor([True, False])})
    with pytest.raises(ValueError, match="gated"):
        PruneMessenger(net, {"out": torch.tensor([True, False, False])})


NETWORKS = {
    "mlp": (lambda: GatedMLP(6, (5, 4), 3), (6,), {"fc1": [1, 3], "fc2": [2]}),
    "conv": (
        lambda: GatedNet((2, 6, 6), [("conv", 5, 3, 1), ("pool",), ("fc", 4)], 3),
        (2, 6, 6),
        {"conv1": [0, 3], "fc1": [1]},
    ),
}


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("posterior", ["coupled", "structured", "mean-field"])
@pytest.mark.parametrize("estimator", ["secant", "first-order"])
@pytest.mark.parametrize("implementation", ["fast", "traced"])
def test_objective_under_the_handler_is_the_physically_pruned_networks(
    network, posterior, estimator, implementation
):
    """Value and gradients of every kept parameter, and the slab-variance update, equal the
    physically pruned network's (θ ∈ {0, 1}: the gate draws use no random numbers). The fast
    evaluation has no mean-field prior under the handler: it refuses, in one line."""
    make, in_shape, prune_ids = NETWORKS[network]
    torch.manual_seed(2)
    net = make()
    torch.nn.init.normal_(net.layers["out"].weight)
    hyper = HyperPrior(temperature=0.3)
    guide = GateGuide(net, hyper, posterior=posterior)
    for name in net.gated:  # a few kept units off as well: θ = 0 is not what prunes them
        guide.set_gate_probs(name, (torch.arange(net.width(name)) % 3 != 2).float())
    pruned = {
        n: torch.isin(torch.arange(net.width(n)), torch.tensor(i)) for n, i in prune_ids.items()
    }
    small_guide = copy.deepcopy(guide)
    for name, mask in pruned.items():
        small_guide.remove_units(name, torch.nonzero(~mask).flatten())
    x, y = torch.randn(9, *in_shape), torch.randint(0, 3, (9,))
    elbo = GatedELBO(estimator, implementation=implementation)
    if implementation == "fast" and posterior == "mean-field":
        with pytest.raises(ValueError, match="does not apply"), PruneMessenger(net, pruned):
            elbo.loss_and_grads_terms(GatedModel(net, hyper), guide, x, y, num_data=90)
        return
    results = []
    for g, handler in ((guide, PruneMessenger(net, pruned)), (small_guide, nullcontext())):
        pyro.set_rng_seed(7)
        with pyro.validation_enabled(False), handler:
            terms = elbo.loss_and_grads_terms(GatedModel(g.net, hyper), g, x, y, num_data=90)
            update_slab_variances(g, hyper, pruning=handler if g is guide else None)
        results.append(terms)
    for key in ("loss", "data", "prior"):
        assert float(results[0][key]) == pytest.approx(float(results[1][key]), rel=1e-5), key
    # the full guide's gradients, sliced as the units are removed, are the small guide's
    sliced = copy.deepcopy(guide)
    with torch.no_grad():
        for p, q in zip(sliced.parameters(), guide.parameters(), strict=True):
            p.copy_(q.grad if q.grad is not None else torch.zeros_like(q))
    for name, mask in pruned.items():
        sliced.remove_units(name, torch.nonzero(~mask).flatten())
    small = dict(small_guide.named_parameters())
    for name, expected in sliced.named_parameters():
        assert torch.allclose(small[name].grad, expected, rtol=1e-4, atol=1e-6), name
    for name in net.layers:
        assert torch.allclose(guide.slab_var(name), small_guide.slab_var(name), rtol=1e-5), name
    for name, mask in pruned.items():  # a pruned unit's θ is not in the pruned objective
        grad = guide.theta_parameters([name])[0].grad
        assert grad is None or not grad[mask].any(), (name, grad)


def test_training_removes_units_physically():
    data = make_teacher(num_train=2000, num_test=500)
    torch.manual_seed(0)
    net = GatedMLP(data.in_features, (40, 20), data.num_classes)
    cfg = TrainConfig(epochs=8, lr=1e-2, temperature=0.3, check_every=20, patience=2)
    trainer = Trainer(net, data, cfg)
    summary = trainer.fit(progress=False)
    assert sum(net.widths) < 60 and summary["status"] == "finished"
    assert trainer.prune_events
    assert net.layers["fc2"].in_features == net.layers["fc1"].out_features
    # the gated network left after training is the deployable one: nothing left to drop
    assert summary["weights_kept"] == count_weights(net)
    assert all(bool((trainer.guide.gate_probs(n) > 0.5).all()) for n in net.gated)


@pytest.mark.parametrize("implementation", ["fast", "traced"])
def test_nested_handlers_on_one_layer_are_their_union(implementation):
    """Two handlers pruning different units of the same layer give the objective of the
    network without either's units, in both evaluations: the hyper-prior takes the layer's
    pruned shape once (each handler rescaling the full shape by its own share multiplied the
    shares in the traced evaluation: 15/20 · 15/20 instead of 10/20)."""
    torch.manual_seed(0)
    net = GatedMLP(4, (20, 10), 3)
    torch.nn.init.normal_(net.layers["out"].weight)
    hyper = HyperPrior()
    guide = GateGuide(net, hyper)  # θ = 1: no random numbers in the gates
    small = copy.deepcopy(guide)
    small.remove_units("fc1", torch.arange(5, 15))
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    elbo = GatedELBO(implementation=implementation)
    first, second = torch.arange(20) < 5, torch.arange(20) >= 15
    with PruneMessenger(net, {"fc1": first}), PruneMessenger(net, {"fc1": second}):
        nested = elbo.loss(GatedModel(net, hyper), guide, x, y, num_data=500)
    physical = elbo.loss(GatedModel(small.net, hyper), small, x, y, num_data=500)
    assert nested == pytest.approx(physical, rel=1e-6)


@pytest.mark.parametrize(
    "order", ["handler outside", "inside, condition in", "inside, condition out"]
)
def test_a_trace_records_the_pruned_gates_at_zero_wherever_the_handler_sits(order):
    """Conditioned (or replayed) gates of pruned units are 0 in the trace as in the network,
    with the handler outside the trace or inside it (the functional ``prune``): an enclosing
    trace records a site before an inner handler's ``_postprocess_message`` runs."""
    from bayesprune.inference import prune

    net, _ = _guide()
    model = GatedModel(net, HyperPrior())
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    pruned = {"fc1": torch.tensor([False, True, False, False, True])}
    ones = {"fc1.gate": torch.ones(8, 5)}
    traces = {
        "handler outside": lambda: poutine.trace(poutine.condition(model, data=ones)),
        "inside, condition in": lambda: poutine.trace(
            prune(poutine.condition(model, data=ones), net=net, pruned=pruned)
        ),
        "inside, condition out": lambda: poutine.trace(
            poutine.condition(prune(model, net=net, pruned=pruned), data=ones)
        ),
    }
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        with PruneMessenger(net, pruned):
            reference = traces["handler outside"]().get_trace(x, y)
        pyro.set_rng_seed(1)
        handler = PruneMessenger(net, pruned) if order == "handler outside" else nullcontext()
        with handler:
            trace = traces[order]().get_trace(x, y)
    gate = trace.nodes["fc1.gate"]
    assert torch.all(gate["value"][:, [1, 4]] == 0) and torch.all(gate["value"][:, [0, 2, 3]] == 1)
    assert float(trace.log_prob_sum()) == pytest.approx(float(reference.log_prob_sum()))
    assert torch.all(ones["fc1.gate"] == 1)  # the user's tensor is not changed in place


def test_a_trace_replayed_twice_under_the_handler_keeps_the_pruned_hyper_prior():
    """The mark that the hyper-prior has its pruned shape is on the new distribution: in the
    replayed node's ``infer`` (shared with the replayed trace) it made a second replay keep the
    full layer's α (50 instead of 37.5 for 15 of 20 units)."""
    torch.manual_seed(0)
    net = GatedMLP(4, (20, 10), 3)
    model, guide = GatedModel(net, HyperPrior()), GateGuide(net, HyperPrior())
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    with pyro.validation_enabled(False), PruneMessenger(net, {"fc1": torch.arange(20) < 5}):
        recorded = poutine.trace(guide).get_trace(x, y, num_data=200)
        alphas = [
            float(poutine.trace(poutine.replay(model, trace=recorded)).get_trace(x, y, 200)
                  .nodes["fc1.slab_var"]["fn"].concentration)
            for _ in range(2)
        ]  # fmt: skip
    full = HyperPrior().concentration(net.fan_in("fc1"), 20)
    assert alphas[0] == alphas[1] == pytest.approx(full * 15 / 20)


def test_an_outer_trace_keeps_the_sites_an_inner_blocked_handler_never_showed_it():
    """A handler patches the values an enclosing trace recorded of *its* message only: a
    blocked, pruned model run after the guide replaced the guide's recorded gates (and their
    straight-through graph) in the outer trace."""
    from bayesprune.inference import prune

    torch.manual_seed(0)
    net = GatedMLP(4, (6, 4), 3)
    model, guide = GatedModel(net, HyperPrior()), GateGuide(net, HyperPrior(), init_theta=0.5)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))

    def both():
        guide(x, y, num_data=200)
        with poutine.block():
            prune(model, net=net, pruned={"fc1": torch.arange(6) < 2})(x, y, num_data=200)

    with pyro.validation_enabled(False):
        pyro.set_rng_seed(0)
        outer = poutine.trace(both).get_trace().nodes["fc1.gate"]["value"]
        pyro.set_rng_seed(0)
        alone = poutine.trace(guide).get_trace(x, y, num_data=200).nodes["fc1.gate"]["value"]
    assert torch.equal(outer, alone) and outer.grad_fn is not None
