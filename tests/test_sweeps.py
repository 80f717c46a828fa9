"""Many runs from Python in one process (a sweep, a notebook): each run leaves the caller's
state alone and says what happened to it. Found by a helper playing a user who sweeps."""

import gc
import json
import os
import random
import signal
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest
import torch

from bayesprune.config import TrainConfig
from bayesprune.data import make_teacher
from bayesprune.inference.trainer import Trainer, TrainingInterrupted
from bayesprune.models import GatedMLP
from bayesprune.runs import RunError

DATA = make_teacher(num_train=1000, num_test=200)


def _trainer(config=None, out=None, data=DATA, seed=0):
    torch.manual_seed(seed)
    config = config or TrainConfig(epochs=2, batch_size=50, seed=seed)
    trainer = Trainer(GatedMLP(4, (12, 6), 3), data, config, out=out)
    trainer.echo = False
    return trainer


def _draws():
    return np.random.rand(), random.random(), float(torch.rand(1))


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.guide.state_dict().items()}


def test_fit_and_inspect_give_the_callers_random_streams_back(tmp_path):
    """fit() seeds its run (pyro.set_rng_seed); it used to leave numpy's, Python's and torch's
    global streams at that seed, so a random search drew the same settings after every run."""
    from bayesprune.report import inspect_run

    trainer = _trainer(out=tmp_path / "run")  # (building a network draws from torch's stream)
    np.random.seed(123), random.seed(5), torch.manual_seed(7)
    expected = _draws()
    np.random.seed(123), random.seed(5), torch.manual_seed(7)
    trainer.fit(progress=False)
    assert _draws() == expected
    np.random.seed(123), random.seed(5), torch.manual_seed(7)
    inspect_run(tmp_path / "run", draws=5, show_summary=False)
    assert _draws() == expected


def test_numpy_numbers_in_a_config_are_plain_numbers_in_the_run(tmp_path):
    """`for seed in np.arange(5)`: numpy's numbers passed TrainConfig's checks, then random.seed
    and json refused them inside the run (which left its directory unusable)."""
    config = TrainConfig(epochs=np.int64(1), batch_size=np.int64(50), seed=np.int64(3),
                         lr=np.float32(1e-3), price_scale=np.float32(1.5))  # fmt: skip
    assert (type(config.seed), type(config.batch_size), type(config.lr)) == (int, int, float)
    assert config.lr == 1e-3 and config.price_scale == 1.5
    summary = _trainer(config, out=tmp_path / "run").fit(progress=False)
    assert summary["status"] == "finished"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 3
    with pytest.raises(ValueError, match="out is empty"):  # not the current directory
        _trainer(config, out="")


def test_a_stopped_run_is_not_refitted_but_resumed_from_python(tmp_path, monkeypatch):
    """Ctrl-C inside fit is a BaseException, as KeyboardInterrupt is: a sweep's `except
    Exception` no longer swallows it and goes on. A second fit() of the stopped Trainer went on
    silently from its cut state (with its random streams re-seeded); it is refused, and
    Trainer.resume continues the run to the uninterrupted run's network, to the bit."""
    reference = _trainer()
    reference.fit(progress=False)

    out = tmp_path / "run"
    trainer = _trainer(out=out)
    step = Trainer.train_step

    def signalled(self, *args, **kwargs):
        if self.step == 25:  # as a Ctrl-C mid-epoch would: the step ends, then the run stops
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", signalled)
    swallowed = False
    with pytest.raises(TrainingInterrupted):
        try:
            trainer.fit(progress=False)
        except Exception:
            swallowed = True
    assert not swallowed
    monkeypatch.undo()
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    with pytest.raises(RuntimeError, match=r"stopped at step 26 .*Trainer\.resume\(out, data\)"):
        trainer.fit(progress=False)

    with pytest.raises(RunError, match="did not train on these data: train_examples 999"):
        Trainer.resume(out, make_teacher(num_train=999, num_test=200))
    resumed = Trainer.resume(out, DATA)
    resumed.echo = False
    assert resumed.step == 26 and resumed.resumed_from.name == "last.pt"
    assert resumed.fit(progress=False)["status"] == "finished"
    for key, value in _weights(reference).items():
        assert torch.equal(_weights(resumed)[key], value), key
    with pytest.raises(RunError, match="already ended \\(finished\\)"):
        Trainer.resume(out, DATA)


def test_a_keyboard_interrupt_from_inside_the_run_leaves_it_resumable_not_running(
    tmp_path, monkeypatch
):
    """A KeyboardInterrupt raised by the user's own code inside fit (not the signal fit
    handles) left summary.json at "running"; it is "error", with the exception, as others."""
    out = tmp_path / "run"
    trainer = _trainer(out=out)
    step = Trainer.train_step

    def interrupted(self, *args, **kwargs):
        if self.step == 25:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(progress=False)
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "error" and record["status_reason"].startswith("KeyboardInterrupt")


def test_a_finished_trainer_is_freed_when_dropped_and_its_network_is_not_reused_silently():
    """The trainer's own parts held it in reference cycles (its pricing callbacks, the θ
    optimiser's release closure), so a sweep's finished trainers, with their data and
    optimiser state, stayed in memory until a cycle collection; and a network object passed to
    a second Trainer went on from the first run's trained, pruned weights without a word."""
    _trainer().fit(progress=False)  # (the first trainer of a process may be kept by torch)
    trainer = _trainer()
    trainer.fit(progress=False)
    net = trainer.net
    ref = weakref.ref(trainer)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del trainer
        assert ref() is None
    finally:
        if enabled:
            gc.enable()
    with pytest.warns(UserWarning, match=r"trained by another Trainer \(starting widths"):
        Trainer(net, DATA, TrainConfig(epochs=1))


def test_every_run_of_a_sweep_that_collapses_warns():
    """Python shows a warning once per message and line: the second of two collapsed runs with
    the same reason was silent. The message names the run's seed (and directory)."""
    config = dict(epochs=2, warmup_tolerance=None, theta_transit=1, temperature=30.0)
    data = make_teacher(num_train=2000, num_test=500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter
        for seed in (0, 1):
            summary = _trainer(TrainConfig(**config, seed=seed), data=data, seed=seed).fit(
                progress=False
            )
            assert summary["status"] == "collapsed"
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 2 and "seed 0)" in said[0] and "seed 1)" in said[1], said


def test_importing_the_report_leaves_the_matplotlib_backend_alone():
    """bayesprune.report switched the process to Agg when imported, which broke a notebook's
    inline figures."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import bayesprune.report; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
