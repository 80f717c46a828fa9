"""The evidence rule of issue 9: θ waits for the data term, τ follows N, collapses are reported."""

import json
import warnings
from dataclasses import replace

import pytest
import torch

from bayesprune.cli import EXIT_FAILED_RUN, main
from bayesprune.config import (
    WINDOW_MIN_STEPS,
    TrainConfig,
    check_interval,
    checks_per_window,
    evidence_window,
    pruning_patience,
    temperature_for,
)
from bayesprune.data import DataError, make_teacher
from bayesprune.inference.trainer import Trainer
from bayesprune.models import GatedMLP


def _trainer(config: TrainConfig, widths=(16, 8), num_train=4000, out=None) -> Trainer:
    data = make_teacher(num_train=num_train, num_test=500)
    torch.manual_seed(config.seed)
    return Trainer(GatedMLP(data.in_features, widths, data.num_classes), data, config, out=out)


def _thetas(trainer: Trainer) -> torch.Tensor:
    return torch.cat([trainer.guide.gate_probs(n).detach() for n in trainer.net.gated])


def test_theta_does_not_move_before_the_data_term_has_settled():
    # 4,000 examples: blocks of 4,000; the first comparison is after the second block (epoch 2)
    trainer = _trainer(TrainConfig(epochs=1, batch_size=50, temperature=3.0))
    trainer.fit(progress=False)
    assert trainer.warm_step is None
    assert torch.all(_thetas(trainer) == 1.0)  # evidence accumulated, θ untouched
    evidence = [trainer.optim.gates.state[p]["evidence"] for p in trainer.guide.theta_parameters()]
    assert any(e.abs().sum() > 0 for e in evidence)
    # the same run without the rule moves θ in the first epoch (the race of issue 9)
    eager = _trainer(TrainConfig(epochs=1, batch_size=50, temperature=3.0, warmup_tolerance=None))
    eager.fit(progress=False)
    assert torch.any(_thetas(eager) < 1.0) or eager.prune_events


def test_warm_up_blocks_count_examples_not_steps():
    # the clock of Eq. (10w) is examples seen: with batches of 50 or of 200 the warm-up ends
    # at a boundary of 4,000-example blocks, never before the second one. (Where it ends
    # depends on how fast the weights learn per example, which the batch size does change:
    # measured 12,000 examples at batch 50 and 20,000 at batch 200 here; at lr 1e-3 and batch
    # 200 this network still improves by 20% of what it has learnt per block after 8 epochs,
    # and the rule keeps waiting.)
    for batch in (50, 200):
        trainer = _trainer(TrainConfig(epochs=8, batch_size=batch, lr=1e-2))
        trainer.fit(progress=False)
        assert trainer.warm_step is not None
        examples = trainer.warm_step * batch  # examples seen when θ started to move
        assert examples % 4000 == 0 and examples >= 8000, (batch, examples)


def test_warmup_epoch_waits_until_every_example_has_been_trained_on():
    """``warmup_epoch="on"`` (docs §6zzi): θ's evidence of a step is taken on its batch before
    the step trains on it, so in the first epoch it is held-out evidence; the warm-up then
    lasts until the steps have taken every training example once. Here (4,000 examples, blocks
    of 700, so the epoch ends inside a block) the data term settles within the first epoch;
    with "on" θ first moves at the step that completes the epoch, not at the next block's end,
    and the layers are released from there, one window apart."""
    steps = {}
    for switch in ("off", "on"):
        config = TrainConfig(epochs=2, batch_size=10, lr=1e-2, theta_window=700,
                             warmup_epoch=switch)  # fmt: skip
        trainer = _trainer(config)
        trainer.fit(progress=False)
        steps[switch] = (trainer.warm_step, trainer.release_steps)
    (off, _), (on, released) = steps["off"], steps["on"]
    assert off is not None and off * 10 < 4000  # settled within the first epoch
    assert on == 4000 // 10 and released == {"fc2": on, "fc1": on + 700 // 10 - 1}
    with pytest.raises(ValueError, match="--warmup-epoch on lengthens the warm-up"):
        TrainConfig(warmup_epoch="on", warmup_tolerance=None)


