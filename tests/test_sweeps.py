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
    config = TrainConfig(epochs=3, batch_size=50)  # an epoch after the resume draws its order
    reference = _trainer(config)
    reference.fit(progress=False)

    out = tmp_path / "run"
    trainer = _trainer(config, out=out)
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
    # (it said "status 'finished'", the health check's, of an interrupted run)
    with pytest.raises(RuntimeError, match=r"stopped at step 26, before it ended .*"
                       r"Trainer\.resume\(out, data\)") as refused:  # fmt: skip
        trainer.fit(progress=False)
    assert "finished" not in str(refused.value)

    with pytest.raises(RunError, match="did not train on these data: train_examples 999"):
        Trainer.resume(out, make_teacher(num_train=999, num_test=200))
    other = make_teacher(num_train=1000, num_test=200, seed=99)  # the same sizes, other tensors
    with pytest.raises(RunError, match="the tensors are not those the run trained on"):
        Trainer.resume(out, other)
    with pytest.raises(RunError, match=r"its own settings; these differ: lr 0\.003 \(the run's"):
        Trainer.resume(out, DATA, config=TrainConfig(epochs=3, batch_size=50, lr=3e-3))
    with pytest.raises(RunError, match=r"these differ: τ 0\.0077"):  # twice the price
        Trainer.resume(out, DATA, config=TrainConfig(epochs=3, batch_size=50, price_scale=2.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(UserWarning, match=f"started with {threads}: products"):
            # the config the run was started with (config.json holds it resolved: τ(N), the
            # check interval): taken; dropped, the trainer's hold on the directory goes with it
            Trainer.resume(out, DATA, config=config)
    finally:
        torch.set_num_threads(threads)
    resumed = Trainer.resume(out, DATA)
    resumed.echo = False
    assert resumed.step == 26 and resumed.resumed_from.name == "last.pt"
    # the caller's streams are the caller's until fit, and again after it: a draw in between
    # changes neither the run nor what the caller draws next
    np.random.seed(123), random.seed(5), torch.manual_seed(7)
    torch.rand(3)
    expected = _draws()
    np.random.seed(123), random.seed(5), torch.manual_seed(7)
    torch.rand(3)
    assert resumed.fit(progress=False)["status"] == "finished"
    assert _draws() == expected
    for key, value in _weights(reference).items():
        assert torch.equal(_weights(resumed)[key], value), key
    with pytest.raises(RunError, match="already ended \\(finished\\)"):
        Trainer.resume(out, DATA)


class _Signalled(BaseException):  # as the command line's stop after the last step
    signum = signal.SIGTERM


@pytest.mark.parametrize(
    "stop, reason", [(KeyboardInterrupt, "KeyboardInterrupt"), (_Signalled, "SIGTERM")]
)
def test_a_keyboard_interrupt_from_inside_the_run_leaves_it_resumable_not_running(
    tmp_path, monkeypatch, stop, reason
):
    """A KeyboardInterrupt raised by the user's own code inside fit (not the signal fit
    handles) left summary.json at "running"; it is "interrupted", and names what stopped it (an
    exception is "error"); either way --resume continues from the last checkpoint."""
    out = tmp_path / "run"
    trainer = _trainer(out=out)
    step = Trainer.train_step

    def interrupted(self, *args, **kwargs):
        if self.step == 25:
            raise stop
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(stop):
        trainer.fit(progress=False)
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "interrupted"  # (an Exception would be "error")
    assert record["status_reason"] == f"{reason} at step 25"


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
    held_out = _trainer(TrainConfig(epochs=1, batch_size=50, evidence="held-out"))
    held_out.fit(progress=False)
    move = held_out.weak_movable
    ref = weakref.ref(held_out)
    gc.disable()
    try:
        del held_out
        assert ref() is None  # its held-out evidence callback is weak too
        assert move(50) is False  # an optimiser kept without its trainer moves no θ
    finally:
        if enabled:
            gc.enable()


def test_a_refused_start_is_not_a_start_and_a_dropped_resume_lets_the_directory_go(
    tmp_path,
):
    """fit() refused for a directory in use marked the Trainer stopped and its network
    trained; a trainer from Trainer.resume that was never fitted held the run directory until
    the process ended."""
    from bayesprune.runs import _HELD

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    trainer = _trainer(out=busy)
    with pytest.raises(RunError, match="not an empty directory"):
        trainer.fit(progress=False)
    (busy / "notes.txt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the network was not trained: no reuse warning
        assert trainer.fit(progress=False)["status"] == "finished"

    out = tmp_path / "run"
    stopped = _trainer(out=out)
    step = stopped.train_step

    def broken(*args, **kwargs):  # an error in the second epoch: resumable from the first's
        if stopped.step == 25:
            raise ValueError("a bug")
        return step(*args, **kwargs)

    stopped.train_step = broken
    with pytest.raises(ValueError):
        stopped.fit(progress=False)
    resumed = Trainer.resume(out, DATA)
    assert str(out.resolve()) in _HELD
    del resumed
    gc.collect()
    assert str(out.resolve()) not in _HELD
    # a trainer whose fit let go of the directory never frees a later trainer's hold
    first = Trainer.resume(out, DATA)
    first.train_step = None  # fails at its first step: fit lets go of the directory
    with pytest.raises(TypeError):
        first.fit(progress=False)
    second = Trainer.resume(out, DATA)
    del first
    gc.collect()
    assert str(out.resolve()) in _HELD and second.held_here


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
