"""Data-parallel training on PyTorch Lightning (DDP), pruning in lock-step.

``bayesprune train --strategy ddp --devices N [--accelerator cpu|gpu]`` runs the objective of the
single-process :class:`~bayesprune.inference.trainer.Trainer` under ``lightning.Trainer``: the
same SVI step (model, guide, :class:`~bayesprune.inference.elbo.GatedELBO`,
:class:`~bayesprune.inference.projected_sgd.GateOptim`), the same evidence rule, pruning checks
and merge moves, on N processes that each see 1/N of every global mini-batch.

How the N processes stay one run:

- **Gradients.** The ELBO does its own backward passes (the secant's second one included), inside
  ``training_step``, where DDP's reducer is not armed (Lightning's manual optimisation). So the
  reduction is explicit, in :class:`GradientSync`, called by ``GatedELBO`` (its ``grad_sync``)
  before any parameter moves: the weights' gradients leave in one asynchronous ``all_reduce``
  as soon as the data term's backward has written them, θ's gradients and the step's objective
  terms in a second, small one, each process weighting its share by its examples / the global
  batch. The result is the gradient of the global batch's objective, identical on
  every process, so 2 processes × batch 50 take the step 1 process × batch 100 takes (up to the
  order of floating-point sums) and every process's parameters stay bitwise equal.
- **Evidence.** The θ clock and the warm-up count the global batch (``Trainer.global_batch``) and
  read the all-reduced data term, so the evidence rule, the release order, the pruning condition
  and the merge moves (same seeded sample, same parameters) decide the same on every process.
- **Lock-step check.** At every pruning check each process hashes its architecture and
  parameters; the hashes are all-gathered and must be equal (else the run stops with
  :class:`LockstepError`). Then process 0's parameters are broadcast to all (what a DDP
  wrapper's constructor does for new shapes); the optimisers' states were sliced with the units
  (:meth:`GateGuide.remove_units`). There is no ``DistributedDataParallel`` wrapper to rebuild:
  its reducer all-reduces during *one* backward of the module's output, while an SVI step runs
  its own backward passes, and it keeps the parameters' gradient accumulators alive, which go
  stale when units are removed in place (the first version, with the wrapper rebuilt after each
  event, failed on the step after the first removal with a gradient of the old shape).
- **Files.** Only process 0 writes (checkpoints are the single-process ones, atomic), so a run
  started on N processes resumes on M (any M, 1 included) from its last checkpoint.

What differs from one process: the gate draws (each process draws its own examples' gates from
its own stream: the same distribution, other draws) and the order of examples (a permutation
seeded by the run's seed and the epoch, the same on every process). A DDP run and a
single-process run with the same seed are therefore two draws of the same stochastic process,
not the same draw.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings

import pyro
import torch

from bayesprune.inference.trainer import Trainer
from bayesprune.loop import steps_per_epoch

STRATEGIES = ("single", "ddp")
ACCELERATORS = ("cpu", "gpu")


class LockstepError(RuntimeError):
    """The processes of a data-parallel run disagree on the architecture or the parameters."""


# Set when ``lt.fit`` left this process by an exception (a signal, a lost peer, an error): a step
# may have been cut between its gradients' asynchronous all_reduce and the wait for it, and that
# work, holding a tensor, can then never finish. Read by the command line's script entry
# (:func:`bayesprune.cli.script_main`), which ends such a process without the interpreter's
# finalisation, where such a process once aborted (SIGABRT, "terminate called without an active
# exception") after its files and its last line were written: most likely gloo's worker thread
# releasing that tensor (docs/method.md §6zza).
_STOPPED_MID_RUN = False


def stopped_mid_run() -> bool:
    """Whether a data-parallel fit in this process ended by an exception (see above)."""
    return _STOPPED_MID_RUN


def process_rank() -> int:
    """This process's global rank as the launcher set it (0 outside a distributed launch)."""
    for key in ("RANK", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def require_lightning():
    """Import ``lightning.pytorch`` or say how to install it."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        raise ImportError(
            "--strategy ddp needs PyTorch Lightning: pip install 'bayesprune[distributed]'"
        ) from None
    return pl


class GradientSync:
    """The step's gradients and objective terms summed over the processes, in two messages.

    :class:`~bayesprune.inference.GatedELBO` calls :meth:`start` as soon as the data term's
    backward pass has written the weights' gradients: they are packed (in the guide's parameter
    order, so every process packs the same buffer) and their ``all_reduce`` runs in the
    background while the secant's ĝ pass and θ's evidence pass run. :meth:`finish` then sums
    θ's gradients and the objective's terms in a second, small message, waits for the first and
    unpacks both. Each process scales its share by ``local / global`` examples before the sum,
    which makes the result the global batch's gradient also when the last batch splits
    unevenly. The prior's closed-form weight gradients are added after :meth:`finish`: they
    depend on the weights alone, which are the same in every process.
    """

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.local = 1
        self.total = 1
        self.reductions = 0
        self._pending = None  # (work, buffer, parameters) of the weights' reduction

    def _pack(self, params, extra=()) -> torch.Tensor:
        flat = torch.cat([p.grad.reshape(-1) for p in params] + list(extra))
        return flat.mul_(self.local / self.total)

    @staticmethod
    def _unpack(flat: torch.Tensor, params) -> int:
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
        return offset

    def start(self) -> None:
        """Start summing the weights' gradients (asynchronously)."""
        import torch.distributed as dist

        if self._pending is not None:  # a step that raised between start and finish
            self._pending[0].wait()
        optim = self.trainer.optim
        params = [
            p for p in self.trainer.guide.parameters()
            if p.grad is not None and not optim.is_gate(p)
        ]  # fmt: skip
        flat = self._pack(params) if params else torch.zeros(1, device=self.trainer.device)
        self._pending = (dist.all_reduce(flat, async_op=True), flat, params)

    def finish(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum θ's gradients and the scalar ``terms``, wait for the weights; return the terms."""
        import torch.distributed as dist

        if self._pending is None:
            self.start()
        work, flat, params = self._pending
        self._pending = None
        optim = self.trainer.optim
        gates = [
            p for p in self.trainer.guide.parameters()
            if p.grad is not None and optim.is_gate(p)
        ]  # fmt: skip
        keys = sorted(k for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1)
        dtype = flat.dtype
        small = self._pack(gates, [terms[k].detach().reshape(1).to(dtype) for k in keys])
        dist.all_reduce(small)
        work.wait()
        self._unpack(flat, params)
        offset = self._unpack(small, gates)
        out = dict(terms)
        for i, k in enumerate(keys):
            out[k] = small[offset + i].to(terms[k].dtype)
        self.reduce_running_stats()
        self.reductions += 1
        return out

    def reduce_running_stats(self) -> None:
        """BatchNorm's running statistics, averaged over the processes after every step.

        Each process updates them from its own share of the batch; the merge moves and the
        epoch records evaluate the network in eval mode, with these statistics, so they must be
        the same everywhere (else the processes' moves differ). Train-mode BatchNorm still
        normalises by each share's own statistics (no SyncBatchNorm): for networks with
        BatchNorm, P processes × B/P examples are not exactly one process × B.
        """
        import torch.distributed as dist

        stats = [
            b
            for m in self.trainer.net.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var)
            if b is not None
        ]
        if not stats:
            return
        flat = torch.cat([b.reshape(-1) for b in stats])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for b in stats:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes (in place; returned for chaining)."""
    import torch.distributed as dist

    dist.all_reduce(t)
    return t


def state_digest(trainer: Trainer) -> str:
    """SHA-256 of the architecture and of every parameter's bytes (lock-step check)."""
    h = hashlib.sha256(repr(list(trainer.net.widths)).encode())
    for name, p in trainer.guide.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class StepBatches(torch.utils.data.Dataset):
    """This process's share of each global mini-batch of one epoch, one item per step.

    The order of examples is a permutation seeded by the run's seed and the epoch, the same on
    every process; each global batch is split into ``world`` contiguous parts. Items are
    ``(x, y, index, global_batch_size)``; a resumed epoch starts at ``start``.
    """

    def __init__(self, trainer: Trainer, rank: int, world: int):
        self.t, self.rank, self.world = trainer, rank, world
        self.batch = trainer.config.batch_size
        self.n = len(trainer.data.x_train)
        self.start = trainer.position
        if trainer.position and trainer.perm is not None:  # a resumed epoch: its own order
            self.perm = trainer.perm.cpu()
        else:
            gen = torch.Generator().manual_seed(trainer.config.seed * 1_000_003 + trainer.epoch)
            self.perm = torch.randperm(self.n, generator=gen)

    def __len__(self) -> int:
        steps = steps_per_epoch(self.t.data, self.batch)
        if self.n - (steps - 1) * self.batch < self.world:  # a last batch too small to share
            steps -= 1
        return steps - self.start

    def __getitem__(self, i: int):
        step = self.start + i
        idx = self.perm[step * self.batch : (step + 1) * self.batch]
        mine = torch.tensor_split(idx, self.world)[self.rank]
        data = self.t.data
        mine = mine.to(data.x_train.device)
        x = data.x_train[mine] if data.augment is None else data.augment(data.x_train[mine])
        return x, data.y_train[mine], mine, len(idx)