def test_a_network_stalled_at_chance_never_ends_its_warm_up():
    """A rate that stalls the network at the constant predictor's loss (LeNet-5 under SGD at
    0.1, docs §6zq) leaves blocks whose means drift by noise around it: "improved by less than
    10% of what was learnt" then holds by chance (learnt < 0) and every unit would be priced
    against evidence of zero. The warm-up ends only once the network has learnt a tenth of the
    constant predictor's loss, and then at the first block that settles."""
    trainer = _trainer(TrainConfig(epochs=1))
    block = min(len(trainer.data.x_train), trainer.config.theta_window)
    c = trainer.constant_nll

    def feed(mean: float) -> bool:
        return trainer.warmed_up(torch.tensor(mean * block), block)

    for drift in (0.01, 0.02, 0.015, 0.03, 0.03):  # at chance, rising and falling by noise
        assert not feed(c + drift)
    assert not feed(0.92 * c)
    # settled (improved by 0.005 c, less than 10% of the 0.085 c learnt) but 8.5% of the
    # constant's loss learnt: the floor alone holds it (a floor at learnt > 0 would end it here)
    assert not feed(0.915 * c)
    assert not feed(0.5 * c)  # learning fast: improved by 83% of what it has learnt
    assert feed(0.47 * c) and trainer.warm_step == trainer.step + 1  # settled: θ may move
    fresh = _trainer(TrainConfig(epochs=1))  # the same two blocks with 11.5% learnt: it ends
    assert not fresh.warmed_up(torch.tensor(0.89 * c * block), block)
    assert fresh.warmed_up(torch.tensor(0.885 * c * block), block)


def test_a_run_left_undecided_says_whether_it_learnt_too_little_or_was_still_learning():
    trainer = _trainer(TrainConfig(epochs=1))
    block = min(len(trainer.data.x_train), trainer.config.theta_window)
    c = trainer.constant_nll
    for mean in (0.97 * c, 0.965 * c):  # settled, with 3.5% of the constant loss learnt
        trainer.warmed_up(torch.tensor(mean * block), block)
    layers, note = trainer.undecided()
    assert layers == trainer.net.gated and trainer.warm_step is None
    assert "stopped falling with the network having learnt less than 10%" in note, note
    assert "more epochs prune them only if the network learns more" in note, note
    for mean in (0.6 * c, 0.3 * c):  # learning fast at the end of the run
        trainer.warmed_up(torch.tensor(mean * block), block)
    assert "still falling" in trainer.undecided()[1]


