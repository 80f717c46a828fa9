"""Channels-last training (``TrainConfig.memory_format``): the same arithmetic as contiguous
storage, through physical removals, with the layout kept by the weights and their state."""

import pytest
import torch

from bayesprune.baseline import train_dense
from bayesprune.config import TrainConfig
from bayesprune.data import Dataset
from bayesprune.export import load_model_record, model_record
from bayesprune.inference.trainer import Trainer
from bayesprune.models import GatedNet
from bayesprune.models.network import channels_last_applies, layout

PLAN = [("conv", 6, 3, 1), ("pool",), ("conv", 8, 3, 1), ("pool",), ("fc", 12)]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + (x[:, 1, 4:].mean((1, 2)) > 0).long()
    return Dataset("tiny", x[:160], y[:160], x[160:], y[160:], 3)


def _trainer(memory_format: str) -> Trainer:
    torch.manual_seed(0)
    net = GatedNet((2, 8, 8), PLAN, 3)
    return Trainer(net, _data(), TrainConfig(batch_size=40, memory_format=memory_format))


def _steps(trainer: Trainer, count: int) -> None:
    data = trainer.data
    for step in range(count):
        index = torch.arange(40) + 40 * (step % 4)
        trainer.train_step(data.x_train[index], data.y_train[index], index)


def _assert_same(a: Trainer, b: Trainer) -> None:
    for (name, p), q in zip(a.guide.named_parameters(), b.guide.parameters(), strict=True):
        assert p.shape == q.shape, name
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_steps_as_contiguous_storage_through_a_physical_removal():
    plain, last = _trainer("contiguous"), _trainer("channels-last")
    assert last.channels_last and not plain.channels_last
    conv = last.net.layers["conv2"].weight
    assert layout(conv) == torch.channels_last  # the layout the option asks for
    _steps(plain, 6)
    _steps(last, 6)
    _assert_same(plain, last)
    for trainer in (plain, last):  # the same units out of both convolutions
        for name in ("conv1", "conv2"):
            gone = torch.zeros(trainer.net.width(name), dtype=torch.bool)
            gone[[1, 3]] = True
            trainer.remove(name, gone, collapsed_step=trainer.step)
    # after the slicing the weights and Adam's moments are still channels-last; the moments
    # in another layout than their weight would be paired with the wrong entries
    for name in ("conv1", "conv2"):
        weight = last.net.layers[name].weight
        assert layout(weight) == torch.channels_last, name
        for opt in last.optim.torch_optimizers():
            for value in opt.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    assert value.stride() == weight.stride(), name
    _steps(plain, 6)
    _steps(last, 6)
    _assert_same(plain, last)


def test_the_summary_records_the_layout_auto_chose():
    mlp = Trainer(GatedNet((2, 8, 8), [("fc", 6)], 3), _data(), TrainConfig(epochs=1))
    assert mlp.fit(progress=False)["memory_format_used"] == "contiguous"  # no convolution
    conv = Trainer(GatedNet((2, 8, 8), PLAN, 3), _data(), TrainConfig(epochs=1, batch_size=40))
    assert conv.fit(progress=False)["memory_format_used"] == "channels-last"  # auto, the CPU


def test_auto_is_channels_last_for_convolutions_on_the_cpu_only():
    conv = GatedNet((2, 8, 8), PLAN, 3)
    mlp = GatedNet((2, 8, 8), [("fc", 12)], 3)
    assert channels_last_applies(conv, "auto", "cpu")
    assert not channels_last_applies(conv, "auto", "cuda")
    assert not channels_last_applies(mlp, "auto", "cpu")  # no convolution: nothing to store so
    assert not channels_last_applies(mlp, "channels-last", "cpu")
    assert not channels_last_applies(conv, "contiguous", "cpu")
    with pytest.raises(ValueError, match="memory_format"):
        channels_last_applies(conv, "nhwc", "cpu")


def test_the_dense_twin_trains_in_the_runs_layout():
    seen = []

    def monitor(step, net):
        if step == 1:
            seen.append(layout(net.layers["conv1"].weight))

    for memory_format in ("channels-last", "contiguous"):
        torch.manual_seed(0)
        net = GatedNet((2, 8, 8), PLAN, 3)
        train_dense(net, _data(), 1, 40, monitor=monitor, memory_format=memory_format)
    assert seen == [torch.channels_last, torch.contiguous_format]


