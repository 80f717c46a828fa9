"""Eq. (9h): the gates' evidence measured on held-out examples (``--evidence held-out``)."""

import pyro
import pytest
import torch

from bayesprune.config import TrainConfig
from bayesprune.data import DataError, make_teacher
from bayesprune.guides import GateGuide
from bayesprune.inference import GatedELBO
from bayesprune.inference.trainer import Trainer
from bayesprune.models import GatedMLP, GatedModel, GatedNet, HyperPrior
from tests.inference.test_estimators import _batch_norm_net, _scaled_setup


def _fitted(conv=False, steps=150):
    """A small network trained (weights only, θ = 1) on a learnable task, and that task."""
    torch.manual_seed(0)
    if conv:
        net = GatedNet((1, 6, 6), [("conv", 6, 3, 1), ("pool",), ("fc", 8)], 3)
        x = torch.randn(600, 1, 6, 6)
    else:
        net = GatedMLP(5, (12, 8), 3)
        x = torch.randn(600, 5)
    y = x.flatten(1)[:, :3].argmax(-1)  # a label the network can learn
    hyper = HyperPrior(temperature=1e-4)
    guide = GateGuide(net, hyper)
    model = GatedModel(net, hyper)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        i = torch.randint(0, 600, (64,))
        loss = torch.nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, guide, model, x, y


def _step(elbo, model, guide, x, y):
    pyro.set_rng_seed(7)
    guide.zero_grad(set_to_none=True)
    elbo.loss_and_grads_terms(model, guide, x, y, num_data=600)
    grads = {n: p.grad.clone() for n, p in guide.named_parameters() if p.grad is not None}
    guide.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_held_out_evidence_moves_only_theta_and_reads_the_held_out_labels(conv):
    net, guide, model, x, y = _fitted(conv)
    fit = slice(0, 100)
    # the held-out examples: the same inputs, once with their labels, once with labels the
    # network cannot predict (a permutation): useful units must lose their value on the latter
    inputs = x[300:400]
    honest, noise = y[300:400], y[300:400][torch.randperm(100)]
    results = {}
    for name, labels in (("train", None), ("honest", honest), ("noise", noise)):
        elbo = GatedELBO("secant", implementation="fast")
        if labels is not None:
            elbo.evidence_batch = lambda labels=labels: (inputs, labels)
        results[name] = _step(elbo, model, guide, x[fit], y[fit])
    thetas = [n for n in results["train"] if "theta" in n]
    weights = [n for n in results["train"] if "theta" not in n]
    assert thetas and weights
    for name in weights:  # nothing the held-out examples say reaches a weight
        assert torch.equal(results["honest"][name], results["train"][name]), name
        assert torch.equal(results["noise"][name], results["train"][name]), name
    # θ's gradient is N Δ + τ KL: units the network uses have Δ < 0 on honest labels; under
    # permuted labels what they carry is worth nothing or less, so the gradient rises
    honest_sum = sum(results["honest"][n].sum() for n in thetas)
    noise_sum = sum(results["noise"][n].sum() for n in thetas)
    assert honest_sum < 0
    assert noise_sum > honest_sum + 0.5 * abs(honest_sum)


def test_held_out_examples_never_train_and_are_recorded(tmp_path):
    data = make_teacher(num_train=2000, num_test=300)
    config = TrainConfig(epochs=2, batch_size=50, evidence="held-out", evidence_share=0.2)
    torch.manual_seed(0)
    trainer = Trainer(GatedMLP(data.in_features, (16, 8), data.num_classes), data, config)
    held_x, held_y = trainer.evidence_set
    assert len(held_x) == 400 and len(trainer.data.x_train) == 1600
    # disjoint from what the weights train on, and together the whole training set
    rows = {tuple(r.tolist()) for r in trainer.data.x_train}
    assert not any(tuple(r.tolist()) in rows for r in held_x)
    everything = torch.cat([trainer.data.x_train, held_x])
    assert torch.equal(everything.sort(0).values, data.x_train.sort(0).values)
    summary = trainer.fit(progress=False)
    assert summary["status"] == "finished"
    assert summary["evidence_examples"] == 400
    assert len(trainer.data.x_train) == 1600


def test_held_out_evidence_refuses_what_it_cannot_measure():
    data = make_teacher(num_train=200, num_test=50)
    net = GatedMLP(data.in_features, (8, 4), data.num_classes)
    with pytest.raises(ValueError, match="secant"):
        Trainer(net, data, TrainConfig(evidence="held-out", estimator="first-order"))
    with pytest.raises(DataError, match="both need at least one"):
        Trainer(net, data, TrainConfig(evidence="held-out", evidence_share=0.001))


def test_the_command_line_refuses_held_out_evidence_it_cannot_measure(tmp_path, capsys):
    from bayesprune.cli import main

    for extra in (["--estimator", "first-order"], ["--elbo", "traced"], ["--weights", "gaussian"],
                  ["--strategy", "ddp", "--devices", "2"]):  # fmt: skip
        out = tmp_path / extra[1]
        assert main(["train", "--evidence", "held-out", *extra, "--out", str(out)]) == 2
        assert not out.exists()
        err = capsys.readouterr().err
        assert "--evidence held-out" in err
        if extra[0] != "--strategy":  # the line names the setting it cannot measure with
            assert f"not with {extra[0]} {extra[1]}:" in err, err


def test_held_out_evidence_scales_with_num_data():
    """Eq. (9h): the held-out secant is scaled to the N training examples like the data term."""
    net, guide, model, x, y = _scaled_setup()
    xh, yh = torch.randn(8, 5), torch.randint(0, 3, (8,))
    elbo = GatedELBO("secant")
    elbo.evidence_batch = lambda: (xh, yh)
    with pyro.validation_enabled(False):
        terms = elbo._evaluate(model, guide, x, y, num_data=100)
    out = {}
    for num_data in (8, 80):
        pyro.set_rng_seed(4)
        out[num_data] = elbo.held_out_evidence(guide, terms, num_data)
    for name in net.gated:
        assert out[8][name].abs().max() > 1e-3
        torch.testing.assert_close(out[80][name], 10 * out[8][name], rtol=1e-4, atol=1e-6)


def test_held_out_evidence_leaves_batchnorm_running_statistics_alone():
    net, guide, model, x, y = _scaled_setup(_batch_norm_net, (1, 6, 6))
    net.train()
    xh, yh = torch.randn(8, 1, 6, 6) + 3.0, torch.randint(0, 3, (8,))
    elbo = GatedELBO("secant")
    elbo.evidence_batch = lambda: (xh, yh)
    with pyro.validation_enabled(False):
        terms = elbo._evaluate(model, guide, x, y, num_data=100)
    norm = net.norms["conv1"]
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    elbo.held_out_evidence(guide, terms, 100)
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
