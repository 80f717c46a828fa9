"""A short end-to-end run on the embedded teacher data."""

import pytest
import torch

from bayesprune.config import TrainConfig
from bayesprune.data import make_teacher
from bayesprune.export import count_weights, load_model
from bayesprune.inference.trainer import Trainer
from bayesprune.loop import evaluate
from bayesprune.models import GatedMLP


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    data = make_teacher()
    torch.manual_seed(0)
    net = GatedMLP(data.in_features, (300, 100), data.num_classes)
    trainer = Trainer(net, data, TrainConfig(epochs=8), out=tmp_path_factory.mktemp("run"))
    initial_slab = {n: float(trainer.guide.slab_var(n)) for n in net.layers}
    summary = trainer.fit(progress=False)
    return data, trainer, summary, initial_slab


def test_learns_the_teacher_and_prunes(run):
    data, trainer, summary, _ = run
    assert summary["status"] == "finished"
    assert summary["test_error"] <= 0.05  # measured 0.036 after 8 epochs (0.033 with group moves
    # off; dense 300-100: 0.039)
    # pruned (300-100 -> 144-57: group moves, Eq. (14j), take the 4-input first layer's jointly
    # redundant units), but no layer below half the teacher's width. Issue 9's "within 2x of
    # the teacher" is not met: the units left are each worth more than their price
    # (docs/method.md §6zzb).
    assert sum(summary["widths"]) < sum(summary["initial_widths"]) - 4
    for width, true in zip(summary["widths"], summary["teacher_widths"], strict=True):
        assert width >= true / 2, (summary["widths"], summary["teacher_widths"])
    assert summary["gates_binary_fraction"] >= 0.99
    # Eq. (10w): θ waited for the data term to stop falling (20,000 examples: a block is 10,000)
    assert summary["warmup_step"] >= 2 * 10_000 // 100


def test_slab_scale_stays_bounded(run):
    # Evidence 1: empirical Bayes with point masses collapsed σ₁ by orders of magnitude. The
    # scale is the layer's as it is: σ₁² starts at 1/fan-in, and a consumer of pruned units
    # reads fewer inputs with larger weights (group moves re-wire several units' outputs into
    # the kept ones' weights: fc2 at 2.2 times 1/√fan-in, 3.2 times its starting 1/√300)
    _, trainer, _, initial = run
    for name, v0 in initial.items():
        ratio = (float(trainer.guide.slab_var(name)) * trainer.net.fan_in(name)) ** 0.5
        assert 1 / 3 <= ratio <= 3, (name, ratio)
        assert float(trainer.guide.slab_var(name)) != v0, name  # the updates ran (not frozen)


def test_summary_is_consistent_with_the_exported_network(run):
    data, trainer, summary, _ = run
    det = load_model(trainer.out / "model.pt")
    assert count_weights(det) == summary["weights_kept"]
    assert evaluate(det, data.x_test, data.y_test) == summary["test_error"]
    removed = sum(e["removed"] for e in summary["prune_events"])
    assert removed == sum(summary["initial_widths"]) - sum(trainer.net.widths)
    thetas = torch.cat([trainer.guide.gate_probs(n).detach() for n in trainer.net.gated])
    binary = ((thetas <= 1e-3) | (thetas >= 1 - 1e-3)).float().mean()
    assert summary["gates_binary_fraction"] == pytest.approx(float(binary))
    early = sum(
        e["removed"] for e in summary["prune_events"] if e["step"] <= summary["total_steps"] / 4
    )
    assert summary["pruned_early_fraction"] == early / removed
