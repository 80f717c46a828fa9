"""Data-parallel training's parts, without a whole run: each process's share of an epoch
(StepBatches), the lock-step comparison of the processes, and their gate streams (BatchNorm's
running statistics after a step: tests/test_distributed.py). Each test was written against a
mutant of distributed.py that the whole-run tests let through (a 2-process run lands within a
seed's spread of a 1-process one even when half of each batch is never trained on)."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from tests.test_distributed import _free_port

pytest.importorskip("lightning", reason="the distributed extra (lightning) is not installed")


def _batches_trainer(num_train=203, batch_size=50, seed=0):
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.set_num_threads(1)
    data = make_teacher(num_train=num_train, num_test=20)
    return Trainer(GatedMLP(4, (6,), 3), data, TrainConfig(batch_size=batch_size, seed=seed))


@pytest.mark.parametrize("world", [2, 3])
def test_the_shares_partition_every_global_batch(world):
    """Every example of each global batch is taken by exactly one process, and each process is
    told the global batch's size (its gradient's weight is local / global)."""
    from bayesprune.distributed import StepBatches

    trainer = _batches_trainer()  # 203 = 4 × 50 + 3: the last batch splits 2 + 1 or 1 + 1 + 1
    shares = [StepBatches(trainer, r, world) for r in range(world)]
    assert {len(s) for s in shares} == {5}
    perm = shares[0].perm
    for step in range(5):
        items = [s[step] for s in shares]
        idx = torch.cat([index for _, _, index, _ in items])
        assert torch.equal(idx, perm[step * 50 : (step + 1) * 50])  # all of it, once, in order
        for x, y, index, total in items:
            assert total == min(50, 203 - step * 50)
            assert torch.equal(x, trainer.data.x_train[index])
            assert torch.equal(y, trainer.data.y_train[index])


def test_a_last_batch_as_large_as_the_processes_is_kept():
    from bayesprune.distributed import StepBatches

    trainer = _batches_trainer(num_train=102)  # a last batch of 2 on 2 processes: one example each
    assert len(StepBatches(trainer, 0, 2)) == 3
    assert len(StepBatches(trainer, 0, 3)) == 2  # 2 < 3 processes: dropped


def test_the_order_of_examples_changes_with_the_epoch_and_is_kept_by_a_resumed_epoch():
    from bayesprune.distributed import StepBatches

    trainer = _batches_trainer()
    first = StepBatches(trainer, 0, 2).perm
    trainer.epoch = 1
    second = StepBatches(trainer, 0, 2).perm
    assert not torch.equal(first, second)
    assert torch.equal(StepBatches(trainer, 1, 2).perm, second)  # every process the same
    # resumed after 2 steps of an epoch: that epoch's own order, from step 2 on
    trainer.position, trainer.perm = 2, first
    resumed = StepBatches(trainer, 1, 2)
    assert len(resumed) == 3 and torch.equal(resumed.perm, first)
    _, _, index, _ = resumed[0]
    assert torch.equal(index, torch.tensor_split(first[100:150], 2)[1])


def test_a_resumed_epoch_is_closed_with_all_its_steps():
    """The epoch record divides the epoch's sums (restored with the checkpoint) by its steps:
    those before the resume count too."""
    from types import SimpleNamespace

    from bayesprune.distributed import StepBatches, lightning_module

    trainer = _batches_trainer()  # 203 examples, batches of 50: 5 steps
    trainer.position, trainer.perm = 2, torch.randperm(203)
    batches = StepBatches(trainer, 0, 2)
    seen = []
    core = SimpleNamespace(
        status="running", bookkeeping=0.0, end_epoch=lambda steps, bar=None: seen.append(steps)
    )
    fake = SimpleNamespace(core=core, batches=batches, bar=None,
                           trainer=SimpleNamespace(world_size=1))  # fmt: skip
    type(lightning_module(trainer)).on_train_epoch_end(fake)
    assert seen == [5]


def _trainer():
    from bayesprune.config import TrainConfig
    from bayesprune.data import make_teacher
    from bayesprune.inference.trainer import Trainer
    from bayesprune.models import GatedMLP

    torch.manual_seed(0)
    return Trainer(GatedMLP(4, (6,), 3), make_teacher(num_train=100, num_test=20), TrainConfig())


def _module_class(trainer):
    from bayesprune.distributed import lightning_module

    return type(lightning_module(trainer))


def _fake(trainer, world, rank=0):
    return SimpleNamespace(
        trainer=SimpleNamespace(world_size=world), core=trainer, global_rank=rank,
        lockstep_checks=0, lockstep_events=0, sync=None, threads=None, resync=lambda: None,
    )  # fmt: skip



def _compare(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    from bayesprune.distributed import LockstepError

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    trainer = _trainer()
    check = _module_class(trainer).check_lockstep
    out = {}
    # equal processes; only process 1 removed units since the last check: both must resync
    out["changed"] = check(_fake(trainer, world), rank == 1)
    # one bit of one parameter differs on process 1: every process stops
    if rank == 1:
        p = list(trainer.guide.parameters())[-1]
        with torch.no_grad():
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))
    try:
        check(_fake(trainer, world), False)
        out["diverged"] = False
    except LockstepError:
        out["diverged"] = True
    with open(f"{path}.{rank}", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


def test_the_lockstep_check_sees_any_process_remove_units_and_any_parameter_differ(tmp_path):
    import torch.multiprocessing as mp

    path = str(tmp_path / "check")
    mp.spawn(_compare, args=(2, _free_port(), path), nprocs=2, join=True)
    for rank in (0, 1):
        with open(f"{path}.{rank}") as f:
            assert json.load(f) == {"changed": True, "diverged": True}, rank


def test_each_process_draws_its_gates_from_its_own_stream():
    """Each process draws its own examples' gates: the streams differ by rank (the same stream
    would give every process's k-th example the same gate draws)."""
    trainer = _trainer()
    start = _module_class(trainer).on_train_start
    draws = []
    for rank in (0, 1):
        start(_fake(trainer, 1, rank))
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    start(_fake(trainer, 1, 0))
    assert torch.equal(torch.rand(4), draws[0])  # seeded: a resumed process draws the same