def test_temperature_follows_the_square_root_of_the_data_size(tmp_path):
    assert temperature_for(60_000) == pytest.approx(0.03)
    assert temperature_for(15_000) == pytest.approx(0.015)
    trainer = _trainer(TrainConfig(epochs=1), num_train=2_400, out=tmp_path / "run")
    assert trainer.hyper.temperature == pytest.approx(0.03 * (2_400 / 60_000) ** 0.5)
    trainer.fit(progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["temperature"] == pytest.approx(trainer.hyper.temperature)  # τ as used
    explicit = _trainer(TrainConfig(epochs=1, temperature=0.5))
    assert explicit.hyper.temperature == 0.5


def test_price_scale_multiplies_the_default_temperature_and_survives_the_record(tmp_path):
    """--price-scale s: τ = s·τ(N) at every N; the run's config.json records the τ it used, and
    the config read back from it (resume, inspect) gives that same τ."""
    trainer = _trainer(TrainConfig(epochs=1, price_scale=4.0), num_train=2_400, out=tmp_path / "r")
    assert trainer.hyper.temperature == pytest.approx(4 * temperature_for(2_400))
    trainer.fit(progress=False)
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["price_scale"] == 4.0
    assert TrainConfig.from_record(record).hyper(2_400).temperature == pytest.approx(
        trainer.hyper.temperature
    )
    with pytest.raises(ValueError, match="price_scale"):  # when made, as the command line does
        TrainConfig(temperature=0.5, price_scale=2.0)


def test_train_subset_is_fixed_by_the_seed():
    data = make_teacher(num_train=1000, num_test=10)
    a, b, c = data.subset(300, seed=1), data.subset(300, seed=1), data.subset(300, seed=2)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.meta["train_subset"] == 300 and len(a.y_train) == 300
    assert torch.equal(a.x_test, data.x_test)
    rows = {tuple(r) for r in data.x_train.tolist()}
    assert all(tuple(r) in rows for r in a.x_train.tolist())
    with pytest.raises(DataError, match="between 1 and 1000"):
        data.subset(1001)
    trainer = _trainer(TrainConfig(epochs=1, train_subset=500))
    assert len(trainer.data.x_train) == 500


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    return err[-1]


def test_a_forced_collapse_is_reported_and_exits_non_zero(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--widths", "16,8", "--train-subset", "2000", "--epochs", "2",
            "--warmup-tolerance", "none", "--theta-transit", "1", "--temperature", "30",
            "--out", str(out), "--no-progress", "--no-report"]  # fmt: skip (all protection off)
    assert main(args) == EXIT_FAILED_RUN
    line = _one_line(capsys)
    assert line.startswith("bayesprune: run collapsed:") and "constant predictor" in line
    assert "never learnt" not in line  # cut at step 30, before any epoch could show learning
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "collapsed" and 1 in summary["widths"]
    assert (out / "model.pt").exists()  # what was written stays


def test_a_forced_collapse_in_python_warns_and_the_command_line_says_it_once(tmp_path, capsys):
    """From Python, fit() returned a collapsed run's summary as it returns a good one; only
    summary["status"] said otherwise. Now a RuntimeWarning says why (the command line keeps
    its one line and exit 3, without the warning)."""
    config = TrainConfig(epochs=2, train_subset=2000, warmup_tolerance=None, theta_transit=1,
                         temperature=30.0)  # fmt: skip (all protection off, as above)
    with pytest.warns(RuntimeWarning, match="the run collapsed: "):
        summary = _trainer(config).fit(progress=False)
    assert summary["status"] == "collapsed"
    with warnings.catch_warnings(record=True) as caught:  # a finished run: no such warning
        warnings.simplefilter("always")
        assert _trainer(TrainConfig(epochs=1), num_train=500).fit()["status"] == "finished"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    args = ["train", "--widths", "16,8", "--train-subset", "2000", "--epochs", "2",
            "--warmup-tolerance", "none", "--theta-transit", "1", "--temperature", "30",
            "--out", str(tmp_path / "run"), "--no-progress", "--no-report"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == EXIT_FAILED_RUN
    assert "RuntimeWarning" not in capsys.readouterr().err


def test_a_layer_cut_to_one_unit_after_epochs_at_chance_says_the_run_never_learnt(
    tmp_path, capsys
):
    """README's example: the teacher from 2-2 (seed 0) is at chance in every epoch, as its
    dense network is. The warm-up waits for something learnt (Eq. (10w)), so nothing is cut and
    the run ends at full width, never having learnt; with θ moving from the first step, a layer
    is cut to its last unit after epochs at chance, and the line must not blame the pruning (the
    last-unit check fired first and its line did)."""
    args = ["train", "--widths", "2,2", "--no-progress", "--no-report", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "run")]) == EXIT_FAILED_RUN
    line = _one_line(capsys)
    assert "widths [2, 2]" in line and "was cut to its last unit" not in line, line
    assert line.endswith("no epoch was clearly better: the run never learnt (does the network "
                         f"learn without gates? bayesprune baseline {tmp_path / 'run'} trains its "
                         "dense twin)"), line  # fmt: skip
    eager = [*args, "--warmup-tolerance", "none", "--out", str(tmp_path / "eager")]
    assert main(eager) == EXIT_FAILED_RUN
    line = _one_line(capsys)
    assert "was cut to its last unit" in line, line
    assert line.endswith("no epoch was clearly better: the run never learnt (does the network "
                         f"learn without gates? bayesprune baseline {tmp_path / 'eager'} trains "
                         "its dense twin)"), line  # fmt: skip


def test_a_run_that_never_learnt_says_so_and_a_late_collapse_does_not():
    trainer = _trainer(TrainConfig(epochs=3))
    chance = trainer.chance_error
    at_chance = {"train_error": chance, "data_term": 1.0, "prior_term": 0.0, "widths": [1, 1]}
    learnt = {**at_chance, "epoch": 1, "train_error": chance / 2, "widths": [16, 8]}
    trainer.check_health(learnt)
    trainer.check_health({**at_chance, "epoch": 2})  # it had learnt: a collapse at epoch 2
    assert trainer.status == "collapsed" and "never learnt" not in trainer.status_reason
    trainer = _trainer(TrainConfig(epochs=3))
    for epoch in (1, 2, 3):  # at chance in every epoch: reported at the last, as never learnt
        trainer.check_health({**at_chance, "epoch": epoch})
        assert trainer.status == ("collapsed" if epoch == 3 else "finished")
    assert trainer.status_reason.endswith("no epoch was clearly better: the run never learnt")


