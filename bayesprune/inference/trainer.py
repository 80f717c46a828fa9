"""The training loop: SVI steps, projected gate updates, prior updates and pruning (Algorithm 1)."""

from __future__ import annotations

import functools
import math
import os
import random
import signal
import threading
import time
import uuid
import warnings
import weakref
from contextlib import nullcontext
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from bayesprune.config import (
    RELEASES,
    TrainConfig,
    check_interval,
    checks_per_window,
    evidence_window,
    pruning_patience,
    weights_optimizer,
)
from bayesprune.data import Dataset, changed_files, tensors_sha256
from bayesprune.export import (
    architecture,
    count_macs,
    count_weights,
    deterministic_network,
    layer_macs,
    mode_units,
    mode_widths,
    summarize,
)
from bayesprune.guides.gate_guide import GateGuide
from bayesprune.inference.elbo import IMPLEMENTATIONS, GatedELBO
from bayesprune.inference.elbo_fast import vertex_pricing_applies
from bayesprune.inference.merge import MergeMoves, SettleStopped, merges_apply
from bayesprune.inference.prior_update import update_slab_variances
from bayesprune.inference.projected_sgd import THETA_OPTIMIZERS, GateOptim
from bayesprune.inference.pruning import PruneMessenger
from bayesprune.inference.shrink import PruningCondition
from bayesprune.loop import (
    batches,
    evaluate,
    global_rng_state,
    lr_schedule,
    set_global_rng_state,
    steps_per_epoch,
    synchronize,
)
from bayesprune.models.gated_model import GatedModel
from bayesprune.models.network import GatedNet, use_memory_format
from bayesprune.runs import (
    RunError,
    RunWriter,
    check_resumable,
    hold_run_directory,
    holds_run_directory,
    latest_state,
    read_config,
    release_run_directory,
    versions,
)

MERGE_SAMPLE = 4096  # training examples on which a merge move's change of F is measured
SETTLE_SAMPLE = 20_000  # training examples on which the final settle (Eq. (15)) measures F
# settle="auto" (Eq. (15c)): the layers settled are the cheapest whose passes over their units
# together cost at most this share of the training's compute
SETTLE_SHARE = 0.25


def make_optimizer(guide: GateGuide, config: TrainConfig, num_data: int) -> GateOptim:
    """The ``pyro.optim`` optimiser of a run: Adam (or SGD, ``optimizer="sgd"``) on the weights,
    projected steps on θ (Eq. (10)).

    F is a sum over N examples, so ∂F/∂θ is N times the per-example effect Δ_s;
    :class:`ProjectedSGD` divides by N and steps per example seen, so ``lr_theta`` is a step per
    example and per unit of per-example loss, and its evidence averages W_N examples
    (:func:`~bayesprune.config.evidence_window`: min(N, ``theta_window``), or ``theta_window``
    itself with ``window_cap="none"``, but at least 10 steps' examples, Eq. (10n)).
    """
    if config.theta_optimizer not in THETA_OPTIMIZERS:
        raise ValueError(f"unknown theta optimizer {config.theta_optimizer!r}: choose sgd or adam")
    optimizer, weights_args = weights_optimizer(config, num_data)
    return GateOptim(
        weights_args,
        {
            "lr": config.lr_theta,
            "window": evidence_window(config, num_data),
            "num_data": num_data,
            "transit": config.theta_transit,
            "confidence": config.theta_confidence,
        },
        batch_size=config.batch_size,
        params=guide.parameters(),
        weights_optimizer=optimizer,
        gates_optimizer=THETA_OPTIMIZERS[config.theta_optimizer],
    )


# two time constants of Adam's first moment (β₁ = 0.9), or of SGD's at momentum 0.9: early_note
EARLY_STEPS = 20
# Eq. (10w): the share of a constant predictor's loss a network must have learnt before any
# unit is priced (a network stalled at chance has no evidence about its units, docs §6zq)
LEARNT_FLOOR = 0.1
# a training error within AT_CHANCE of a constant predictor's is at chance; one CLEARLY_BETTER
# below it has learnt (check_health; bayesprune baseline reads a dense twin by the same rule)
AT_CHANCE, CLEARLY_BETTER = 0.01, 0.05
TRAIN_ERROR_EXAMPLES = 10_000  # an epoch's record reads the training error on its first ones
NEAR_START = 0.9  # a decided layer that kept this share of its units is reported: near_start_note
# a training set at most this share of whose examples the network gets wrong at the last epoch is
# learnt by heart: there more epochs keep removing units rather than settle (docs/method.md §6zm)
BY_HEART = 0.01


def float32_by_default(method):
    """``method`` with torch's default dtype float32, the only dtype a run trains in, and the
    caller's default given back after: in a process whose default is float64 (as Pyro's
    Gaussian-process work sets it) the guide's θ and σ₁², the prior's sums and the optimisers'
    state were made float64 beside float32 weights, a dtype error or a run that computed other
    sums than the same run in a float32 process."""

    @functools.wraps(method)
    def method_in_float32(*args, **kwargs):
        before = torch.get_default_dtype()
        if before == torch.float32:
            return method(*args, **kwargs)
        torch.set_default_dtype(torch.float32)
        try:
            return method(*args, **kwargs)
        finally:
            torch.set_default_dtype(before)

    return method_in_float32