def test_a_fit_that_a_signal_or_an_error_ends_is_marked_and_a_finished_one_not(monkeypatch):
    """``lt.fit`` left by an exception (the command line's signal, an error) may leave a
    gradient all_reduce cut short: ``stopped_mid_run`` says so, for the script's exit."""
    import lightning.pytorch as pl

    import bayesprune.distributed as distributed
    from bayesprune.cli import _Stopped
    from bayesprune.distributed import fit_distributed, stopped_mid_run

    monkeypatch.setattr(distributed, "_STOPPED_MID_RUN", False)
    ended = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, module: ended.append(module))
    fit_distributed(_batches_trainer(), 1, progress=False)
    assert ended and not stopped_mid_run()
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:537] Connection closed by peer")
    for stop, raised in ((_Stopped(15), _Stopped), (RuntimeError("its own error"), RuntimeError),
                         (lost, SystemExit)):  # fmt: skip

        def fit(self, module, stop=stop):
            raise stop

        monkeypatch.setattr(pl.Trainer, "fit", fit)
        monkeypatch.setattr(distributed, "_STOPPED_MID_RUN", False)
        with pytest.raises(raised):
            fit_distributed(_batches_trainer(), 1, progress=False)
        assert stopped_mid_run()


class _Exited(BaseException):
    def __init__(self, code):
        self.code = code


@pytest.fixture
def stopped_process(monkeypatch):
    """This process as a data-parallel fit stopped mid-run leaves it, ``os._exit`` raising
    :class:`_Exited` instead of ending the test's process."""
    import os

    import bayesprune.distributed as distributed

    def hard_exit(code):
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", hard_exit)
    monkeypatch.setattr(distributed, "_STOPPED_MID_RUN", True)


class _HeldStream:
    """A text stream whose writes count only once flushed, as a pipe's buffered ones do when
    ``os._exit`` ends the process."""

    def __init__(self):
        self.pending, self.flushed = [], []

    def write(self, text):
        self.pending.append(text)
        return len(text)

    def flush(self):
        self.flushed += self.pending
        self.pending = []

    def text(self):
        return "".join(self.flushed)


@pytest.mark.parametrize("ending", ["code", "system exit", "error"])
def test_the_script_ends_a_stopped_data_parallel_process_without_finalisation(
    monkeypatch, stopped_process, ending
):
    """After a data-parallel run stopped mid-run, the script leaves by ``os._exit`` with main's
    code (1 for an error, after its trace), its output flushed: the interpreter's finalisation
    aborted such a process (SIGABRT, not 143) once in a CI run. Any other ending: main's code,
    returned (or its exception, raised), as before."""
    import sys

    import bayesprune.cli as cli
    import bayesprune.distributed as distributed

    def main(argv=None):
        print("the last line")
        if ending == "system exit":
            raise SystemExit(1)
        if ending == "error":
            raise ValueError("this process's own error")
        return 143

    out, err = _HeldStream(), _HeldStream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(cli, "main", main)
    with pytest.raises(_Exited) as exited:
        cli.script_main([])
    assert exited.value.code == (143 if ending == "code" else 1)
    assert out.text() == "the last line\n"
    assert ("ValueError: this process's own error" in err.text()) == (ending == "error")

    monkeypatch.setattr(distributed, "_STOPPED_MID_RUN", False)
    if ending == "code":
        assert cli.script_main([]) == 143
    else:
        with pytest.raises(SystemExit if ending == "system exit" else ValueError):
            cli.script_main([])


def test_the_installed_script_and_python_m_bayesprune_end_through_script_main(monkeypatch):
    import bayesprune._entry as entry
    import bayesprune.cli as cli

    monkeypatch.setattr(cli, "script_main", lambda argv=None: 7)
    assert entry.main() == 7


def test_python_m_bayesprune_cli_ends_through_script_main_too(monkeypatch, stopped_process):
    """``python -m bayesprune.cli``, the entry Lightning relaunches the other processes with,
    leaves a stopped data-parallel process by ``os._exit`` as the installed script does."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["bayesprune.cli", "--version"])
    with pytest.raises(_Exited) as exited:
        runpy.run_module("bayesprune.cli", run_name="__main__")
    assert exited.value.code == 0


def test_a_stream_that_cannot_flush_does_not_keep_the_stopped_process_in(
    monkeypatch, stopped_process
):
    import sys

    import bayesprune.cli as cli

    class Gone(_HeldStream):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    monkeypatch.setattr(cli, "main", lambda argv=None: 143)
    with pytest.raises(_Exited) as exited:
        cli.script_main([])
    assert exited.value.code == 143