def test_a_healthy_run_is_finished(tmp_path):
    trainer = _trainer(TrainConfig(epochs=2), out=tmp_path / "run")
    summary = trainer.fit(progress=False)
    assert summary["status"] == "finished" and summary["status_reason"] is None


def test_train_subset_mistakes_are_one_line_errors(capsys, tmp_path):
    assert main(["train", "--train-subset", "0"]) == 2
    assert "train-subset" in _one_line(capsys)
    assert main(["train", "--train-subset", "999999", "--out", str(tmp_path / "r")]) == 2
    assert "train subset must be between 1 and 20000" in _one_line(capsys)
    assert main(["train", "--warmup-tolerance", "2"]) == 2
    assert "warmup-tolerance" in _one_line(capsys)


def test_layers_are_released_from_the_output_back_one_window_apart():
    config = TrainConfig(epochs=6, batch_size=50, lr=1e-2, theta_window=2000)
    trainer = _trainer(config)
    summary = trainer.fit(progress=False)
    steps = summary["release_steps"]
    assert steps["fc2"] == trainer.warm_step  # the last hidden layer first, at the warm-up's end
    # one evidence window later, counted from the warm-up step's own batch: W_N − B examples
    # after the consumer's first step (docs/method.md (10o))
    assert (steps["fc1"] - steps["fc2"]) * 50 == 2000 - 50
    together = _trainer(replace(config, release="together"))
    steps = together.fit(progress=False)["release_steps"]
    assert steps["fc1"] == steps["fc2"] == together.warm_step


def test_a_pass_shorter_than_adams_memory_is_stretched_to_ten_steps():
    # Eq. (10n): a window of fewer than 1/(1 − β₁) = 10 steps (iris: 120 examples at batch 100;
    # W = 10,000 examples at batch 8,192) becomes 10 steps; one of 10 steps or more is left alone
    default = TrainConfig()
    assert WINDOW_MIN_STEPS == 10
    assert evidence_window(default, 120) == 1_000 and evidence_window(default, 500) == 1_000
    assert evidence_window(default, 1_000) == 1_000 and evidence_window(default, 1_500) == 1_500
    assert evidence_window(replace(default, batch_size=16), 500) == 500  # 31 steps
    # a large batch shortens the window as a small N does: 10 steps beyond W too (§6l)
    assert evidence_window(replace(default, batch_size=4_096), 60_000) == 40_960
    assert evidence_window(replace(default, batch_size=8_192), 20_000) == 81_920
    assert evidence_window(replace(default, batch_size=1_000), 60_000) == 10_000  # 10 steps
    assert check_interval(replace(default, batch_size=8_192), 20_000) == 5
    # a batch above N is one step of N examples: 10 steps are 10 N (digits at batch 2,048)
    assert evidence_window(replace(default, batch_size=2_048), 1_438) == 14_380
    # the floor is not a cap: without the cap at N the window is W, and still 10 steps
    assert evidence_window(replace(default, window_cap="none", batch_size=8_192), 20_000) == 81_920
    assert evidence_window(replace(default, window_cap="none"), 120) == 10_000
    assert evidence_window(replace(default, batch_size=50), 120) == 500
    # the clocks that follow the window: the check interval is half of it, the patience spans it
    assert check_interval(default, 120) == 5 and pruning_patience(default, 120) == 3
    trainer = _trainer(default, num_train=120)
    assert trainer.optim.gates.param_groups[0]["window"] == 1_000


def test_a_resumed_run_keeps_the_evidence_window_it_started_with():
    # a run saved by a version whose W_N differed (here: before the 10-step floor, one pass of
    # 1,500 examples at batch 500, 3 steps) resumes with that window on every clock, not with
    # today's θ average on the saved window and releases, checks and merges on the new one
    config = TrainConfig(epochs=2, batch_size=500, lr=1e-2, warmup_tolerance=None)
    trainer = _trainer(config, num_train=1_500)
    assert trainer.window == 5_000 and trainer.check_every == 5  # 10 steps today
    for step in range(3):
        index = torch.arange(step * 500, (step + 1) * 500)
        trainer.train_step(trainer.data.x_train[index], trainer.data.y_train[index], index)
    state = trainer.checkpoint_state()
    state["optim"]["gates"]["param_groups"][0]["window"] = 1_500.0  # the old rule's W_N
    resumed = _trainer(config, num_train=1_500)
    resumed.restore(state)
    assert resumed.optim.gates.param_groups[0]["window"] == 1_500
    assert resumed.window == 1_500
    assert resumed.check_every == 2 and resumed.condition.patience == 3  # ⌈1,500 / 1,000⌉
    # a checkpoint of today's rule resumes unchanged
    again = _trainer(config, num_train=1_500)
    again.restore(trainer.checkpoint_state())
    assert again.window == 5_000 and again.check_every == 5 and again.condition.patience == 3