def test_the_deployable_record_of_a_channels_last_network_is_contiguous(tmp_path):
    trainer = _trainer("channels-last")
    _steps(trainer, 2)
    module = trainer.net.to_sequential()
    assert layout(module[0].weight) == torch.channels_last  # a copy of the training layer
    record = model_record(module, trainer.net.in_shape)
    assert all(t.is_contiguous() for t in record["state_dict"].values())
    torch.save(record, tmp_path / "model.pt")
    loaded, _ = load_model_record(tmp_path / "model.pt")
    x = trainer.data.x_test
    torch.testing.assert_close(loaded(x), module.eval()(x), rtol=1e-5, atol=1e-6)


def test_bench_times_both_networks_channels_last_only_when_asked(tmp_path, monkeypatch):
    """`bayesprune bench --memory-format channels-last` times the pruned and the dense network
    with NHWC convolutions and inputs; by default both as model.pt loads them, contiguous."""
    import bayesprune.bench as bench

    config = TrainConfig(batch_size=40, epochs=1, memory_format="channels-last")
    run = tmp_path / "run"
    torch.manual_seed(0)
    summary = Trainer(GatedNet((2, 8, 8), PLAN, 3), _data(), config, out=run).fit(progress=False)
    assert summary["memory_format_used"] == "channels-last"  # what config.json's choice became
    seen = []

    def timer(module, x, device, repeats):
        conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append((layout(conv.weight), layout(x)))
        return 1.0

    monkeypatch.setattr(bench, "_latency_ms", timer)
    result = bench.bench_run(run, batches=(4,), blocks=1, write=False,
                             memory_format="channels-last")  # fmt: skip
    assert result["memory_format"] == "channels-last"
    assert len(seen) == 6 and set(seen) == {(torch.channels_last, torch.channels_last)}
    seen.clear()
    assert bench.bench_run(run, batches=(4,), blocks=1, write=False)["memory_format"] == (
        "contiguous"
    )
    assert len(seen) == 6 and set(seen) == {(torch.contiguous_format, torch.contiguous_format)}


def test_moments_restored_in_another_layout_are_laid_out_as_their_weights():
    """A checkpoint keeps its tensors' strides: a run that trained contiguous (on a GPU, where
    "auto" is contiguous) and resumes channels-last (on the CPU) loaded contiguous moments
    beside channels-last weights, which fused Adam paired with the wrong entries (a helper's
    review). Restoring re-lays them; the next steps are those of the uninterrupted layout."""
    import copy

    plain, last = _trainer("contiguous"), _trainer("channels-last")
    _steps(plain, 4)
    _steps(last, 4)
    saved = copy.deepcopy(plain.optim.get_state())  # contiguous moments, as on the GPU
    last.optim.set_state(saved)
    with torch.no_grad():  # the weights as the checkpoint holds them, in last's layout
        for p, q in zip(plain.guide.parameters(), last.guide.parameters(), strict=True):
            q.copy_(p)
    for opt in last.optim.torch_optimizers():
        for p, state in opt.state.items():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    assert value.stride() == p.stride()
    _steps(plain, 3)
    _steps(last, 3)
    _assert_same(plain, last)


def test_a_prior_gradient_made_from_nothing_takes_its_weights_layout():
    """add_prior_weight_grads on a channels-last weight: an empty gradient is made in the
    weight's layout (fused Adam pairs them by memory), an existing one summed in place."""
    from bayesprune.inference.elbo_fast import add_prior_weight_grads

    w = torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    base, coef = w.detach().reshape(4, -1).clone(), torch.rand(4, 1)
    add_prior_weight_grads([(w, base, coef)])
    assert layout(w.grad) == torch.channels_last
    torch.testing.assert_close(w.grad, (base * coef).reshape(4, 3, 2, 2))
    add_prior_weight_grads([(w, base, coef)])
    assert layout(w.grad) == torch.channels_last
    torch.testing.assert_close(w.grad, 2 * (base * coef).reshape(4, 3, 2, 2))