class Trainer:
    """Train and prune a :class:`GatedNet` (MLP or convolutional) on a :class:`Dataset`.

    Each step is one ``pyro.infer.SVI`` step of the :class:`GatedModel` and :class:`GateGuide`
    with the :class:`GatedELBO` as its loss and a :class:`GateOptim` (Adam on the weights, or
    SGD with momentum (``optimizer="sgd"``), the
    projected per-example step of Eq. (10) on θ, which moves only after the warm-up and in the
    release order of Eqs. (10w), (10o)); every ``prior_every`` steps the prior parameters get
    their closed-form update (Eq. (11)); every ``check_every`` steps the pruning condition
    (Eq. (12)) is checked. Units that meet it are *collapsed*: until the next check the steps
    run under the :class:`PruneMessenger`, whose objective is the pruned network's, and at the
    next check they are removed physically (:meth:`GateGuide.remove_units`).

    :param net: the network to train (modified in place).
    :param data: the dataset.
    :param config: settings.
    :param out: run directory (``config.json``, ``metrics.jsonl``, checkpoints, ``summary.json``,
        ``model.pt``), or ``None`` to write nothing.
    """

    @float32_by_default
    def __init__(self, net: GatedNet, data: Dataset, config: TrainConfig, out: Path | None = None):
        for value, kind, hint in (
            (net, GatedNet, "bayesprune.models: GatedMLP, lenet5, build_network"),
            (data, Dataset, "bayesprune.data: load_dataset, or Dataset(name, x_train, …)"),
            (config, TrainConfig, "TrainConfig(**settings) builds one from a dict"),
        ):
            if not isinstance(value, kind):
                name = type(value).__name__
                raise TypeError(f"Trainer takes a {kind.__name__} ({hint}), not {name}")
        _check_plan_network(net)
        # a field set after the config was made skipped its checks (optimizer "sgdd" trained
        # with Adam, epochs 0 divided by zero): the copy checks them all again
        config = replace(config)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        if config.release not in RELEASES:
            raise ValueError(f"unknown release {config.release!r}: choose {' or '.join(RELEASES)}")
        trained = getattr(net, "trained_by_a_trainer", None)
        if trained is not None:  # a sweep reusing one network object: say it, never silently
            warnings.warn(
                f"this network was trained by another Trainer (starting widths {trained}, now "
                f"{list(net.widths)}): this run starts from its trained, pruned weights. Build "
                "a new network for a new run, or continue a stopped run with Trainer.resume",
                UserWarning,
                stacklevel=2,
            )
        data.check()  # a user's own tensors: one clear error before anything runs
        data.check_fits(net.in_shape, net.num_classes, flattens=net.flattens)
        scale_note = data.scale_note()  # of all the inputs, as a deployed network sees them
        if config.train_subset is not None:
            data = data.subset(config.train_subset, seed=config.seed)
            data.check_classes()
        self.evidence_set = None  # Eq. (9h): the held-out examples of the gates' evidence
        if config.evidence == "held-out":  # (TrainConfig refuses what it cannot measure)
            data, held = data.hold_out(config.evidence_share, seed=config.seed)
            self.evidence_set = tuple(t.to(self.device) for t in held)
        # said now, and again in the summary's note: the inputs' scale, and test classes that
        # no example the weights train on has
        self.data_note = "; ".join(n for n in (scale_note, data.class_note()) if n) or None
        if self.data_note:
            warnings.warn(self.data_note, UserWarning, stacklevel=2)
        _check_batch_norm(net, len(data.x_train), config.batch_size)
        self.net, self.data, self.config = net.to(self.device), data.to(self.device), config
        # before the guide and the optimisers see the weights: their state takes the layout
        self.channels_last = use_memory_format(net, config.memory_format, self.device)
        self.out = None if out is None else Path(out)
        if out is not None and not str(out).strip():  # Path("") is the current directory
            raise ValueError("out is empty: name the run directory (or leave out=None)")
        self.writer = None if out is None else RunWriter(out, traces=bool(config.trace_every))
        self.hyper = hyper = config.hyper(len(data.x_train))
        self.model = GatedModel(net, hyper)
        self.guide = GateGuide(
            net,
            hyper,
            weights=config.weights,
            init_theta=config.init_theta,
            posterior=config.posterior,
        ).to(self.device)
        if config.elbo not in IMPLEMENTATIONS:
            raise ValueError(f"unknown elbo {config.elbo!r}: choose {', '.join(IMPLEMENTATIONS)}")
        self.elbo = GatedELBO(estimator=config.estimator, implementation=config.elbo)
        if self.evidence_set is not None:
            self.elbo.evidence_batch = _weak(self.evidence_batch)
        self.optim = make_optimizer(self.guide, config, len(data.x_train))
        self.svi = pyro.infer.SVI(self.model, self.guide, self.optim, loss=self.elbo)
        self.schedule = None  # built in fit(), when the number of steps is known
        self.collapsed: dict[str, torch.Tensor] = {}  # per layer: units awaiting removal
        self.collapsed_step = None
        n = len(data.x_train)
        self.window = evidence_window(config, n)  # W_N (Eq. (10n)), in examples
        self.check_every = check_interval(config, n)  # steps between pruning checks
        self.condition = PruningCondition(pruning_patience(config, n))
        self.merges = (
            MergeMoves(
                self.guide,
                hyper,
                len(data.x_train),
                spend=config.merge_tests == "spend",
                groups={"off": False, "on": True}.get(config.merge_groups, config.merge_groups),
                group_cap=config.group_cap,
            )
            if config.merge == "on" and merges_apply(self.guide)
            else None
        )
        # the final settle (Eq. (15)) measures as the merge moves do, with or without them
        self.settler = self.merges
        if self.settler is None and config.settle != "off" and merges_apply(self.guide):
            self.settler = MergeMoves(self.guide, hyper, len(data.x_train))
        # (weakly: the trainer is not kept alive by its own parts, and a sweep's finished
        # trainers are freed when the caller drops them, not at the next cycle collection)
        if self.merges is not None and config.merge_price == "expected":
            self.merges.expected = _weak(self.heading_for)
        if config.producer_price == "expected" and vertex_pricing_applies(self.guide):
            self.elbo.vertex = _weak(self.heading_for)  # Eq. (10e)
        self.initial_widths = list(net.widths)
        self.initial_spec = net.spec()  # the starting network (config.json: bench rebuilds it)
        # names this run in config.json and its checkpoints, so that a checkpoint of another
        # run is refused (os.urandom: the run's random streams are untouched)
        self.run_id = uuid.uuid4().hex
        plain = net.to_sequential()
        self.initial = {
            "weights": count_weights(net),
            "macs": count_macs(plain, net.in_shape),
            "architecture": architecture(plain),
        }
        self.history: list[dict] = []
        self.prune_events: list[dict] = []
        self.removed_at_end: dict[str, int] = {}  # per layer, by the last removal (fit's end)
        self.settled: dict[str, int] | None = None  # per layer, by the final settle (Eq. (15))
        self.settle_skipped: list[str] = []  # layers settle="auto" left out for their cost (15c)
        self.settle_stopped: dict[str, int] = {}  # layers whose passes the budget ended (15c)
        self.settle_seconds = 0.0  # its time (part of the training wall time)
        self.before_settle: dict | None = None  # the deployed network's widths and error before it
        self.step = 0
        self.status, self.status_reason = "finished", None
        # a constant predictor's training error and loss per example
        _, self.chance_error, self.constant_nll = self.data.constant_predictor()
        self.best_train_error = 1.0
        self.recent_data = None  # per-example data term, averaged over the last ~10 steps
        self.warm_step = None if config.warmup_tolerance is not None else 0
        self.examples_released = 0
        self.release_steps: dict[str, int] = {}
        self.block = {"sum": torch.zeros((), device=self.device), "examples": 0, "previous": None}
        self.epoch, self.position = 0, 0  # completed epochs; steps done in the current one
        self.perm, self.sums, self.epoch_start = None, None, time.perf_counter()
        self.timed_from = 0  # the step of the epoch its clock started at (a resumed epoch's)
        self.resumed, self.diverged = None, False
        self.fitted = False  # fit() has run to its end: a second call is refused
        self.started = False  # fit() was called (a run it cut short is resumed, not re-fitted)
        # for the θ optimiser (no cycle); without its trainer no θ moves (no schedule, no rule)
        self.weak_movable = _weak(self.movable, gone=False)
        self.resumed_from: Path | None = None  # the checkpoint Trainer.resume restored
        self.held_here = False  # this trainer took the hold on its run directory
        self.hold_finalizer = None  # Trainer.resume's release of it, should the trainer be dropped
        # data-parallel training (bayesprune.distributed): the examples of this step summed over
        # the processes, which is what the θ clock and the warm-up count (None: this process's)
        self.global_batch: int | None = None
        self.echo = True  # print the epoch records (the other processes of a DDP run do not)
        self.wall, self.bookkeeping, self.clock_start = 0.0, 0.0, time.perf_counter()
        self.step_times: list[float] = []  # the first full-width steps of this process's part

    def released_layers(self, data: torch.Tensor, examples: int) -> list[str]:
        """The gated layers whose θ may move after this step (Eqs. (10w), (10o)).

        None during the warm-up; then the layers from the output back, one evidence window
        (W_N examples, Eq. (10n)) apart with ``release="ordered"``, all at once with
        ``"together"``.
        """
        if not self.warmed_up(data, examples):
            return []
        gated = self.net.gated
        if self.config.release == "together":
            released = list(gated)
        else:
            self.examples_released += examples
            count = 1 + int(self.examples_released // self.window)
            released = gated[max(0, len(gated) - count) :]
        for name in released:
            self.release_steps.setdefault(name, self.step + 1)
        return released

    def warmed_up(self, data: torch.Tensor, examples: int) -> bool:
        """The evidence rule (Eq. (10w)): θ moves once the data term has stopped falling fast.

        The data term per example is averaged over consecutive blocks of
        ``min(N, theta_window)`` examples; the warm-up ends at the first block that improved on
        the block before by less than ``warmup_tolerance`` times everything learnt so far (the
        constant predictor's loss, where the zero-initialised read-out starts, minus the
        block's), once that is at least :data:`LEARNT_FLOOR` (10%) of the constant predictor's
        loss (a network stalled at chance has no evidence about any unit, whatever its noise).
        Until then the network is still learning to use its units, and Δ_s measured on it
        understates what they are worth (at the zero read-out Δ_s = 0 exactly), so the θ step
        only accumulates evidence. Blocks count examples, so the batch size does not set
        the clock. The rule reads the data term, not the learning rate: a slow learner whose
        blocks improve little against what it has learnt warms up as early as a fast one
        (LeNet-5 on 10,000 examples at step 300 under Adam 1e-4 as under 1e-3, while a dense
        twin at 1e-4 learns for seven more epochs: docs/method.md §6zv, a lead of §7d).
        """
        if self.warm_step is not None:
            return True
        block = self.block
        block["sum"] += data
        block["examples"] += examples
        block["seen"] = block.get("seen", 0) + examples
        if block.get("settled") and self.trained_on_every_example():
            self.warm_step = self.step + 1  # (warmup_epoch="on": the data term settled earlier)
            return True
        if block["examples"] < min(len(self.data.x_train), self.config.theta_window):
            return False
        mean = float(block["sum"]) / block["examples"]  # one host sync per block
        block["before"], block["previous"] = block["previous"], mean  # (undecided reads both)
        previous = block["before"]
        block["sum"].zero_()
        block["examples"] = 0
        learnt = self.constant_nll - mean  # what the network has learnt since its start
        tolerance = self.config.warmup_tolerance
        # a network that has not learnt LEARNT_FLOOR of the constant predictor's loss has no
        # evidence about any unit (a rate that stalls it at chance, whose loss then drifts by
        # noise, met the second test alone and lost every unit: docs §6zq)
        if learnt < self.learnt_floor:
            return False
        if previous is not None and previous - mean < tolerance * learnt:
            block["settled"] = True
            if self.trained_on_every_example():
                self.warm_step = self.step + 1
                return True
        return False

    def trained_on_every_example(self) -> bool:
        """Whether the warm-up may end as far as ``warmup_epoch`` is concerned: with "on", once
        the steps have taken N examples (one epoch), including this one. θ's evidence of a step
        is taken on its batch before the step trains on it, so within the first epoch it is
        measured on examples the network has never fitted, evidence of the held-out kind
        (docs/method.md §6zk), which the training-set evidence of the objective is not: with
        "on" θ first moves at the step that completes the epoch. Its running average then still
        holds the first epoch's evidence, which decays over about one window (W examples): the
        option delays the decisions; it does not discard that evidence, and discarding it (a
        benchmark arm) changes nothing beyond noise: the later decision is what acts (§6zzi).
        Within the first epoch the data term (10w) reads is a held-out loss too."""
        return self.config.warmup_epoch == "off" or self.block["seen"] >= len(self.data.x_train)

    @property
    def learnt_floor(self) -> float:
        """What a network must have learnt, in nats per example, before any unit is priced
        (Eq. (10w)): :data:`LEARNT_FLOOR` of a constant predictor's loss."""
        return LEARNT_FLOOR * self.constant_nll

    def evidence_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of held-out examples for the gates' evidence (Eq. (9h)): as many as a step
        trains on, drawn with replacement from the torch generator (so a resumed run draws
        the same ones)."""
        x, y = self.evidence_set
        index = torch.randint(len(x), (self.config.batch_size,), device=x.device)
        return x[index], y[index]

    @float32_by_default
    def train_step(self, x, y, index) -> dict[str, torch.Tensor]:
        """One SVI step (under the pruning handler while collapsed units await removal)."""
        num_data = len(self.data.x_train)
        batch = x.shape[0] if self.global_batch is None else self.global_batch
        self.optim.configure(examples=batch, move=functools.partial(self.weak_movable, batch))
        self.optim.record_gate_grads = bool(
            self.config.trace_every and (self.step + 1) % self.config.trace_every == 0
        )
        with self.pruning():
            loss = self.svi.step(x, y, num_data=num_data, index=index)
        self.hold_collapsed()
        terms = self.elbo.last_terms
        if self.global_batch is not None:  # data-parallel: the all-reduced objective decides,
            loss = float(terms["loss"])  # so every process stops at the same step
        if not math.isfinite(loss):
            self.diverge(
                f"the objective is not finite at step {self.step + 1} (data term "
                f"{float(terms['data'])}, prior term {float(terms['prior'])})"
            )
            return terms
        if self.schedule is not None:
            self.schedule.step()
        self.step += 1
        if self.step % self.config.prior_every == 0:
            with self.pruning() as handler:
                update_slab_variances(self.guide, self.hyper, pruning=handler)
        if self.config.trace_every and self.step % self.config.trace_every == 0:
            self.trace()
        if self.step % self.check_every == 0:
            self.prune()
        return terms

    @torch.no_grad()
    def hold_collapsed(self) -> None:
        """Keep θ = 0 for the units found collapsed (Eq. (12)) until their physical removal at the
        next check: they are decided, and the handler has already run the network without them.
        (Under Eq. (10s) the θ step of a unit whose gate the handler drops could otherwise rise:
        its evidence fades towards 0, below z standard errors.)"""
        for name, collapsed in self.collapsed.items():
            self.guide.theta_parameters([name])[0].masked_fill_(collapsed, 0.0)

    def pruning(self):
        """The :class:`PruneMessenger` of the collapsed units (a no-op context if none)."""
        if not self.collapsed:
            return nullcontext()
        return PruneMessenger(self.net, self.collapsed)

    def movable(self, examples: int) -> set:
        """The θ storage the optimiser may move after this step (called at its θ step)."""
        per_example = self.elbo.last_terms["data"] / len(self.data.x_train)
        self.recent_data = (
            per_example if self.recent_data is None else self.recent_data.lerp(per_example, 0.1)
        )
        released = self.released_layers(per_example * examples, examples)
        return set(self.guide.theta_parameters(released))

    def check_health(self, record: dict) -> None:
        """Mark the run ``failed`` (non-finite objective) or ``collapsed`` (chance level).

        Collapsed: the posterior mode's training error is no better than a constant
        predictor's at the last epoch, or at an earlier one after it had been clearly better
        (it passed through chance level). A first epoch that has not yet learnt is not a
        collapse; a run that never learns ends at chance and is reported at its last epoch.
        """
        if self.status != "finished":
            return
        last = record["epoch"] == self.config.epochs
        at_chance = chance_collapse(
            record["train_error"], self.best_train_error, self.chance_error, last
        )
        self.best_train_error = min(self.best_train_error, record["train_error"])
        if not math.isfinite(record["data_term"]) or not math.isfinite(record["prior_term"]):
            self.status, self.status_reason = "failed", (
                f"the objective is not finite at epoch {record['epoch']} "
                f"(data term {record['data_term']}, prior term {record['prior_term']})"
            )
        elif at_chance is not None:
            self.status, self.status_reason = "collapsed", (
                f"training error {record['train_error']:.3f} at epoch {record['epoch']} is no "
                f"better than a constant predictor's ({self.chance_error:.3f}); "
                f"widths {record['widths']}"
                + ("; no epoch was clearly better: the run never learnt"
                   if at_chance == "never learnt" else "")  # fmt: skip
            )

    def diverge(self, reason: str) -> None:
        """Stop the run as ``failed``: the last checkpoint written is the last good state."""
        self.status, self.status_reason, self.diverged = "failed", reason, True

    def check_finite(self) -> bool:
        """Whether every parameter and θ is finite (else the run fails, naming the tensor)."""
        for name, p in self.guide.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self.diverge(f"parameter {name} is not finite at step {self.step}")
                return False
        return True

    def prune(self) -> None:
        """Remove the units collapsed at the previous check; find the newly collapsed ones."""
        if not self.check_finite():
            return
        self.remove_collapsed()
        self.merge()
        self.collapsed = self.condition(self.guide)
        self.collapsed_step = self.step
        if self.guide.weights != "point":  # the handler is exact for point-mass weights only
            self.remove_collapsed()
        data = float(self.recent_data)
        for name, collapsed in self.collapsed.items():
            left = int((~collapsed).sum())
            if left == 1 and data >= self.constant_nll and self.status == "finished":
                # epochs at chance with every starting unit still in the network: what failed
                # is the learning, not the pruning (a network too narrow, as its dense twin)
                full = [  # (records of runs before mode_widths existed: their widths)
                    r for r in self.history
                    if r.get("mode_widths", r["widths"]) == self.initial_widths
                ]
                never = full and not clearly_learnt(self.best_train_error, self.chance_error)
                self.status, self.status_reason = "collapsed", (
                    f"layer {name} was cut to its last unit at step {self.step} while the data "
                    f"term ({data:.3f} nats per example) was no better than a constant "
                    f"predictor's ({self.constant_nll:.3f})"
                    + ("; no epoch was clearly better: the run never learnt" if never else "")
                )

    def merge(self) -> None:
        """Merge moves (Eq. (14)) on the released layers, once per evidence window of examples.

        A round runs at every ``⌈W_N / (batch · check interval)⌉``-th check, i.e. once per
        window of examples while checks are at most a window apart (the default interval is
        half a window; a longer ``check_every`` gives a round at every check, fewer than one
        per window, and none in a run shorter than one interval), on each layer released at
        least one window earlier (Eq. (14w), ``merge_schedule="window"``): the same rounds at
        the same points of the example clock in every run, each taking only the places the
        gates leave free (Eq. (14t)). With ``merge_schedule="settled"`` (the rule before) a
        layer also waits until its gates have collapsed no unit for one window, so whether a
        round falls before the end of a short run depends on when its gates fall quiet. Each
        round works on a sample
        of up to ``MERGE_SAMPLE`` training examples drawn from a generator seeded by the run's
        seed and the step (so a resumed run draws the same), layers from the input on (a move
        re-wires the consumer, which the next layer's round then sees).
        """
        if self.merges is None or not self.release_steps:
            return
        cfg = self.config
        n = len(self.data.x_train)
        window = self.merge_window_steps()  # a round every window of checks (Eq. (14w))
        if (self.step // self.check_every) % (window // self.check_every):
            return
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        index = torch.randperm(n, generator=gen)[: min(n, MERGE_SAMPLE)].to(self.device)
        x, y = self.data.x_train[index], self.data.y_train[index]
        cache: dict = {}  # what a round's consumer received, for the next layer's round
        for name in self.net.gated:
            if name not in self.release_steps:
                continue
            since = [self.release_steps[name]]
            if cfg.merge_schedule == "settled":  # the gates' last decision, too
                since += [
                    e["collapsed_step"]
                    for e in self.prune_events
                    if e["layer"] == name and not e.get("merged")
                ]
            if self.step - max(since) < window:
                continue
            limit = self.merge_budget(name)
            if limit is not None and limit <= 0:
                continue
            moves, removed = self.merges.layer(name, x, y, cache, limit=limit)
            self.remove_moved(name, moves, removed, merged=True)

    def remove_moved(self, name: str, moves: list, removed: list[int], **mark) -> None:
        """Remove the units a merge round or the settle took from layer ``name`` (``removed``:
        their current indices), as one event with the moves' unit ids in the order they were
        accepted, their ΔF terms summed, and ``mark`` (``merged`` or ``settled``)."""
        if not removed:
            return
        gone = torch.zeros(self.net.width(name), dtype=torch.bool, device=self.device)
        gone[removed] = True
        self.remove(
            name, gone, self.step, unit_ids=[m.unit for m in moves], **mark,
            delta_data=sum(m.delta_data for m in moves),
            delta_prior=sum(m.delta_prior for m in moves),
        )  # fmt: skip

    def settle(self, stop=None, measured=None) -> dict[str, int] | None:
        """The final settle (Eq. (15), ``settle="auto"`` or ``"on"``): after the last epoch,
        each gated layer from the input on (under ``auto`` the cheapest layers whose passes
        together cost at most :data:`SETTLE_SHARE` of the training, :func:`settle_cost_shares`;
        the others are listed in ``settle_skipped``) silences units while that lowers F with
        confidence
        (:meth:`MergeMoves.settle`), measured on up to ``SETTLE_SAMPLE`` training examples drawn
        from a generator seeded by the run's seed; the units go as the gates' and merges' do,
        recorded with ``settled``. Returns how many left each layer (``None``: not settled: the
        option off, weights or a posterior without the prior's closed form, or a run that did
        not finish). ``stop``: a callable asked before each layer and each unit's measurement;
        once it answers True, :class:`~bayesprune.inference.merge.SettleStopped` is raised
        (the layers settled before it are removed from the network in memory: the state to
        continue from is the last epoch's checkpoint, :meth:`interrupt_settle`). ``measured``:
        called before each unit's measurement (the progress bar's count)."""
        if self.config.settle == "off" or self.settler is None or self.status != "finished":
            return None
        n = len(self.data.x_train)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + 999_983)
        index = torch.randperm(n, generator=gen)[: min(n, SETTLE_SAMPLE)].to(self.device)
        x, y = self.data.x_train[index], self.data.y_train[index]
        det = deterministic_network(self.guide)  # what the run would have deployed without it
        self.before_settle = {
            "widths": mode_widths(self.guide),
            "test_error": evaluate(det, self.data.x_test, self.data.y_test),
        }
        shares, spare = {}, 0.0
        if self.config.settle == "auto":
            widths, trained = self.before_settle["widths"], self.config.epochs * n
            shares = settle_cost_shares(det, self.net, widths, len(index), trained)
            self.settle_skipped = over_budget(shares, SETTLE_SHARE)
            kept = [name for name in shares if name not in self.settle_skipped]
            spare = SETTLE_SHARE - sum(shares[name] for name in kept)  # beyond one pass each
        asked = None  # what the settle asks before each unit: count it, and stop?
        if stop is not None or measured is not None:

            def asked():
                if measured is not None:
                    measured()
                return stop is not None and stop()

        out = {}
        for name in self.net.gated:
            if name in self.settle_skipped:
                out[name] = 0
                continue
            if stop is not None and stop():
                raise SettleStopped(name)
            # a pass removes one unit: passes beyond a layer's first are paid from what the
            # budget leaves over, in layer order (each counted at the first's cost)
            passes = 1 + int(max(spare, 0.0) / shares[name]) if shares.get(name) else None
            moves, removed = self.settler.settle(name, x, y, max_passes=passes, stop=asked)
            out[name] = len(removed)
            if passes is not None:
                used = len(removed) + (len(removed) < passes)  # the last found none to remove
                spare -= (used - 1) * shares[name]
                if len(removed) == passes:  # the budget ended it, not the evidence
                    self.settle_stopped[name] = passes
            self.remove_moved(name, moves, removed, settled=True)
        return out

    def merge_window_steps(self) -> int:
        """The steps between merge rounds, one evidence window (Eq. (14w)): ⌈W_N/(B c)⌉ checks
        of c steps."""
        every = checks_per_window(self.config, len(self.data.x_train), self.window)
        return every * self.check_every

    def merge_budget(self, name: str) -> int | None:
        """How many units a merge round may remove from layer ``name`` now (Eq. (14t)), or
        ``None`` for no limit.

        The transit limit (10t) lets at most ⌊t·n⌋ of a layer's n units be away from θ = 1 at
        once, so that the rest carry the function while those are decided. A merge removes a
        unit as surely as a gate does, so a round takes only the places the gates leave free:
        ⌊t·n⌋ minus the units with θ < 1. No limit where the gates have none (t = 1, or θ by
        Adam, which has no transit limit) or with ``merge_budget="none"``.
        """
        cfg = self.config
        if cfg.merge_budget == "none" or cfg.theta_optimizer != "sgd" or cfg.theta_transit >= 1:
            return None
        theta = self.guide.gate_probs(name).detach()
        return int(cfg.theta_transit * theta.numel()) - int((theta < 1).sum())

    def heading_for(self) -> dict[str, torch.Tensor]:
        """Per gated layer, the units whose evidence favours keeping them (d ≤ 0, Eq. (10)).

        d is what θ steps by: m − z·se(m) under Eq. (10s) (the default), m without it. The
        vertex each unit's θ is moving to (θ falls while d > 0); what the merge moves price
        the other layers at (Eq. (14e)). Layers without an evidence average (θ by Adam, or
        before the first step) are left out: priced at every live unit.
        """
        gates = self.optim.gates
        state = {} if gates is None else gates.state
        out = {}
        for name, p in zip(self.net.gated, self.guide.theta_parameters(), strict=True):
            st = state.get(p, {})  # m, or Eq. (10s)'s m − z·se(m), where θ steps by it
            evidence = st.get("decision", st.get("evidence"))
            if evidence is not None:  # sliced with θ at every removal (ProjectedSGD)
                out[name] = evidence.detach() <= 0
        return out

    def remove_collapsed(self) -> dict[str, int]:
        """Physically remove the collapsed units (:meth:`GateGuide.remove_units`); return how
        many left each layer."""
        removed = {name: int(gone.sum()) for name, gone in self.collapsed.items() if gone.any()}
        for name, collapsed in self.collapsed.items():
            self.remove(name, collapsed, self.collapsed_step)
        self.collapsed = {}
        return removed

    def remove(self, name: str, gone: torch.Tensor, collapsed_step, **record) -> None:
        """Remove the units of layer ``name`` marked in the bool mask ``gone`` physically, with
        their optimiser state and pruning counters, and record the event (``record``: extra
        keys, as the merge moves' ``merged``, ``delta_data``, ``delta_prior``)."""
        ids = self.guide.unit_ids(name)[gone].tolist()  # original ids, before the slicing
        keep = torch.nonzero(~gone).flatten()
        self.guide.remove_units(name, keep, [self.optim])
        self.condition.removed(name, keep)
        event = {"step": self.step, "collapsed_step": collapsed_step, "layer": name}
        self.prune_events.append({**event, "removed": len(ids), "unit_ids": ids, **record})

    @torch.no_grad()
    def unit_state(self) -> dict[str, dict[str, list]]:
        """Per gated layer: the units' original ids, θ and weight norms ‖w_s‖ (augmented rows)."""
        names = self.net.gated
        return {
            "unit_ids": {n: self.guide.unit_ids(n).tolist() for n in names},
            "theta": {n: self.guide.gate_probs(n).detach().tolist() for n in names},
            "weight_norm": {n: self.net.row_sq_norms(n).sqrt().tolist() for n in names},
        }

    def trace(self) -> None:
        """Append the unit state and ∂F/∂θ_s / N (the θ-drift of the mean ODE) to traces.jsonl."""
        if self.writer is None:
            return
        n = len(self.data.x_train)
        drift = {}
        grads = self.optim.gate_grads or {}
        for name in self.net.gated:
            grad = grads.get(self.guide.theta_parameters([name])[0])
            drift[name] = None if grad is None else (grad / n).tolist()
        record = {"step": self.step, **self.unit_state(), "theta_grad": drift}
        self.writer.trace(record)

    @float32_by_default
    def fit(
        self, progress: bool = True, run: dict | None = None, write_summary: bool = True
    ) -> dict:
        """Run the configured epochs (from where a restored checkpoint left off); return the
        summary (also written to ``out``). The network is left in evaluation mode, as
        ``model.pt`` holds it, however ``fit`` ends.

        SIGINT and SIGTERM finish the current step, write ``checkpoints/last.pt`` and
        ``summary.json`` with status ``interrupted``, and raise :class:`TrainingInterrupted`;
        during the final settle they stop it before the next unit's measurement, write no
        checkpoint (the last epoch's is where a resume settles again) and raise the same. A
        non-finite objective stops the run with status ``failed`` (the last good checkpoint
        stays; no ``model.pt``); a run that ends ``failed`` or ``collapsed`` also raises a
        ``RuntimeWarning`` saying why. An exception inside training marks ``summary.json``
        ``error`` (with the exception; the checkpoints stay, and ``--resume`` continues from the
        last) before it propagates, an ``OSError`` (a full disk) leaves it ``running``. The run
        directory is held while ``fit`` runs (:func:`bayesprune.runs.hold_run_directory`). A
        ``Trainer`` runs once: a second ``fit`` is a ``RuntimeError``.

        :param run: extra settings recorded in ``config.json`` under ``"run"`` (what the CLI
            needs to rebuild the data and network on ``--resume``).
        :param write_summary: write the final ``summary.json`` (``False``: the caller writes it
            once its own files are complete, so that it stays the last file written).
        """
        if self.fitted:
            raise RuntimeError(
                f"this Trainer has already run its {self.config.epochs} epochs (status "
                f"{self.status!r}); its summary was returned by fit(). To train again, build a "
                "new Trainer (and a new network)"
            )
        if self.started:  # stopped by a signal or an error: its state is that of a cut run
            raise RuntimeError(  # (its status is the health check's, "finished" until then)
                f"this Trainer's run stopped at step {self.step}, before it ended (a signal or "
                "an error); continue it from its checkpoint with Trainer.resume(out, "
                "data), or build a new Trainer (and a new network)"
            )
        rng = global_rng_state()  # the caller's random streams, given back when fit ends
        try:
            steps = self.begin(run, write_summary)
            self.started = True  # (a refused start, e.g. a directory in use, is not a start)
            if getattr(self.net, "trained_by_a_trainer", None) is None:
                self.net.trained_by_a_trainer = list(self.initial_widths)
            summary = self._fit(steps, progress)
        except (TrainingInterrupted, OSError):  # (the disk filled up: the run resumes)
            raise
        except BaseException as error:  # a run that stopped on an error does not read "running"
            if self.writer is not None and holds_run_directory(self.writer.path):
                # "error", not "failed": the checkpoints are good (an out-of-memory error, a
                # driver's), and --resume continues from the last one, as after a signal; a
                # KeyboardInterrupt or a signal the command line turned into an exception
                # (one landing after the last step) is "interrupted"
                signum = getattr(error, "signum", None)
                name = signal.Signals(signum).name if isinstance(signum, int) else None
                name = name or type(error).__name__
                if isinstance(error, Exception):
                    status, why = "error", f"{name} at step {self.step}: {error}"
                else:
                    status, why = "interrupted", f"{name} at step {self.step}"
                self.writer.summary(
                    {
                        "status": status,
                        "status_reason": why,
                        "step": self.step,
                        "epoch": self.epoch,
                    }
                )
            raise
        finally:
            # the trained network as model.pt holds it, however fit ends: BatchNorm reads its
            # running statistics (left in training mode, a user's net(x) normalised by the
            # batch and moved them)
            self.net.eval()
            if self.held_here:  # free again once fit returns (a caller's own hold stays)
                release_run_directory(self.writer.path)
                self.held_here = False
                if self.hold_finalizer is not None:
                    self.hold_finalizer.detach()
            set_global_rng_state(rng)
        self.fitted = True
        if summary["status"] != "finished":  # never a normal-looking return of a broken run
            where = f"{self.writer.path}, " if self.writer is not None else ""
            warnings.warn(  # (naming the run and seed: a sweep's repeats are not filtered out)
                f"the run {summary['status']}: {summary['status_reason']} (summary['status']; "
                f"{where}seed {self.config.seed})",
                RuntimeWarning,
                stacklevel=2,
            )
        return summary

    def _fit(self, steps: int, progress: bool) -> dict:
        """:meth:`fit`'s epochs, after :meth:`begin`."""
        cfg = self.config
        n = len(self.data.x_train)
        if self.resumed is None:
            pyro.set_rng_seed(cfg.seed)
        else:  # the streams of the checkpoint, where the run left them
            self.install_saved_rng()
        start = time.perf_counter()
        with pyro.validation_enabled(False), StopSignals() as stop:
            bar = tqdm(  # no bar where stderr is not a terminal (a log file: tqdm's None)
                total=self.total_steps, disable=None if progress else True, desc="train",
                unit="step",
            )
            bar.update(self.step)
            while self.epoch < cfg.epochs and self.status != "failed":
                if self.position == 0:  # a new epoch: its order of examples and its sums
                    self.start_epoch(torch.randperm(n, device=self.device))
                elif self.timed_from != self.position:  # resumed mid-epoch: timed from here
                    self.epoch_start, self.timed_from = time.perf_counter(), self.position
                for x, y, idx in batches(
                    self.data, cfg.batch_size, self.device, perm=self.perm, start=self.position
                ):
                    terms = self.timed_step(x, y, idx)
                    self.position += 1
                    if self.status == "failed":
                        break
                    self.count_step(terms)
                    bar.update(1)
                    if stop.signal is not None:
                        bar.close()
                        self.interrupt(stop.signal)
                if self.status == "failed":
                    break
                self.end_epoch(steps, bar)
            bar.close()
            if stop.signal is not None:
                if self.status == "failed":  # it ends now anyway, as failed: say that (passed
                    stop.signal = None  # on, the signal would end it before its summary)
                else:  # it came while the last epoch was evaluated and saved: no step followed
                    # to see it, and a run told to stop must not go on to its report as finished
                    self.interrupt(stop.signal)
            # units found collapsed at the last pruning check (removed at the next one) leave
            # now: after the last epoch's record, so summary.json's widths can be below
            # metrics.jsonl's last ones
            self.removed_at_end = self.remove_collapsed()
            settle_start = time.perf_counter()
            # the settle can take a quarter of the training's time (Eq. (15c)), more under
            # --settle on: a bar of the units it has measured, where the training's bar shows,
            # made at the first unit (none where no layer is settled)
            bar = []

            def measured():
                if not bar:
                    bar.append(tqdm(desc="settle", unit="unit",
                                    disable=None if progress else True))  # fmt: skip
                bar[0].update(1)

            try:  # a signal stops the settle between two units' measurements, not after all
                self.settled = self.settle(stop=lambda: stop.signal is not None, measured=measured)
            except SettleStopped:
                self.interrupt_settle(stop.signal)
            finally:
                for b in bar:
                    b.close()
            self.settle_seconds = time.perf_counter() - settle_start
        wall = self.wall + time.perf_counter() - start - self.bookkeeping
        return self.finish(wall, self.step_seconds(), self.bookkeeping)

    def timed_step(self, x, y, index) -> dict[str, torch.Tensor]:
        """:meth:`train_step`, timed while the network is at full width (the first 60 steps
        only: a GPU synchronises for the timing)."""
        timed = len(self.step_times) < 60 and not self.prune_events
        t0 = time.perf_counter()
        terms = self.train_step(x, y, index)
        if timed:
            synchronize(self.device)
            self.step_times.append(time.perf_counter() - t0)
        return terms

    def step_seconds(self) -> float:
        """The mean full-width step time, the first 5 (warm-up) steps left out."""
        steady = self.step_times[5:] or self.step_times
        return sum(steady) / max(len(steady), 1)

    def begin(self, run: dict | None, write_summary: bool) -> int:
        """Before the first step of this process's part of the run: the number of steps, the
        schedule, ``config.json`` (a new run) or a ``running`` summary (a resumed one).
        Returns the steps per epoch."""
        cfg = self.config
        self.write_summary = write_summary
        steps = steps_per_epoch(self.data, cfg.batch_size)
        self.total_steps = steps * cfg.epochs
        if self.schedule is None:
            self.schedule = lr_schedule(self.optim.weights, cfg.lr_schedule, self.total_steps)
        if self.writer is not None:
            if self.resumed is None:
                self.writer.start(self.resolved_config(run), hold=self.hold)
            else:
                self.hold(self.writer.path)  # before anything is written
                self.writer.summary({"status": "running", "resumed_at_step": self.step})
        return steps

    def hold(self, path) -> None:
        """Hold the run directory while this trainer writes it (one writer per run)."""
        if hold_run_directory(path):
            self.held_here = True

    def start_epoch(self, perm: torch.Tensor) -> None:
        """A new epoch: its order of examples ``perm`` and its sums."""
        self.net.train()
        self.perm = perm
        self.sums = {k: torch.zeros((), device=self.device) for k in ("data", "prior")}
        self.epoch_start, self.timed_from = time.perf_counter(), 0

    def count_step(self, terms: dict) -> None:
        """Add a finished step's objective terms to the epoch's sums (mean per example)."""
        n = len(self.data.x_train)
        self.sums["data"] += terms["data"] / n
        self.sums["prior"] += terms["prior"] / n

    def end_epoch(self, steps: int, bar=None) -> None:
        """Log the epoch (on the progress ``bar`` if any), check the run's health, write its
        record and its checkpoint."""
        log_start = time.perf_counter()
        synchronize(self.device)
        self.epoch += 1
        self.position = 0
        record = self.epoch_record(self.epoch, self.sums, steps, self.epoch_start)
        record["train_seconds"] = log_start - self.epoch_start  # the epoch's steps only
        if bar is not None:
            # the deployed (posterior-mode) network's error and widths, side by side
            mode = record.get("mode_widths", record["widths"])
            bar.set_postfix(err=f"{100 * record['test_error']:.2f}%", widths=mode)
        if self.echo:
            tqdm.write(self.format_record(record))
        self.history.append(record)
        self.check_health(record)
        if self.writer is not None:
            self.writer.epoch(record)
            self.writer.checkpoint(f"epoch_{self.epoch:03d}", self.checkpoint_state())
        self.bookkeeping += time.perf_counter() - log_start

    def interrupt(self, signum: int) -> None:
        """Checkpoint the state after the current step, mark the run interrupted, and stop."""
        path = None
        if self.writer is not None:
            path = self.writer.checkpoint("last", self.checkpoint_state())
            self.mark_interrupted(signum, checkpoint=path)
        raise TrainingInterrupted(signum, self.step, path)

    def interrupt_settle(self, signum: int) -> None:
        """A signal during the final settle: mark the run interrupted and stop. No checkpoint
        of the partly settled network is written: ``--resume`` continues from the last
        epoch's (the network the settle started from, :func:`~bayesprune.runs.latest_state`)
        and settles it again, with the same sample, so that it ends on the network of the run
        that was not stopped."""
        path = None
        if self.writer is not None:
            path = self.writer.path / "checkpoints" / f"epoch_{self.epoch:03d}.pt"
            if self.resumed_from is not None and self.resumed == self.step:
                # resumed at the last step (from last.pt, where a signal came as the last epoch
                # was saved): that file, which latest_state prefers at a tie, is the one
                path = Path(self.resumed_from)
            detail = "in the final settle; a resume settles again from the last epoch's checkpoint"
            self.mark_interrupted(signum, checkpoint=path, detail=detail)
        raise TrainingInterrupted(signum, self.step, path, where="in the final settle")

    def mark_interrupted(self, signum: int, checkpoint=None, detail: str | None = None) -> None:
        """``summary.json`` of a run a signal stopped: ``interrupted``, at which step, and its
        checkpoint (a data-parallel run keeps none of the step: ``detail`` says where it goes
        on from)."""
        reason = f"{signal.Signals(signum).name} at step {self.step}"
        record = {
            "status": "interrupted",
            "status_reason": reason if detail is None else f"{reason} ({detail})",
            "step": self.step,
            "epoch": self.epoch,
        }
        if checkpoint is not None:
            record["checkpoint"] = str(checkpoint)
        record["note"] = self.data_note  # (the end-of-run notes need a finished run)
        self.writer.summary(record)

    def resolved_config(self, run: dict | None = None) -> dict:
        """config.json: the settings as used (τ(N), c and m resolved), the run's extra settings,
        the data's provenance and the versions of the software."""
        return {
            **asdict(self.config),
            "temperature": self.hyper.temperature,
            "check_every": self.check_every,
            "patience": self.condition.patience,
            # the thread count a resume computes with (the command line's run adds its flags)
            "run": {"threads": torch.get_num_threads(), **(run or {})},
            "run_id": self.run_id,
            "initial_spec": self.initial_spec,
            "data": {
                **self.data_identity(),
                "name": self.data.name,
                "source": self.data.meta.get("source"),
                "files": self.data.meta.get("files", []),
                # x = (pixel / 255 − mean) / std, what a deployed network must be given
                "normalisation": self.data.meta.get("normalisation"),
                "train_examples": len(self.data.x_train),
                "test_examples": len(self.data.x_test),
            },
            "versions": versions(),
        }

    def data_identity(self) -> dict:
        """What identifies data that no files do (a user's own tensors, the teacher's): their
        SHA-256, which :meth:`resume` checks; nothing for data read from files (hashed)."""
        return {} if self.data.meta.get("files") else {"tensors_sha256": tensors_sha256(self.data)}

    def epoch_record(self, epoch, sums, steps, epoch_start) -> dict:
        # the steps this process timed: a resumed epoch's from the resume on
        steps_per_second = (steps - self.timed_from) / (time.perf_counter() - epoch_start)
        thetas = torch.cat([self.guide.gate_probs(n).detach() for n in self.net.gated])
        det = deterministic_network(self.guide)
        return {
            "epoch": epoch,
            "step": self.step,
            "data_term": float(sums["data"]) / steps,
            "prior_term": float(sums["prior"]) / steps,
            "test_error": evaluate(det, self.data.x_test, self.data.y_test),
            "train_error": evaluate(
                det,
                self.data.x_train[:TRAIN_ERROR_EXAMPLES],
                self.data.y_train[:TRAIN_ERROR_EXAMPLES],
            ),
            "widths": list(self.net.widths),
            # the network the errors are of: units with θ ≥ ½ (at least one per layer)
            "mode_widths": mode_widths(self.guide),
            **self.unit_state(),
            "slab_var": {n: float(self.guide.slab_var(n)) for n in self.net.layers},
            "gates_binary_fraction": binary_fraction(thetas),
            "steps_per_second": steps_per_second,
        }

    @staticmethod
    def format_record(r: dict) -> str:
        mode = r.get("mode_widths", r["widths"])  # the test error's network, if it differs
        return (
            f"epoch {r['epoch']:3d}  data {r['data_term']:.4f}  prior {r['prior_term']:.4f}  "
            f"test err {100 * r['test_error']:.2f}%  widths {r['widths']}"
            + (f" (mode {mode})" if mode != r["widths"] else "")
            + "  "
            f"binary {r['gates_binary_fraction']:.3f}  {r['steps_per_second']:.0f} steps/s"
        )

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs to continue bitwise as if never stopped.

        The network's shape and the guide (parameters, θ, σ̂₁², unit ids), the optimisers'
        moments and evidence, the schedule, the pruning counters and collapsed units, the
        trainer's clocks (epoch, position in the epoch and its order of examples, step, warm-up
        block, release), its records, and the random states of torch, numpy and Python. Only
        tensors and plain containers: it loads with ``weights_only=True``.
        """
        np_state = np.random.get_state()
        return {
            "run_id": self.run_id,
            "epoch": self.epoch,
            "position": self.position,
            "perm": self.perm if self.position else None,
            "sums": self.sums if self.position else None,
            "step": self.step,
            "widths": self.net.widths,
            "net_spec": self.net.spec(),
            "guide": self.guide.state_dict(),
            "optim": self.optim.get_state(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "condition": dict(self.condition.counts),
            "collapsed": dict(self.collapsed),
            "trainer": {
                "collapsed_step": self.collapsed_step,
                "warm_step": self.warm_step,
                "block": dict(self.block),
                "examples_released": self.examples_released,
                "release_steps": dict(self.release_steps),
                "recent_data": self.recent_data,
                "best_train_error": self.best_train_error,
                "status": self.status,
                "status_reason": self.status_reason,
                "history": self.history,
                "prune_events": self.prune_events,
                "merge_tests": None if self.merges is None else dict(self.merges.tests),
                "initial_widths": self.initial_widths,
                "initial_spec": self.initial_spec,
                "initial": self.initial,
                "wall": self.wall + time.perf_counter() - self.clock_start,
                "bookkeeping": self.bookkeeping,
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
                "python": random.getstate(),
            },
        }

    @classmethod
    def resume(
        cls,
        out,
        data: Dataset,
        config: TrainConfig | None = None,
        write: bool = True,
    ) -> Trainer:
        """A ``Trainer`` that continues the run in ``out`` from its newest checkpoint, on
        ``data``: the dataset it started with (before its ``train_subset``, which the run draws
        again), checked against what ``config.json`` recorded (name, sizes, the files' SHA-256).
        Its ``fit()`` ends on the network an uninterrupted run would have (the same thread
        count: ``torch.set_num_threads``). What ``bayesprune train --resume`` does for a run
        started from the command line; for one started from Python, ``data`` is the
        ``Dataset`` that was given to its ``Trainer``.

        :param config: the run's settings (default: its ``config.json``'s); the command line
            passes them with ``device`` changed.
        :param write: this process writes the run (``False``: the other processes of a
            data-parallel run, which write nothing).
        :raises RunError: the run ended, has no checkpoint, another process writes it, or
            ``data`` is not the run's.
        """
        out = Path(out)
        raw = read_config(out)
        held = write and hold_run_directory(out)  # before anything is truncated
        try:
            check_resumable(out)
            try:
                recorded = TrainConfig.from_record(raw)
            except ValueError as err:  # a config.json edited by hand
                raise RunError(f"{out}/config.json: {err}") from None
            # config.json holds the settings as resolved (τ(N) with its price scale, the check
            # interval and patience): a given config is compared as given, those as resolved
            resolved = ("device", "temperature", "price_scale", "check_every", "patience")
            differ = [
                f"{f.name} {getattr(config, f.name)!r} (the run's: {getattr(recorded, f.name)!r})"
                for f in fields(TrainConfig)
                if config is not None and f.name not in resolved
                and getattr(config, f.name) != getattr(recorded, f.name)
            ]  # fmt: skip
            for name in ("check_every", "patience"):
                given = None if config is None else getattr(config, name)
                if given is not None and given != getattr(recorded, name):
                    differ.append(f"{name} {given!r} (the run's: {getattr(recorded, name)!r})")
            threads = (raw.get("run") or {}).get("threads")
            if isinstance(threads, int) and threads != torch.get_num_threads():
                warnings.warn(
                    f"this process computes with {torch.get_num_threads()} threads, run {out} "
                    f"started with {threads}: products split across threads round differently, "
                    f"so it can end apart from the uninterrupted run (torch.set_num_threads"
                    f"({threads}) first to continue it exactly)",
                    UserWarning,
                    stacklevel=2,
                )
            state, path = latest_state(out, raw)
            net = GatedNet.from_spec(state["net_spec"])
            run_config = recorded if config is None else replace(recorded, device=config.device)
            trainer = cls(net, data, run_config, out=out if write else None)
            if config is not None:  # τ as the given config would make it for these data
                tau = config.hyper(len(trainer.data.x_train)).temperature
                if recorded.temperature is not None and not math.isclose(
                    tau, recorded.temperature, rel_tol=1e-9
                ):
                    differ.append(f"τ {tau!r} (the run's: {recorded.temperature!r})")
            if differ:  # config.json would describe a run that did not happen
                raise RunError(
                    f"run {out} goes on with its own settings; these differ: {'; '.join(differ)}"
                )
            check_run_data(out, raw.get("data") or {}, trainer.data)
            if write:
                RunWriter(out).truncate(state["epoch"], state["step"])
            trainer.restore(state)
        except BaseException:
            if held:
                release_run_directory(out)
            raise
        trainer.held_here, trainer.resumed_from = held, path
        if held:  # a resumed trainer dropped without fit() lets go of the directory too (and
            # fit, which lets go itself, detaches this, so that it never frees a later hold)
            trainer.hold_finalizer = weakref.finalize(trainer, release_run_directory, out)
        return trainer

    def restore(self, state: dict) -> None:
        """Continue from :meth:`checkpoint_state` (the network must already have its shape)."""
        self.guide.load_state_dict(state["guide"])
        self.optim.set_state(state["optim"])
        self.use_saved_window()
        self.epoch, self.position, self.step = state["epoch"], state["position"], state["step"]
        self.perm, self.sums = state["perm"], state["sums"]
        if self.sums is not None:  # checkpoints load on the CPU; the sums live on the device
            self.sums = {k: v.to(self.device) for k, v in self.sums.items()}
        steps = steps_per_epoch(self.data, self.config.batch_size)
        self.total_steps = steps * self.config.epochs
        self.schedule = lr_schedule(self.optim.weights, self.config.lr_schedule, self.total_steps)
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.condition.counts = dict(state["condition"])
        self.collapsed = dict(state["collapsed"])
        t = state["trainer"]
        self.collapsed_step, self.warm_step = t["collapsed_step"], t["warm_step"]
        self.block = dict(t["block"])
        self.block["sum"] = self.block["sum"].to(self.device)
        self.examples_released, self.release_steps = t["examples_released"], t["release_steps"]
        self.recent_data, self.best_train_error = t["recent_data"], t["best_train_error"]
        if torch.is_tensor(self.recent_data):
            self.recent_data = self.recent_data.to(self.device)
        self.status, self.status_reason = t["status"], t["status_reason"]
        self.history, self.prune_events = list(t["history"]), list(t["prune_events"])
        if self.merges is not None:  # checkpoints before the per-unit tests: none counted
            self.merges.tests = dict(t.get("merge_tests") or {})
        self.initial_widths, self.initial = t["initial_widths"], dict(t["initial"])
        if "macs" not in self.initial:  # checkpoints before the key's name said what it counts
            self.initial["macs"] = self.initial.pop("flops")
        self.initial_spec = t.get("initial_spec")  # None in checkpoints before it was kept
        self.run_id = state.get("run_id")
        self.wall, self.bookkeeping = t["wall"], t["bookkeeping"]
        # the random streams the run goes on with, installed when fit starts (not now: the
        # caller's own streams stay theirs until then, and come back when fit ends)
        self.saved_rng = state["rng"]
        self.resumed = self.step

    def install_saved_rng(self) -> None:
        """Put the checkpoint's random streams (:meth:`restore`) into the global generators."""
        rng = self.saved_rng
        name, keys, *rest = rng["numpy"]  # numpy's keys saved as a tensor
        numpy_state = (name, keys.numpy(), *rest)
        set_global_rng_state((rng["python"], numpy_state, rng["torch"], rng["cuda"]))

    def use_saved_window(self) -> None:
        """Go on with the evidence window W_N the run started with (Eq. (10n)).

        The θ optimiser's restored state holds the window its evidence averaged over (torch
        optimisers restore their groups' settings with their moments). A run saved by a version
        whose W_N differed (before the cap at N, or before the 10-step floor beyond W) would
        otherwise average its evidence over the old window and space its releases, checks and
        merge rounds by the new one: every clock keeps the saved window instead, so the resumed
        run continues the rule it trained with.
        """
        groups = [] if self.optim.gates is None else self.optim.gates.param_groups
        saved = groups[0].get("window") if groups else None
        if saved is None or saved == self.window:
            return
        n = len(self.data.x_train)
        self.window = float(saved)
        self.check_every = check_interval(self.config, n, self.window)
        self.condition.patience = pruning_patience(self.config, n, self.window)

    def undecided(self) -> tuple[list[str], str | None]:
        """The gated layers whose θ never moved in this run, and a one-line note saying why
        (or, when every layer moved, :meth:`in_transit_note`).

        The rule decides on evidence only (Eqs. (10w), (10o)): θ waits until the data term has
        settled (two or more blocks of min(N, W) examples) with at least :data:`LEARNT_FLOOR`
        of the constant predictor's loss learnt, and each earlier layer one evidence
        window after its consumer. A run shorter than that ends with those layers at their
        starting width; that is not a failure, but a user who asked for pruning must be told.
        """
        undecided = [n for n in self.net.gated if n not in self.release_steps]
        if self.status != "finished":
            return undecided, None
        if not undecided:
            return undecided, self.in_transit_note()
        advice = "train for more epochs to prune them"
        # the last two whole blocks' data terms per example: a run whose data term stopped
        # falling short of (10w)'s floor is not too short, more epochs will not prune it
        last, before = self.block["previous"], self.block.get("before")
        floor = self.learnt_floor
        stalled = (
            self.warm_step is None and before is not None
            and self.constant_nll - last < floor
            and before - last < self.config.warmup_tolerance * floor
        )  # fmt: skip
        if stalled:
            why = (f"the data term stopped falling with the network having learnt less than "
                   f"{LEARNT_FLOOR:.0%} of a constant predictor's loss "
                   f"({self.constant_nll - last:.3f} of {self.constant_nll:.3f} nats per "
                   "example), too little to read any unit's worth from, so the evidence rule "
                   "(docs/method.md Eq. (10w)) never let θ move")  # fmt: skip
            advice = ("more epochs prune them only if the network learns more "
                      "(--warmup-tolerance none lets θ move from the first step)")  # fmt: skip
        elif self.warm_step is None:
            why = ("the data term was still falling at the end of the run, so the evidence rule "
                   "(docs/method.md Eq. (10w)) never let θ move")  # fmt: skip
        else:
            why = ("each layer is released one evidence window of examples after the layer it "
                   "feeds (Eq. (10o)), and the run ended first")  # fmt: skip
        note = (f"no pruning decision on {', '.join(undecided)} (left at full width): {why}; "
                f"{advice}")  # fmt: skip
        return undecided, note

    def early_note(self) -> str | None:
        """A note when θ started to move after fewer than :data:`EARLY_STEPS` optimiser steps.

        The warm-up's clock counts examples (Eq. (10w)), so at a large batch its blocks are a
        few steps each, and the units are decided on a network that Adam has moved only a few
        times (its first moment has a time constant of 1/(1 − β₁) = 10 steps; SGD's momentum
        buffer at the default 0.9 the same; at another momentum the note still counts 20 steps):
        docs/method.md
        §6i measured +2 points at batch 4,096 and +9 at 8,192 against dense while the evidence
        windows were 1-2 steps, §6l +1.1 and +0.3 with windows of 10 steps. Not a failure, but
        the user must be told. No note when the user switched the warm-up off, nor on a run
        that failed (its status says more).
        """
        if self.status != "finished" or self.config.warmup_tolerance is None:
            return None
        if self.warm_step is None:
            return None
        if self.warm_step >= EARLY_STEPS or not self.release_steps:
            return None
        batch = self.config.batch_size if self.global_batch is None else self.global_batch
        batch = min(batch, len(self.data.x_train))  # a batch beyond N: a step takes all N
        return (f"θ started to move after {self.warm_step} optimiser steps (batch {batch}), on a "
                "barely trained network: the pruned network then has few steps to re-fit, which "
                "at large batches has cost up to a point of accuracy (docs/method.md §6i, §6l); a "
                "smaller batch or more epochs decide on a trained one")  # fmt: skip

    def near_start_note(self, widths: list[int]) -> tuple[list[str], str | None]:
        """The decided layers that kept at least :data:`NEAR_START` of their starting units in
        the deployed network (``widths``: the posterior mode's, as in ``summary.json``), and a
        note naming them.

        A pruning rule can only remove units. Where a layer's width under the price (the one
        at which a unit's value, the others re-fitting, equals its price) is above the width it
        started at, every unit is worth keeping and the layer ends about where it started: the
        start chose its width, not the evidence, and a wider start ends wider
        (docs/method.md §6n: dense networks trained from scratch put LeNet-300-100's second
        layer at 200 units or more on Fashion-MNIST, above its 100-unit start, while its first
        layer's is 50-85, inside every start). Not a failure, but a user who wants the price to
        choose the width must be told that a wider start may end wider. Keeping 90% or more is
        the symptom this reports (a reporting constant, not a decision): in the matrix
        LeNet-300-100 keeps 9-39% of its first layer and 41-94% of its second, LeNet-5 95-100%
        of conv1 (whose evidence keeps 34-37 of 40 filters from twice the width, §6zzc), and
        the teacher 47-50% of its first layer from 300 (88-91% with group moves off) and all of
        it from 32. Layers of one unit
        and undecided layers (their own note) are left out; so is a run that did not finish.
        """
        if self.status != "finished":
            return [], None
        near = [
            (name, width, start)
            for name, width, start in zip(self.net.gated, widths, self.initial_widths, strict=True)
            if name in self.release_steps and start > 1 and width >= NEAR_START * start
        ]
        if not near:
            return [], None
        kept = ", ".join(f"{name} {width} of {start}" for name, width, start in near)
        groups = ""
        if self.merges is not None and not self.merges.groups:  # the other cause (§6zb)
            groups = (
                "; or its units are cheap (few inputs each) and redundant only jointly, which "
                "no single merge move can take over: --merge-groups on tests them in groups "
                "(§6zb)"
            )
        return [name for name, _, _ in near], (
            f"kept {kept} starting units: a layer that keeps nearly all of them may have started "
            "narrower than the price would make it, and then its width is the start's rather "
            f"than the evidence's (docs/method.md §6n); a wider start may end wider{groups}"
        )

    def leaving(self) -> dict[str, int] | None:
        """Per released layer, how many of the deployed units (θ ≥ ½) had evidence below their
        price at the end (d > 0 in Eq. (10), d = m − z·se under (10s)): units whose θ was
        falling, or held at 1 because the transit limit (10t) was full. At the rule's fixed
        point there are none (every kept unit has d ≤ 0), so a count says that the layer was
        still shrinking when the run ended. Layers without any are left out. ``None`` (not
        measured) for a run that did not finish (its evidence may not be finite) or whose θ
        keeps no evidence average (``--theta-optimizer adam``)."""
        keeping = self.heading_for()
        if self.status != "finished" or not keeping:
            return None
        out = {}
        for name in self.net.gated:
            if name not in self.release_steps or name not in keeping:
                continue
            count = int((~keeping[name])[mode_units(self.guide, name)].sum())  # deployed ones
            if count:
                out[name] = count
        return out

    def shrinking(self, counts: dict[str, int] | None, widths: list[int], tail: int = 0,
                  describe=None):  # fmt: skip
        """``(named, which)`` for a note on layers still shrinking at the end: the layers of
        ``counts`` with more than ``tail`` units, each as "fc1 9 of 47" (``widths``: the
        deployed ones; ``describe(layer, count, deployed)`` words it otherwise, for units that
        are not among the deployed), and "that layer was" or "those layers were"; ``None`` for
        a run that did not finish or when those units are not more than 1% of the deployed
        ones."""
        counts = {n: k for n, k in (counts or {}).items() if k > tail}
        if not counts or self.status != "finished" or sum(counts.values()) <= 0.01 * sum(widths):
            return None
        width = dict(zip(self.net.gated, widths, strict=True))
        joint = ", " if describe is None else "; "
        describe = describe or (lambda n, k, deployed: f"{n} {k} of {deployed}")
        named = joint.join(describe(n, k, width[n]) for n, k in counts.items())
        return named, "that layer was" if len(counts) == 1 else "those layers were"

    def leaving_note(self, leaving: dict[str, int] | None, widths: list[int]) -> str | None:
        """A note when more than 1% of the deployed units were still leaving at the end
        (:meth:`leaving`): the widths are the run length's, not yet the evidence's."""
        said = self.shrinking(leaving, widths)
        if said is None:
            return None
        named, which = said
        return (f"units of the deployed network still had evidence below their price at the end "
                f"({named}): their θ was falling or held at 1 by the transit limit "
                f"(docs/method.md Eq. (10t)), so {which} still shrinking; "
                f"{self.more_epochs_advice()}")  # fmt: skip

    def merged_at_end(self) -> dict[str, int] | None:
        """Per layer, the units merge moves (Eq. (14)) removed in the run's last evidence window
        (the last round of the fixed clock (14w) and any in the same window): a layer whose
        rounds were still taking units when the run ended was still shrinking, as one with
        units leaving by their gates (:meth:`leaving`). Layers without any are left out;
        ``None`` for a run without merge moves or that did not finish."""
        if self.merges is None or self.status != "finished":
            return None
        return {n: k["merges"] for n, k in self.removed_in_last_window().items() if k["merges"]}

    def removed_in_last_window(self) -> dict[str, dict[str, int]] | None:
        """Per layer with any, the units removed in the run's last evidence window (the steps
        of :meth:`merge_window_steps` before the last), by their gates and by merge moves:
        ``{"fc1": {"gates": 5, "merges": 2}}``; ``None`` for a run that did not finish."""
        if self.status != "finished":
            return None
        window = self.merge_window_steps()
        out: dict[str, dict[str, int]] = {}
        for event in self.prune_events:
            if event["step"] > self.step - window and not event.get("settled"):
                counts = out.setdefault(event["layer"], {"gates": 0, "merges": 0})
                counts["merges" if event.get("merged") else "gates"] += event["removed"]
        return out

    def shrinking_note(self, removed: dict[str, dict[str, int]] | None, widths: list[int]):
        """A note naming the layers that lost more than one unit by their gates, or more than
        one by merge moves, in the last evidence window (:meth:`removed_in_last_window`), when
        those layers' removals are more than 1% of the deployed units; each layer's count is
        both kinds together. One unit of each kind is the tail a settled layer's repeated
        tests still allow (Eqs. (10s), (14a)): the default runs' last windows take 0 or 1 of
        each, and get no note. The first version counted merge moves only, and named a layer
        that lost 7 units as losing 2."""
        if self.status != "finished" or not removed:
            return None
        named = {n: k for n, k in removed.items() if k["gates"] > 1 or k["merges"] > 1}
        kinds = [("by their gates", "gates"), ("by merge moves", "merges")]

        def describe(n, k, deployed):  # the removed units are not among the deployed ones
            how = " and ".join(f"{named[n][key]} {words}" for words, key in kinds if named[n][key])
            return f"{n}: {k} removed, {how}, beside {deployed} deployed"

        said = self.shrinking(
            {n: k["gates"] + k["merges"] for n, k in named.items()}, widths, describe=describe
        )
        if said is None:
            return None
        names, which = said
        return (f"units were removed in the run's last evidence window ({names}), so {which} "
                f"still shrinking; {self.more_epochs_advice()}")  # fmt: skip

    def more_epochs_advice(self) -> str:
        """What a note on a layer still shrinking at the end advises: more epochs, unless the
        training set was learnt by heart (at most :data:`BY_HEART` of its examples wrong at the
        last epoch), where more epochs go on removing units without settling
        (docs/method.md §6zm)."""
        last = self.history[-1].get("train_error") if self.history else None
        if last is not None and last <= BY_HEART:
            return (f"the training set was learnt by heart by then (training error "
                    f"{last:.1%}), and there more epochs go on removing units rather than "
                    "settle them (docs/method.md §6zm): choose the epochs by held-out error "
                    "(bayesprune baseline trains the dense twin to compare with)")  # fmt: skip
        return "train for more epochs for the final width"

    def in_transit_note(self) -> str | None:
        """A note when more than 1% of the gates end between 0 and 1 (P1 not reached).

        Every layer was released, but the run ended while units were on their way (the transit
        limit (10t) lets half of a layer go at a time, and a few hundred steps on a small data
        set may not finish the last half): the deployed network is the posterior mode, so the
        user must be told that some of its units were kept or dropped by θ ≷ ½, not decided.
        """
        thetas = torch.cat([self.guide.gate_probs(n).detach() for n in self.net.gated])
        moving = int(in_between(thetas).sum())
        if moving <= 0.01 * thetas.numel():
            return None
        return (f"{moving} of {thetas.numel()} gates were still between 0 and 1 at the end "
                "(a finished decision has at least 99% at 0 or 1, docs/method.md P1): the "
                "network kept the units with θ ≥ ½; train for more epochs for a final decision")

    def finish(self, wall: float, step_seconds: float, bookkeeping: float = 0.0) -> dict:
        """Write ``summary.json`` and ``model.pt``.

        ``wall`` is the training time without the per-epoch evaluation, logs and checkpoints
        (``bookkeeping``, reported apart), which the dense baseline does not do.
        """
        det = deterministic_network(self.guide)
        last = max((e["step"] for e in self.prune_events), default=0)
        steps_per_epoch = self.total_steps / self.config.epochs
        thetas = torch.cat([self.guide.gate_probs(n).detach() for n in self.net.gated])
        summary = summarize(
            det,
            arch=getattr(self.net, "arch", "mlp"),
            dataset=self.data.name,
            seed=self.config.seed,
            epochs=self.config.epochs,
            initial_widths=self.initial_widths,
            initial=self.initial,
            in_shape=self.net.in_shape,
            test_error=evaluate(det, self.data.x_test, self.data.y_test),
            last_prune_epoch=(last / steps_per_epoch) if last else 0.0,
            gates_binary_fraction=binary_fraction(thetas),
            train_wall_seconds=wall,
            bookkeeping_seconds=bookkeeping,
            step_seconds_full_width=step_seconds,
        )
        summary["prune_events"] = self.prune_events
        summary["removed_at_end"] = self.removed_at_end
        summary["settled"] = self.settled
        summary["settle_seconds"] = self.settle_seconds
        summary["settle_skipped"] = self.settle_skipped
        summary["settle_stopped"] = self.settle_stopped
        summary["before_settle"] = self.before_settle
        summary["total_steps"] = self.total_steps
        # the layout --memory-format auto chose here (config.json records "auto")
        summary["memory_format_used"] = "channels-last" if self.channels_last else "contiguous"
        summary["status"] = self.status
        summary["status_reason"] = self.status_reason
        if self.status == "collapsed":  # read at chance before the last epoch: learnt again?
            errors = [(r["epoch"], r["train_error"]) for r in self.history]
            at, _ = first_chance_collapse([e for _, e in errors], self.chance_error)
            if at is not None:
                summary["status_reason"] += learnt_again(errors[at:], self.chance_error)
        summary["train_subset"] = self.data.meta.get("train_subset")
        summary["evidence_examples"] = self.data.meta.get("evidence_examples")  # Eq. (9h)
        summary["temperature"] = self.hyper.temperature
        summary["warmup_step"] = self.warm_step
        summary["evidence_window"] = self.window
        summary["release_steps"] = self.release_steps
        summary["undecided_layers"], note = self.undecided()
        summary["near_start_layers"], near = self.near_start_note(summary["widths"])
        summary["leaving_units"] = self.leaving()
        leaving = self.leaving_note(summary["leaving_units"], summary["widths"])
        summary["merged_at_end"] = self.merged_at_end()
        summary["removed_in_last_window"] = self.removed_in_last_window()
        merged = self.shrinking_note(summary["removed_in_last_window"], summary["widths"])
        budget = []  # what Eq. (15c) kept the final settle from
        if self.settle_skipped:
            them = "it" if len(self.settle_skipped) == 1 else "them"
            budget.append(f"the final settle left out {', '.join(self.settle_skipped)}: "
                          f"settling {them} too would take its cost over {SETTLE_SHARE:.0%} "
                          "of the training's (Eq. (15c); --settle on settles every "
                          "layer)")  # fmt: skip
        if self.settle_stopped:
            budget.append(f"the final settle stopped at its budget ({SETTLE_SHARE:.0%} of the "
                          "training's cost, Eq. (15c)) after "
                          + ", ".join(f"{k} removal{'s' * (k != 1)} in {name}"
                                      for name, k in self.settle_stopped.items())
                          + ": more might have gone (--settle on lets it go on)")  # fmt: skip
        notes = (note, self.early_note(), leaving, merged, near, *budget, self.data_note)
        summary["note"] = "; ".join(n for n in notes if n) or None
        summary["pruned_early_fraction"] = pruned_early_fraction(
            self.prune_events, self.total_steps
        )
        if "teacher_widths" in self.data.meta:
            summary["teacher_widths"] = self.data.meta["teacher_widths"]
        summary["resumed_at_step"] = self.resumed
        summary["epoch_train_seconds"] = [r.get("train_seconds") for r in self.history]
        if self.writer is not None:
            if not self.diverged:  # no model of non-finite parameters; the checkpoints stay
                self.writer.model(det, self.net.in_shape)
            if self.write_summary:
                self.writer.summary(summary)
        return summary


# the methods that compute a GatedNet's function: model.pt, the exports and the merge moves
# rebuild that function from the plan (GatedNet.spec, to_sequential), so they must be the plan's
_PLAN_METHODS = ("forward", "run_ops", "map", "activate")


def settle_cost_shares(det, net: GatedNet, widths: list[int], sample: int,
                       trained: int) -> dict[str, float]:  # fmt: skip
    """Eq. (15c): per gated layer, what one pass of the final settle over its units costs as a
    share of the training's compute, in multiply-accumulates of the deployed network ``det``
    (``widths``: its gated layers' widths).

    Silencing one of layer l's n_l units costs, per example of the settle's ``sample``, the
    unit's share of the consumer's map (M_{l+1}/n_l) and the network after the consumer
    (Σ_{j>l+1} M_j); a pass tries every unit. Training costs at least 3 Σ_j M_j per example
    (forward and backward through the network it ends with; it was wider before) for the
    ``trained`` examples of its epochs. Both scale with a network's size alike, so the share
    is n_s (M_{l+1} + n_l Σ_{j>l+1} M_j) / (3 T Σ_j M_j): small where the layers after the
    consumer are cheap (fully connected tails, LeNet-5), near 1 for the first convolutions of
    a deep network trained for few epochs (VGG16: a pass over conv1 runs the whole network
    once per filter)."""
    macs = layer_macs(det, net.in_shape)
    if len(macs) != len(net.gated) + 1:  # one Conv2d or Linear per layer, the read-out last
        raise RuntimeError(f"settle cost: {len(macs)} layers in the deployed network, "
                           f"{len(net.gated) + 1} expected")  # fmt: skip
    total = 3 * trained * sum(macs)
    shares = {}
    for i, name in enumerate(net.gated):
        rest = sum(macs[i + 2 :])
        shares[name] = sample * (macs[i + 1] + widths[i] * rest) / total
    return shares


def over_budget(shares: dict[str, float], budget: float) -> list[str]:
    """Eq. (15c): the layers left out when the cheapest are taken (ties in layer order) while
    their shares sum to at most ``budget``; in layer order."""
    spent, skipped = 0.0, set()
    for name in sorted(shares, key=shares.get):
        if spent + shares[name] <= budget and not skipped:
            spent += shares[name]
        else:
            skipped.add(name)
    return [name for name in shares if name in skipped]


def _check_plan_network(net: GatedNet) -> None:
    """Refuse (``TypeError``) a network the run could train but not save: a ``GatedNet`` (or
    subclass) that computes more than its plan (its own ``forward``, ``run_ops``, ``map`` or
    ``activate``, on the class or the instance, or modules and parameters besides the plan's
    layers and norms), which ``model.pt`` and the exports would leave out without a word, and
    one whose parameters or floating buffers are not float32, as the data are. (Forward hooks
    are not looked at: one that changes the output is the user's to keep out of a run.)"""
    cls = type(net)
    changed = [m for m in _PLAN_METHODS
               if getattr(cls, m) is not getattr(GatedNet, m) or m in vars(net)]  # fmt: skip
    extra = [n for n, _ in net.named_children() if n not in ("layers", "norms")]
    extra += [n for n, _ in net.named_parameters(recurse=False)]  # nn.Parameter attributes
    if changed or extra:
        what = "; ".join(
            part
            for part in (
                f"overrides {', '.join(changed)}" if changed else "",
                f"adds {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise TypeError(
            f"{cls.__name__} {what}: a run trains, saves and exports a GatedNet's plan (its "
            "layers, norms and steps), so the rest would be trained and then left out of "
            "model.pt and every export; describe the network as a plan of GatedNet steps"
        )
    tensors = [*net.parameters(), *(b for b in net.buffers() if b.is_floating_point())]
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors})
    if dtypes != ["float32"]:
        raise TypeError(
            f"the network's parameters and buffers are {', '.join(dtypes)}; a run trains float32 "
            "networks on float32 inputs: net.float()"
        )


def _check_batch_norm(net: GatedNet, n: int, batch_size: int) -> None:
    """Refuse a BatchNorm that a training batch would give one value per channel (a 1×1 map
    and a batch of one example), which torch cannot normalise: say so before anything runs
    rather than fail at that batch."""
    smallest = min(batch_size, n) if n % batch_size == 0 or n < batch_size else n % batch_size
    for name in net.norms:
        height, width = net.map_sizes[name]
        if smallest * height * width == 1:
            raise ValueError(
                f"BatchNorm after {name} sees a 1×1 map, and {n} training examples at batch "
                f"{batch_size} make a batch of one example, one value per channel, which "
                "BatchNorm cannot normalise; choose a batch size that leaves no batch of one"
            )


def pruned_early_fraction(events: list[dict], total_steps: int, fraction: float = 0.25):
    """P2: share of the removed units that went within the first 25% of the steps (None if none)."""
    total = sum(e["removed"] for e in events)
    if total == 0:
        return None
    return sum(e["removed"] for e in events if e["step"] <= fraction * total_steps) / total


def in_between(theta: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """Which gates are more than ``tol`` away from both 0 and 1."""
    return (theta > tol) & (theta < 1 - tol)


def binary_fraction(theta: torch.Tensor, tol: float = 1e-3) -> float:
    """Share of gates with θ within ``tol`` of 0 or 1 (P1)."""
    return 1.0 - float(in_between(theta, tol).float().mean()) if theta.numel() else 1.0


class TrainingInterrupted(BaseException):
    """SIGINT or SIGTERM stopped training after a step, or during the final settle
    (``where``); the state to continue from is in ``checkpoint``.

    A ``BaseException``, as ``KeyboardInterrupt`` is: a sweep's ``except Exception`` around
    ``fit`` does not swallow the user's Ctrl-C and go on with the next run."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, where: str = ""):
        self.signum, self.step, self.checkpoint, self.where = signum, step, checkpoint, where
        name = signal.Signals(signum).name
        super().__init__(f"{name} at step {step}" + (f", {where}" if where else ""))


def _weak(method, gone=None):
    """``method`` (a bound method) called through a weak reference to its object; ``gone``
    once the object is (a guide or optimiser kept after its trainer: no vertex pricing, every
    θ free to move)."""
    ref = weakref.WeakMethod(method)

    def call(*args, **kwargs):
        bound = ref()
        return gone if bound is None else bound(*args, **kwargs)

    return call


def clearly_learnt(best_error: float, chance: float) -> bool:
    """Whether a training error is clearly (``CLEARLY_BETTER``) below a constant predictor's."""
    return best_error < chance - CLEARLY_BETTER


def learnt_again(errors_after: list[tuple[int, float]], chance: float) -> str:
    """For a collapse read at an epoch before the last: the words saying that the network
    learnt again after it, when its last epoch's training error (``errors_after``: (epoch,
    training error) of the epochs after the collapse) is clearly below a constant
    predictor's, else ``""``. The status stays collapsed (issue 9: a run that passes through
    chance says so); the user sees that the network at the end is not at chance."""
    if not errors_after or not clearly_learnt(errors_after[-1][1], chance):
        return ""
    epoch, error = errors_after[-1]
    return f"; it learnt again after that: training error {error:.3f} at epoch {epoch}, the last"


def first_chance_collapse(
    train_errors: list[float], chance: float
) -> tuple[int, str] | tuple[None, None]:
    """The first epoch (from 1) whose training error :func:`chance_collapse` reads as a
    collapse, the epochs before it giving the best error, and that reading (``"after
    learning"`` or ``"never learnt"``); ``(None, None)`` if none is."""
    best = 1.0
    for epoch, error in enumerate(train_errors, 1):
        verdict = chance_collapse(error, best, chance, epoch == len(train_errors))
        if verdict is not None:
            return epoch, verdict
        best = min(best, error)
    return None, None


def chance_collapse(error: float, best_before: float, chance: float, last: bool) -> str | None:
    """The collapse rule of :meth:`Trainer.check_health`, for one epoch's training ``error``
    (``best_before``: the best of the epochs before; ``chance``: a constant predictor's error;
    ``last``: the run's last epoch): ``"after learning"`` at chance (within ``AT_CHANCE``)
    after an epoch clearly below it, ``"never learnt"`` at chance at the last epoch with none
    clearly below it, else None. ``bayesprune baseline`` reads a dense twin by it too."""
    if not error >= chance - AT_CHANCE:  # (as check_health read it: a NaN is not at chance)
        return None
    if clearly_learnt(best_before, chance):
        return "after learning"
    return "never learnt" if last else None


def check_run_data(out: Path, recorded: dict, data: Dataset) -> None:
    """Refuse data other than those run ``out``'s ``config.json`` records (``data``: what the
    run's weights trained on, after its subset and any held-out share): a resume, and the
    run's dense twin (``bayesprune baseline``), train on the run's own data or not at all."""
    differ = []
    files, loaded = recorded.get("files") or [], data.meta.get("files") or []
    same_files = bool(files) and [f.get("sha256") for f in files] == [
        f.get("sha256") for f in loaded
    ]
    for key, value in (("name", data.name), ("train_examples", len(data.x_train)),
                       ("test_examples", len(data.x_test))):  # fmt: skip
        if key == "name" and same_files:  # an npz file's name is its file's: a renamed copy
            continue  # of the same bytes is the same data
        if key in recorded and recorded[key] != value:
            differ.append(f"{key} {value!r} (the run's: {recorded[key]!r})")
    digest = recorded.get("tensors_sha256")
    if digest is not None and digest != tensors_sha256(data):  # a user's own tensors
        differ.append("the tensors are not those the run trained on (their SHA-256 differs)")
    if [f.get("sha256") for f in files] != [f.get("sha256") for f in loaded]:
        changed = changed_files(files, loaded)
        differ.append(f"the data files changed since the run started: {changed}")
    if differ:
        raise RunError(f"run {out} did not train on these data: {'; '.join(differ)}")


class StopSignals:
    """While active (main thread only), SIGINT and SIGTERM set :attr:`signal` instead of
    killing the process, so the training loop can stop after its current step."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def _handle(self, signum, frame):
        self.signal = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc_type is None and self.signal is not None and self.previous:
            os.kill(os.getpid(), self.signal)  # came too late for the loop: not dropped
        return False