def lightning_module(trainer: Trainer):
    """The ``LightningModule`` around ``trainer``'s SVI step (built on first use, so that the
    single-process path never imports Lightning)."""
    pl = require_lightning()

    class PruningModule(pl.LightningModule):
        """Lightning's view of a :class:`Trainer`: its SVI step per batch, its epoch records."""

        def __init__(self, core: Trainer):
            super().__init__()
            self.core = core
            self.guide = core.guide  # the parameters DDP wraps (the network's are the guide's)
            self.automatic_optimization = False  # the SVI step steps GateOptim itself
            self.sync = GradientSync(core)
            self.lockstep_checks = 0  # comparisons of all processes' digests (every check)
            self.lockstep_events = 0  # ... at which units had been removed
            self.events_seen = len(core.prune_events)
            self.batches = None
            self.bar = None
            self.started = self.ended = None
            self.threads = None

        # -- data ------------------------------------------------------------------------
        def train_dataloader(self):  # once per epoch (reload_dataloaders_every_n_epochs=1)
            self.batches = StepBatches(self.core, self.global_rank, self.trainer.world_size)
            return torch.utils.data.DataLoader(self.batches, batch_size=None, shuffle=False)

        def configure_optimizers(self):
            return None  # GateOptim lives in the core trainer (SVI steps it)

        # -- the loop ----------------------------------------------------------------------
        def on_train_start(self):
            core, world = self.core, self.trainer.world_size
            core.elbo.grad_sync = self.sync if world > 1 else None
            share_measures(core, self.global_rank, world, self.threads)
            self.resync()  # one start: process 0's parameters (a resumed run's too)
            # each process draws the gates of its own examples: its own stream
            pyro.set_rng_seed(core.config.seed * 7919 + 104_729 * self.global_rank + core.step)
            self.started = time.perf_counter()  # the training clock: launch and setup excluded
            core.clock_start = self.started  # (a checkpoint's wall time too)

        def on_train_end(self):
            self.ended = time.perf_counter()

        def on_train_epoch_start(self):
            core = self.core
            if core.position == 0:
                core.start_epoch(self.batches.perm.to(core.device))
            else:  # a resumed epoch: its order, recorded if a checkpoint is cut; timed from here
                core.perm = self.batches.perm.to(core.device)
                core.epoch_start, core.timed_from = time.perf_counter(), core.position

        def training_step(self, batch, batch_idx):
            core = self.core
            x, y, index, total = batch
            total = int(total)
            self.sync.local, self.sync.total = x.shape[0], total
            core.global_batch = total
            terms = core.timed_step(x, y, index)
            core.position += 1
            if core.status == "failed":
                self.trainer.should_stop = True
                return None
            core.count_step(terms)
            if self.bar is not None:
                self.bar.update(1)
            return None

        def on_train_batch_end(self, outputs, batch, batch_idx):
            core = self.core
            if core.step % core.check_every or core.status == "failed":
                return
            # every process compares at every pruning check, whether or not it removed units
            # itself: a process that removed units alone would otherwise wait in a collective
            # the others never enter
            events = len(core.prune_events) != self.events_seen
            self.events_seen = len(core.prune_events)
            try:
                changed = self.check_lockstep(events)
            except LockstepError as err:  # every process saw the same digests: all stop
                core.diverge(str(err))
                self.trainer.should_stop = True
                return
            if changed:
                self.resync()

        def on_train_epoch_end(self):
            core = self.core
            if core.status == "failed":
                return
            steps = len(self.batches) + self.batches.start
            before, t0 = core.bookkeeping, time.perf_counter()
            core.end_epoch(steps, self.bar)
            if self.trainer.world_size > 1:  # the slowest process's evaluation is bookkeeping
                import torch.distributed as dist

                dist.barrier()
            core.bookkeeping = before + time.perf_counter() - t0

        # -- lock-step -----------------------------------------------------------------------
        def check_lockstep(self, events: bool) -> bool:
            """All processes hold the same architecture and the same parameter bytes; returns
            whether units were removed since the last check (on any process)."""
            import torch.distributed as dist

            if self.trainer.world_size == 1:
                return events
            mine = (list(self.core.net.widths), state_digest(self.core), events)
            digests = [None] * self.trainer.world_size
            dist.all_gather_object(digests, mine)
            self.lockstep_checks += 1
            changed = any(d[2] for d in digests)
            self.lockstep_events += changed
            if any(d[:2] != digests[0][:2] for d in digests):
                raise LockstepError(
                    f"processes diverged at step {self.core.step}: "
                    + "; ".join(
                        f"rank {r}: widths {w} digest {h[:12]}"
                        for r, (w, h, _) in enumerate(digests)
                    )
                )
            return changed

        def resync(self) -> None:
            """What a new DDP wrapper's constructor does for the new shapes: process 0's
            parameters and buffers, broadcast to all (a no-op when in lock-step)."""
            import torch.distributed as dist

            if self.trainer.world_size == 1:
                return
            with torch.no_grad():
                for tensor in [*self.guide.parameters(), *self.guide.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    return PruningModule(trainer)


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is the process group telling this process that another one is gone
    (gloo's words for a closed or broken connection)."""
    text = str(err).lower()
    return any(
        words in text for words in ("connection closed", "read error", "connection reset")
    )


def _sigterm_without_a_collective(lt) -> None:
    """Lightning's SIGTERM handler stops the launched processes and then broadcasts the signal
    over the process group, from inside the handler: while the processes are in another
    collective (the gradients' all_reduce), that broadcast waits on both sides for ever (2 of
    7 SIGTERMs to a two-process run hung, docs/method.md §6zn). The processes are stopped
    together without it: the launcher passes the signal on, and each process's own handler (the
    command line's) ends it. Lightning's private connector: left alone where it has changed."""
    connector = getattr(lt, "_signal_connector", None)
    if connector is None or not hasattr(connector, "received_sigterm"):
        return

    def notify(signum, frame) -> None:
        if not connector.received_sigterm:
            launcher = lt.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify


def share_measures(core: Trainer, rank: int, world: int, threads: int | None) -> None:
    """Each process measures its share of the merge rounds' and the final settle's samples,
    the statistics summed over the processes (one object if merges are on); and computes with
    the threads the user asked for (Lightning set cores / processes). From ``on_train_start``,
    and again before the settle: a run resumed with no epoch left skips Lightning's loop and
    its hooks."""
    if world > 1:
        for moves in {core.merges, core.settler} - {None}:
            moves.shard = (rank, world)
            moves.reduce = all_reduce_sum
    if threads is not None:
        torch.set_num_threads(threads)


def fit_distributed(
    trainer: Trainer,
    devices: int,
    accelerator: str = "cpu",
    progress: bool = True,
    run: dict | None = None,
    threads: int | None = None,
) -> dict | None:
    """Train ``trainer`` under ``lightning.Trainer`` with DDP on ``devices`` processes.

    Returns the summary on process 0 (which writes every file) and ``None`` on the others.
    ``threads``: torch threads per process (default: Lightning's, the cores / processes).
    """
    pl = require_lightning()
    from lightning.pytorch.strategies import DDPStrategy
    from tqdm.auto import tqdm

    if accelerator not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {accelerator!r}: choose cpu or gpu")
    cfg = trainer.config
    if cfg.evidence != "train":
        raise ValueError("data-parallel training measures the gates' evidence on the training "
                         "batches only: drop --evidence held-out or --devices")
    module = lightning_module(trainer)
    module.threads = threads
    backend = "gloo" if accelerator == "cpu" else "nccl"

    class SVIStrategy(DDPStrategy):
        """Lightning's DDP (launch, process group, ranks) without the DDP wrapper's reducer:
        the reducer all-reduces during one backward of the module's output, while an SVI step
        runs its own backward passes inside ``training_step``, and it holds the parameters'
        gradient accumulators, which go stale when units are removed in place. The reduction is
        :class:`GradientSync`'s, two messages per step."""

        def configure_ddp(self) -> None:
            pass

    strategy = SVIStrategy(process_group_backend=backend, start_method="popen")
    warnings.filterwarnings("ignore", module="lightning")
    for name in ("lightning.pytorch", "lightning.fabric"):  # its banners; errors still show
        logging.getLogger(name).setLevel(logging.WARNING)
    lt = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        max_epochs=cfg.epochs - trainer.epoch,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1,
        inference_mode=False,
    )
    _sigterm_without_a_collective(lt)
    rank = lt.global_rank
    if cfg.batch_size < lt.world_size:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is smaller than the {lt.world_size} processes: "
            "every process needs an example of every batch"
        )
    if rank != 0:
        trainer.writer, trainer.echo = None, False  # one writer, one voice: process 0
    steps = trainer.begin(run, write_summary=False)
    if trainer.position and len(StepBatches(trainer, rank, lt.world_size)) == 0:
        # stopped (on one process) after its epoch's last batch that N processes can share:
        # close that epoch here, as the loop would have
        trainer.end_epoch(steps)
        lt.fit_loop.max_epochs = cfg.epochs - trainer.epoch
    if rank == 0:
        module.bar = tqdm(
            total=trainer.total_steps,
            disable=None if progress else True,  # none where stderr is not a terminal
            desc="train",
            unit="step",
            initial=trainer.step,
        )
    start = time.perf_counter()
    global _STOPPED_MID_RUN
    with pyro.validation_enabled(False):
        try:
            lt.fit(module)
            if module.bar is not None:
                module.bar.close()
            # Lightning's teardown moves the module (the guide, and the network inside it) to
            # the CPU; the data and the optimisers' moments stay on the process's device, where
            # the rest (removal, the settle, evaluation, export) runs
            trainer.guide.to(trainer.device)
            trainer.removed_at_end = trainer.remove_collapsed()
            # the training's clock stops here (a resumed run with no epoch left has no hook)
            ended = module.ended if module.ended is not None else time.perf_counter()
            # the final settle (Eq. (15)), as one process runs it after its last epoch: each
            # process measures its share of the sample, the statistics summed, so every process
            # removes the same units (left out here until the forty-fourth session: a
            # data-parallel run ended unsettled, with "settled": null). Inside this handler:
            # its collectives lose their peer as the loop's do when another process is stopped
            share_measures(trainer, rank, lt.world_size, threads)
            settle_start = time.perf_counter()
            trainer.settled = trainer.settle()
            trainer.settle_seconds = time.perf_counter() - settle_start
        except BaseException as err:
            _STOPPED_MID_RUN = True
            if not (isinstance(err, Exception) and peer_lost(err)):
                raise  # a signal, or this process's own error: its whole trace
            # another process is gone (a signal, an error it reports itself, a kill): one line
            # (process 0 gave gloo's 78-line trace; the run's files are those of its last epoch)
            first = " ".join(str(err).split())[:300]
            resume = (
                f"; the run resumes from its last epoch's checkpoint: bayesprune train --resume "
                f"{trainer.out}"
                if rank == 0 and trainer.out is not None
                else ""
            )
            print(
                f"bayesprune: process {rank} stops: another process of the run is gone "
                f"({first}){resume}",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
    # no loop ran (a resumed run with no epoch left): no training in this process, its launch
    # and setup are setup_seconds
    started = module.started if module.started is not None else ended
    # the settle counts in the training's wall time, as in one process
    wall = trainer.wall + ended - started - trainer.bookkeeping + trainer.settle_seconds
    summary = trainer.finish(wall, trainer.step_seconds(), trainer.bookkeeping)
    trainer.net.eval()  # as Trainer.fit leaves it: the network model.pt holds
    summary["strategy"] = {
        "name": "ddp",
        "devices": lt.world_size,
        "accelerator": accelerator,
        "lockstep_checks": module.lockstep_checks,
        "lockstep_checks_after_removals": module.lockstep_events,
        "gradient_reductions": module.sync.reductions,
        # launching the processes, the process group, Lightning's setup (not in the wall time)
        "setup_seconds": started - start,
    }
    if rank != 0:
        return None
    return summary
