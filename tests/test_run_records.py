"""What a run records besides its network: its status at a non-finite step, the per-epoch
objective, its timing fields, and the state a checkpoint carries into a resumed run (the collapse
rule's memory, the wall clock). Each test was written against a mutant of trainer.py or
baseline.py that the rest of the suite let through."""

import json
import math
import time

import pytest
import torch

from bayesprune.baseline import train_dense
from bayesprune.config import TrainConfig
from bayesprune.data import make_teacher
from bayesprune.inference.trainer import Trainer
from bayesprune.models import GatedMLP

PAUSE = 1.0  # seconds of bookkeeping added per epoch: far above a tiny run's training time


def _trainer(config, out=None, widths=(8, 4)):
    data = make_teacher(num_train=400, num_test=100)
    torch.manual_seed(config.seed)
    return Trainer(GatedMLP(data.in_features, widths, data.num_classes), data, config, out=out)


def test_an_infinite_objective_stops_the_run_at_its_step_as_failed(tmp_path):
    """+inf is as non-finite as NaN (README: the run stops at that step, names it, keeps its
    last good checkpoint and writes no model.pt). Reading only NaN let an infinite step through
    to the epoch's end, which wrote model.pt and an epoch checkpoint of that state."""
    trainer = _trainer(TrainConfig(epochs=2, batch_size=50), out=tmp_path / "run")
    real = trainer.svi.step

    def step(*args, **kwargs):
        loss = real(*args, **kwargs)
        return math.inf if trainer.step == 2 else loss  # the third step's objective: +inf

    trainer.svi.step = step
    with pytest.warns(RuntimeWarning, match="the run failed"):
        summary = trainer.fit(progress=False)
    assert summary["status"] == "failed", summary["status_reason"]
    assert "not finite at step 3" in summary["status_reason"]
    assert trainer.step == 2  # stopped at the step, not at the epoch's end
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not list((tmp_path / "run" / "checkpoints").glob("epoch_*.pt"))  # no epoch ended


def test_an_epochs_record_averages_the_objective_over_that_epochs_steps():
    """metrics.jsonl's data_term and prior_term are F's two terms per example averaged over the
    epoch's steps (README): the second epoch's are its own steps' mean, not its sum divided by
    every step of the run so far."""
    trainer = _trainer(TrainConfig(epochs=2, batch_size=100))
    n = len(trainer.data.x_train)
    seen = {1: [], 2: []}
    count = trainer.count_step

    def counting(terms):
        seen[trainer.epoch + 1].append({k: float(terms[k]) / n for k in ("data", "prior")})
        count(terms)

    trainer.count_step = counting
    trainer.fit(progress=False)
    for record in trainer.history:
        steps = seen[record["epoch"]]
        assert len(steps) == 4
        for key in ("data", "prior"):
            mean = sum(s[key] for s in steps) / len(steps)
            assert record[f"{key}_term"] == pytest.approx(mean, rel=1e-4, abs=1e-7), key


def test_the_wall_time_leaves_out_the_per_epoch_bookkeeping_and_the_epochs_times_are_seconds(
    tmp_path,
):
    """train_wall_seconds counts training only (README), bookkeeping_seconds the per-epoch
    evaluation, logs and checkpoints, and epoch_train_seconds each epoch's steps."""
    trainer = _trainer(TrainConfig(epochs=2, batch_size=100), out=tmp_path / "run")
    record = trainer.epoch_record

    def slow_record(*args, **kwargs):  # the epoch's evaluation, made slow
        time.sleep(PAUSE)
        return record(*args, **kwargs)

    trainer.epoch_record = slow_record
    summary = trainer.fit(progress=False)
    assert summary["bookkeeping_seconds"] >= 2 * PAUSE
    assert 0 < summary["train_wall_seconds"] < PAUSE, summary["train_wall_seconds"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert summary["epoch_train_seconds"] == [json.loads(x)["train_seconds"] for x in lines]
    assert sum(summary["epoch_train_seconds"]) <= summary["train_wall_seconds"]


def test_the_dense_twins_wall_time_leaves_out_its_per_epoch_evaluation():
    """train_dense's epoch_end counts in neither its wall nor its step time, so that
    baseline.json's wall_ratio compares training with training, as the run's fields do."""
    data = make_teacher(num_train=400, num_test=100)
    torch.manual_seed(0)
    net = GatedMLP(data.in_features, (8, 4), data.num_classes)
    dense = train_dense(net, data, epochs=2, epoch_end=lambda epoch, net: time.sleep(PAUSE))
    assert 0 < dense["train_wall_seconds"] < PAUSE, dense["train_wall_seconds"]
    assert len(dense["epoch_train_seconds"]) == 2 and max(dense["epoch_train_seconds"]) < PAUSE


def test_a_resumed_run_remembers_it_had_learnt_and_reads_a_later_chance_epoch_as_a_collapse():
    """Collapsed: at chance at the last epoch, or at an earlier one after it had been clearly
    better (README). The best training error so far is that rule's state: a run that learnt in
    epoch 1, was stopped and resumed, and fell to chance in epoch 2 of 3 collapsed, as the same
    run uninterrupted would have said."""
    config = TrainConfig(epochs=3, batch_size=50)
    first = _trainer(config)
    chance = first.chance_error
    record = {"data_term": 1.0, "prior_term": 0.0, "widths": [8, 4]}
    first.check_health({**record, "epoch": 1, "train_error": chance / 2})  # clearly learnt
    assert first.status == "finished"
    state = first.checkpoint_state()

    resumed = _trainer(config)
    resumed.restore(state)
    resumed.check_health({**record, "epoch": 2, "train_error": chance})  # at chance, not last
    assert resumed.status == "collapsed", resumed.status_reason
    assert "epoch 2" in resumed.status_reason and "never learnt" not in resumed.status_reason


def test_a_resumed_runs_wall_time_counts_the_training_before_the_stop():
    """A resumed run's train_wall_seconds adds its own training to what the checkpoint recorded,
    not only the time since the resume."""
    config = TrainConfig(epochs=1, batch_size=50)
    state = _trainer(config).checkpoint_state()
    state["trainer"]["wall"] = 1000.0  # as if the run had trained for 1,000 s before its stop
    resumed = _trainer(config)
    resumed.restore(state)
    summary = resumed.fit(progress=False)
    assert summary["status"] == "finished"
    assert 1000.0 < summary["train_wall_seconds"] < 1000.0 + 600