def test_every_clock_spans_one_pass_over_a_training_set_smaller_than_the_window():
    # Eq. (10n): W_N = min(N, W); the check interval is half of it in examples, so the dwell of
    # Eq. (12) spans W_N at every batch size
    default = TrainConfig()
    assert evidence_window(default, 60_000) == 10_000 and evidence_window(default, 3_000) == 3_000
    assert evidence_window(replace(default, window_cap="none"), 3_000) == 10_000
    for batch, interval in ((32, 157), (100, 50), (256, 20)):
        config = replace(default, batch_size=batch)
        assert check_interval(config, 60_000) == interval
        assert pruning_patience(config, 60_000) == 3
    assert check_interval(default, 1_000) == 5 and pruning_patience(default, 1_000) == 3
    assert check_interval(replace(default, check_every=7), 1_000) == 7  # a set value is kept
    # a batch above N is a step of N examples on these clocks too, as on the window's floor:
    # the dwell spans the window and the merge rounds come once per window (they counted
    # the nominal batch: 2 steps of a 10-step window at N = 120, batch 1,000)
    for n, batch in ((120, 1_000), (120, 5_000), (1_000, 8_192), (1_438, 2_048)):
        config = replace(default, batch_size=batch)
        window, step = evidence_window(config, n), min(batch, n)
        interval, patience = check_interval(config, n), pruning_patience(config, n)
        assert (patience - 1) * interval * step >= window, (n, batch)
        assert checks_per_window(config, n) * interval * step == window, (n, batch)
    # a run recorded before the cap resumes with the rule it trained with
    assert TrainConfig.from_record({"check_every": 50}).window_cap == "none"
    # on 1,500 examples the evidence averages one pass and the layers are released one pass
    # apart; without the cap, W = 10,000 examples (6.7 passes) apart
    config = TrainConfig(epochs=12, batch_size=50, lr=1e-2)
    for cap, window in (("data", 1_500), ("none", 10_000)):
        trainer = _trainer(replace(config, window_cap=cap), num_train=1_500)
        assert trainer.optim.gates.param_groups[0]["window"] == window
        steps = trainer.fit(progress=False)["release_steps"]
        assert abs((steps["fc1"] - steps["fc2"]) * 50 - window) <= 50, (cap, steps)


def test_a_collapsed_unit_keeps_theta_at_zero_until_it_is_removed():
    # Eq. (12): a unit found collapsed is decided; until the next check removes it, the steps
    # run the network without it, its evidence fades towards 0 and d = m − z·se turns
    # negative, which would lift θ off 0 (the next check would then find it alive)
    trainer = _trainer(TrainConfig(epochs=1, batch_size=50, check_every=10**6))
    trainer.warm_step = 0  # released: the θ step runs on every layer
    trainer.examples_released = 10**9
    theta = trainer.guide.theta_parameters(["fc1"])[0]
    x, y = trainer.data.x_train[:50], trainer.data.y_train[:50]
    for _ in range(30):  # on: its standard error measured
        trainer.train_step(x, y, torch.arange(50))
        with torch.no_grad():
            theta.fill_(1.0)
    state = trainer.optim.gates.state[theta]
    assert float(state["evidence_se"][0]) > 0
    with torch.no_grad():
        theta[0] = 0.0
    collapsed = torch.zeros_like(theta, dtype=torch.bool)
    collapsed[0] = True
    trainer.collapsed = {"fc1": collapsed}
    for _ in range(200):
        trainer.train_step(x, y, torch.arange(50))
    assert float(state["decision"][0]) < 0  # the step pulls it up...
    assert float(theta[0]) == 0.0  # ...and it stays at 0 until its removal
