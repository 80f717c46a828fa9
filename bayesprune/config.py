"""Settings of a training run: :class:`TrainConfig`, each field one ``bayesprune train`` flag.

Every field carries its help text, its parser and its choices in ``metadata``; the CLI builds its
flags from them (:func:`add_config_arguments`), so a setting and its flag are written once.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import MISSING, dataclass, field, fields

import torch

from bayesprune.guides.gate_guide import POSTERIORS, WEIGHTS
from bayesprune.inference.elbo import ESTIMATORS, IMPLEMENTATIONS
from bayesprune.inference.merge import GROUP_CAPS
from bayesprune.inference.projected_sgd import THETA_OPTIMIZERS
from bayesprune.loop import LR_SCHEDULES
from bayesprune.models.gated_model import HyperPrior
from bayesprune.models.network import MEMORY_FORMATS  # (--memory-format)

RELEASES = ("ordered", "together")
MERGES = ("on", "off")
WARMUP_EPOCHS = ("on", "off")
MERGE_TESTS = ("spend", "fixed")
# what a price counts (Eq. (14e) for merges, (10e) for the gates): the units the other layer's
# gates are heading for keeping, or every live unit
PRICES = ("expected", "current")
# how many units a merge round may take (Eq. (14t)): the places the transit limit leaves free
MERGE_BUDGETS = ("transit", "none")
# when a layer gets merge rounds (Eq. (14w)): every evidence window from its release, or only
# once its gates have collapsed no unit for a window
MERGE_SCHEDULES = ("window", "settled")
MERGE_GROUPS = ("off", "on", "auto")
SETTLES = ("auto", "on", "off")
# posterior draws of `bayesprune inspect` (defined here so that training imports no ArviZ)
INSPECT_DRAWS = 200
# settings added after runs were recorded without them: the value those runs trained with
PREDATING = {
    "merge": "off", "theta_transit": 1.0, "merge_tests": "fixed", "window_cap": "none",
    "merge_price": "current", "producer_price": "current", "merge_budget": "none",
    "merge_schedule": "settled", "theta_confidence": 0.0, "evidence": "train",
    "optimizer": "adam", "momentum": 0.9, "memory_format": "contiguous", "merge_groups": "off",
    "group_cap": "half", "settle": "off",
}  # fmt: skip
WINDOW_CAPS = ("data", "none")


def groups_need_merges(groups: str) -> str:
    """Why ``--merge-groups GROUPS`` is refused with ``--merge off`` (TrainConfig refuses
    ``on``; the command line also ``auto`` asked for by name, its default otherwise)."""
    return (
        f"merge_groups {groups!r} (--merge-groups {groups}) needs merge 'on' (--merge on): "
        "group moves are merge moves"
    )
# the weights' optimisers (--optimizer): weights_optimizer builds them
OPTIMIZERS = ("adam", "sgd")
EVIDENCE = ("train", "held-out")
WEIGHT_POSTERIORS = tuple(w for w in WEIGHTS if w is not None)  # None: another guide's weights


# --- parsers of flag values (argparse types: a clear message, no traceback) ---------------------


def number(kind, ok, requirement: str, alternative: str = ""):
    """An argparse type: a ``kind`` number for which ``ok(value)`` holds (``alternative``: the
    word that may stand instead of a number, for the message)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = ("an integer" if kind is int else "a number") + alternative
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must {requirement}, got {text}")
        return value

    return parse


def positive(kind):
    return number(kind, lambda v: 0 < v < math.inf, "be positive and finite")


non_negative = number(int, lambda v: v >= 0, "be a non-negative integer")
non_negative_finite = number(float, lambda v: 0 <= v < math.inf, "be non-negative and finite")
open_unit_interval = number(float, lambda v: 0 < v < 1, "lie in (0, 1)")
unit_interval_positive = number(float, lambda v: 0 < v <= 1, "lie in (0, 1]")


seed_type = number(int, lambda v: 0 <= v < 2**32, "lie in 0 .. 2^32 - 1 (numpy's seeds)")
learning_rate = number(float, lambda v: 0 < v <= 1, "lie in (0, 1] (the weights' step size)")
momentum_range = number(float, lambda v: 0 <= v < 1, "lie in [0, 1)")


def warmup_tolerance(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return number(float, lambda v: 0 < v <= 1, "lie in (0, 1] or be 'none'", " or 'none'")(text)


# the sections of `bayesprune train --help`, in order: key -> (title, description). The command
# line adds its own flags (network, data, output, processes) to them.
OPTION_GROUPS = {
    "data": ("network and data", None),
    "recipe": (
        "training recipe",
        "the weights' training, as a dense network's would be; `bayesprune baseline` trains the "
        "dense twin with the same recipe",
    ),
    "rule": (
        "the pruning rule",
        "the defaults are the rule docs/method.md §4 derives, which the robustness matrix and "
        "§7 record; the other values are the variants its experiments measured (§6), kept for "
        "comparison",
    ),
    "model": ("the model and its posterior", "the prior, the posterior family and how the "
              "objective is evaluated (docs/method.md §1-§3, §5)"),
    "run": ("the run", "where it runs, what it writes, how it continues"),
    "distributed": ("data-parallel training", "docs/method.md §5b"),
}  # fmt: skip


def _option(default, help: str, type=None, choices=None, *, group: str):
    """A dataclass field with the metadata of its CLI flag (``group``: its section of
    ``bayesprune train --help``, a key of :data:`OPTION_GROUPS`)."""
    if group not in OPTION_GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    meta = {"help": help, "type": type, "choices": choices, "group": group}
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Settings of one training run; the field docs are the ``bayesprune train --help`` texts.

    See docs/method.md §4 for the rules the θ settings implement: the per-example θ step and
    evidence window (Eq. (10)), the warm-up (Eq. (10w)), the ordered release (Eq. (10o)), the
    temperature τ(N) (Eq. (13)), the pruning condition (Eq. (12)) and the prior update (Eq. (11)).
    """

    epochs: int = _option(10, "passes over the training set", positive(int), group="recipe")
    batch_size: int = _option(100, "examples per step", positive(int), group="recipe")
    lr: float = _option(
        1e-3, "learning rate of the weights' optimiser (Adam's unless --optimizer sgd), in (0, 1]",
        learning_rate, group="recipe",
    )  # fmt: skip
    optimizer: str = _option(
        "adam", "the weights' optimiser: adam, or sgd (heavy-ball momentum, --momentum; its "
        "usual rates are 1e-2 to 1e-1)", choices=OPTIMIZERS, group="recipe",
    )  # fmt: skip
    momentum: float = _option(
        0.9, "momentum of --optimizer sgd, in [0, 1) (Adam's β₁ stays 0.9); the evidence "
        "window's floor of 10 steps (Eq. (10n)) is the 1 / (1 − 0.9) steps a gradient average "
        "at 0.9 spans", momentum_range, group="recipe",
    )  # fmt: skip
    lr_schedule: str = _option(
        "constant", "learning-rate schedule of the weights (cosine: to 0 over the run)",
        choices=LR_SCHEDULES, group="recipe",
    )  # fmt: skip
    theta_optimizer: str = _option(
        "sgd", "θ optimiser: sgd (ProjectedSGD on the per-example clock, Eq. (10)) or adam "
        "(Adam per step, then the projection)", choices=tuple(THETA_OPTIMIZERS), group="rule",
    )  # fmt: skip
    lr_theta: float = _option(
        10.0, "θ step per example seen and unit of evidence (Eq. (10)); Adam lr with adam",
        positive(float), group="rule",
    )  # fmt: skip
    theta_window: float = _option(
        10_000, "examples over which the gate evidence is averaged (Eq. (10)); also the "
        "warm-up's largest block", positive(float), group="rule",
    )  # fmt: skip
    window_cap: str = _option(
        "data", "data: the evidence window is min(N, theta-window) examples, one pass over a "
        "smaller training set; none: theta-window whatever N; either way at least 10 steps "
        "(Eq. (10n))",
        choices=WINDOW_CAPS, group="rule",
    )  # fmt: skip
    theta_transit: float = _option(
        0.5, "the largest fraction of a layer's units whose θ may be away from 1 at once "
        "(Eq. (10t)); 1: no limit", unit_interval_positive, group="rule",
    )  # fmt: skip
    theta_confidence: float = _option(
        2.0, "θ falls only while its evidence says, at this many standard errors, that the unit "
        "is worth less than its price, and rises otherwise (Eq. (10s)); 0: θ follows the sign "
        "of the evidence", non_negative_finite, group="rule",
    )  # fmt: skip
    warmup_tolerance: float | None = _option(
        0.1, "θ moves once a block of examples improves the data term by less than this "
        "fraction of all learnt so far, and the network has learnt at least a tenth of a constant "
        "predictor's loss (Eq. (10w)); 'none': from the first step",
        warmup_tolerance, group="rule",
    )  # fmt: skip
    warmup_epoch: str = _option(
        "off", "on: the warm-up (Eq. (10w)) also lasts until every training example has been "
        "trained on once; binds only where the data term settles within the first epoch "
        "(above about 30,000 examples). The first decisions come later, which keeps slow "
        "learners' first layers wider (lr 3e-4 at 60,000 examples: 0.27 points more accurate) "
        "at the cost of early pruning (P2); over the matrix 0.10 points, hence off by default "
        "(docs/method.md §6zzi)",
        choices=WARMUP_EPOCHS, group="rule",
    )  # fmt: skip
    release: str = _option(
        "ordered", "after the warm-up, release the layers' θ from the output back, one "
        "evidence window apart (Eq. (10o)), or all together", choices=RELEASES, group="rule",
    )  # fmt: skip
    merge: str = _option(
        "on", "merge moves (Eq. (14)): every evidence window, remove units of the released "
        "layers that the others can take over, when that lowers the objective", choices=MERGES,
        group="rule",
    )  # fmt: skip
    merge_tests: str = _option(
        "spend", "the merge moves' test (Eq. (14a)): spend: each further test of a unit is "
        "stricter, so that all its tests together accept a move that does not lower the "
        "objective no more often than one 2-sd test; fixed: every test at 2 sd",
        choices=MERGE_TESTS, group="rule",
    )  # fmt: skip
    merge_price: str = _option(
        "expected", "what a merge move is priced against (Eq. (14e)): expected: the other "
        "layers' units whose gate evidence favours keeping them, the widths their gates are "
        "heading for; current: every live unit", choices=PRICES, group="rule",
    )  # fmt: skip
    merge_budget: str = _option(
        "transit", "how many units a merge round may remove (Eq. (14t)): transit: the places "
        "the transit limit leaves free, so that gates and merges together never take more of "
        "a layer at once than --theta-transit allows; none: any number", choices=MERGE_BUDGETS,
        group="rule",
    )  # fmt: skip
    merge_schedule: str = _option(
        "window", "when a layer gets merge rounds (Eq. (14w)): window: every evidence window "
        "of examples from one window after its release on, the same rounds in every run; "
        "settled: only once its "
        "gates have collapsed no unit for a window", choices=MERGE_SCHEDULES, group="rule",
    )  # fmt: skip
    merge_groups: str = _option(
        "auto", "group merge moves (Eq. (14j)): after a layer's single moves, one move of a "
        "group of its units taken over jointly by the others, tested as one; for layers of "
        "cheap units (few inputs each, as on tabular data), which single moves cannot take "
        "over. auto: in a layer while it has more units than inputs per unit + 1 (a tabular "
        "or small input's first layer, a second layer wider than the pruned first); on: in "
        "every layer (smaller networks, at some accuracy on Fashion-MNIST); off: never; "
        "nothing without merge moves (--merge off; asked for, on and auto need --merge on)",
        choices=MERGE_GROUPS, group="rule",
    )  # fmt: skip
    group_cap: str = _option(
        "excess", "the largest group move under --merge-groups auto (Eq. (14x)): excess: the "
        "layer's live units beyond inputs per unit + 1, the units whose pre-activations the "
        "others' make linearly dependent, so that a group move never takes a layer below that "
        "width; half: half the live units (the rule before; --merge-groups on always tries up "
        "to half)", choices=GROUP_CAPS, group="rule",
    )  # fmt: skip
    settle: str = _option(
        "auto", "the final settle (Eq. (15)): after the last epoch, silence hidden units one at a "
        "time while that lowers the objective by two standard errors on up to 20,000 training "
        "examples, at the weights the run ends with; auto: the cheapest layers, and as many "
        "passes over their units (one unit each) as cost at most a quarter of the training's "
        "compute together (Eq. (15c)); on: every layer, to the end",
        choices=SETTLES, group="rule",
    )  # fmt: skip
    producer_price: str = _option(
        "expected", "what a unit's gate pays for the weights it feeds (Eq. (10e)): expected: "
        "the consumer units whose gate evidence favours keeping them, the width their gates "
        "are heading for; current: every live consumer unit", choices=PRICES, group="rule",
    )  # fmt: skip
    train_subset: int | None = _option(
        None, "train on a fixed random subset of this many training examples (seeded)",
        positive(int), group="data",
    )  # fmt: skip
    seed: int = _option(
        0, "seed of the initialisation, the batches and the gates (0 .. 2^32 - 1)", seed_type,
        group="recipe",
    )  # fmt: skip
    estimator: str = _option(
        "secant", "gate-gradient estimator (Eq. (9)); exact and score need the traced ELBO",
        choices=ESTIMATORS, group="model",
    )  # fmt: skip
    evidence: str = _option(
        "train", "examples the gates' evidence is measured on: train (the batch the weights "
        "step on) or held-out (a fixed share of the training set no weight trains on, drawn "
        "anew each step; Eq. (9h); secant estimator, point-mass weights, fast ELBO, one process "
        "only)", choices=EVIDENCE, group="rule",
    )  # fmt: skip
    evidence_share: float = _option(
        0.1, "share of the training examples held out for the gates' evidence "
        "(--evidence held-out)", open_unit_interval, group="rule",
    )  # fmt: skip
    elbo: str = _option(
        "auto", "how GatedELBO evaluates the objective: fast (no traces), traced "
        "(poutine.trace, the reference), auto: fast where it applies", choices=IMPLEMENTATIONS,
        group="model",
    )  # fmt: skip
    weights: str = _option(
        "point", "weight posterior: point masses or mean-field Gaussians",
        choices=WEIGHT_POSTERIORS, group="model",
    )  # fmt: skip
    posterior: str = _option(
        "coupled", "how gates and weights are coupled in q (Eqs. (4), (4s), (4c))",
        choices=POSTERIORS, group="model",
    )  # fmt: skip
    temperature: float | None = _option(
        None, "prior temperature τ (scale on every prior term); default: 0.03·(N/60000)^½ "
        "(Eq. (13))", positive(float), group="rule",
    )  # fmt: skip
    price_scale: float = _option(
        1.0, "multiplies τ(N) = 0.03·(N/60000)^½ (Eq. (13)): above 1 smaller networks, below 1 "
        "larger ones, at every N; cannot be combined with --temperature",
        positive(float), group="rule",
    )  # fmt: skip
    rho: float = _option(
        HyperPrior.rho, "spike/slab variance ratio ρ", open_unit_interval, group="model"
    )
    strength: float = _option(
        HyperPrior.strength, "weight of the inverse-gamma hyper-prior on σ₁², in pseudo-weights "
        "per weight (Eq. (5))", positive(float), group="model",
    )  # fmt: skip
    init_theta: float = _option(
        1.0, "initial gate probability θ₀", unit_interval_positive, group="model"
    )
    check_every: int | None = _option(
        None, "steps between pruning checks (Eq. (12)), which also carry the merge rounds: a "
        "round at the first check of each evidence window, so at every check when checks are "
        "more than a window apart; default: half an evidence window, ⌈window / (2 · batch)⌉ "
        "(50 at batch 100)", positive(int), group="rule",
    )  # fmt: skip
    patience: int | None = _option(
        None, "consecutive checks with θ = 0 before a unit is removed (default: enough to "
        "span the evidence window, ⌈window / (batch · check-every)⌉ + 1)", positive(int),
        group="rule",
    )  # fmt: skip
    prior_every: int = _option(
        10, "steps between closed-form prior updates (Eq. (11))", positive(int), group="model"
    )
    device: str = _option("cpu", "cpu, cuda or cuda:N (every step runs there)", group="run")
    memory_format: str = _option(
        "auto", "layout of the convolutions' weights and feature maps while training: "
        "channels-last (NHWC, where oneDNN's CPU convolutions run fastest), contiguous (NCHW), "
        "auto: channels-last for a network with convolutions on the CPU, contiguous otherwise. "
        "The same arithmetic in another order, so the decisions differ as on another CPU; the "
        "dense twin (bayesprune baseline) trains in the run's layout", choices=MEMORY_FORMATS,
        group="run",
    )  # fmt: skip
    trace_every: int = _option(
        0, "append θ, weight norms and θ-gradients to traces.jsonl every this many steps "
        "(0: off)",
        non_negative, group="run",
    )  # fmt: skip

    def __post_init__(self):
        # a misspelt option (or None for "none") from the Python API would otherwise fall back
        # to some default without a word: the CLI's choices hold here too
        # and so do their ranges and types (epochs=0 or lr=5 would fail deep inside a run)
        if isinstance(self.device, torch.device):  # torch's idiom, as its name: config.json
            self.device = str(self.device)  # records it (json refused the object mid-run)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("type") is not None and isinstance(value, str):
                raise ValueError(f"TrainConfig.{f.name} = {value!r} is not a number")
            _validate(f"TrainConfig.{f.name}", value, f.metadata)
            if f.metadata.get("type") is not None and type(value) not in (int, float, type(None)):
                # numpy's numbers (a sweep over np.arange) as Python's: random.seed and
                # json refuse numpy's, deep inside a run
                setattr(self, f.name, f.metadata["type"](str(value)))
        _check_device(self.device)
        if self.merge_groups == "on" and self.merge == "off":
            raise ValueError(groups_need_merges(self.merge_groups))
        self._check_price_scale()  # as the command line does
        self._check_momentum()
        if self.warmup_epoch == "on" and self.warmup_tolerance is None:
            raise ValueError(
                "--warmup-epoch on lengthens the warm-up (Eq. (10w)), which --warmup-tolerance "
                "none switches off: give one or the other"
            )
        if self.evidence != "held-out" and self.evidence_share != 0.1:  # not silently ignored
            raise ValueError(
                f"evidence_share (--evidence-share) is --evidence held-out's; with --evidence "
                f"{self.evidence} no example is held out: leave it at 0.1, or add --evidence "
                "held-out"
            )
        if self.evidence == "held-out" and (
            self.estimator != "secant" or self.weights != "point" or self.elbo == "traced"
        ):
            given = [f"--estimator {self.estimator}"] if self.estimator != "secant" else []
            given += [f"--weights {self.weights}"] if self.weights != "point" else []
            given += ["--elbo traced"] if self.elbo == "traced" else []
            raise ValueError(
                "--evidence held-out (Eq. (9h)) is measured by the secant estimator on the fast "
                f"ELBO with point-mass weights, not with {' and '.join(given)}: drop those, or "
                "use --evidence train"
            )

    def _check_momentum(self) -> None:
        if self.optimizer != "sgd" and self.momentum != 0.9:
            raise ValueError(
                f"momentum (--momentum) is --optimizer sgd's; with --optimizer {self.optimizer} "
                "leave it at 0.9 (Adam's β₁ is fixed at 0.9)"
            )

    def _check_price_scale(self) -> None:
        if self.temperature is not None and self.price_scale != 1:
            raise ValueError(
                "price_scale (--price-scale) multiplies the default τ(N); with temperature "
                "(--temperature) set, scale that instead"
            )

    def hyper(self, num_data: int | None = None) -> HyperPrior:
        """The prior settings, with τ = ``price_scale`` · :func:`temperature_for` (N) unless
        ``temperature`` is set.

        :param num_data: N, the number of training examples (needed when τ follows N).
        """
        tau = self.temperature
        if tau is None:
            tau = HyperPrior.temperature if num_data is None else temperature_for(num_data)
            tau *= self.price_scale
        else:  # a field set after the config was made
            self._check_price_scale()
        return HyperPrior(rho=self.rho, strength=self.strength, temperature=tau)

    @classmethod
    def from_record(cls, values: dict) -> TrainConfig:
        """The config of a recorded run (``config.json``), validated: a setting the file predates
        takes the value that reproduces what that run did (:data:`PREDATING`), not today's
        default, so ``--resume`` and ``inspect`` of an older run see the rule it trained with.
        The recorded ``temperature`` is the τ the run used, ``price_scale`` already in it."""
        values = {**PREDATING, **values}
        if values.get("merge") == "off":  # recorded before the pair was refused: groups did nothing
            values["merge_groups"] = "off"
        if values.get("temperature") is not None:
            values["price_scale"] = 1.0
        return cls.from_dict(values, validate=True)

    @classmethod
    def from_dict(cls, values: dict, validate: bool = False) -> TrainConfig:
        """A config from a dict (``config.json``), ignoring keys that are not fields.

        :param validate: check every value with its flag's parser and choices (a file edited by
            hand): :class:`ValueError` naming the field.
        """
        chosen = {f.name: f for f in fields(cls) if f.name in values}
        if validate:
            for name, f in chosen.items():
                _validate(name, values[name], f.metadata)
        return cls(**{name: values[name] for name in chosen})


def _check_choice(name: str, value, meta) -> None:
    """ValueError naming ``name`` unless ``value`` is one of the field's choices (if it has any)."""
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"{name} = {value!r}: choose one of {meta['choices']}")


def _validate(name: str, value, meta) -> None:
    if value is None and meta.get("type") is not None:
        return  # optional settings (temperature, patience, ...) may be unset
    _check_choice(name, value, meta)
    parse = meta.get("type")
    if parse is not None:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):  # numpy too
            raise ValueError(f"{name} = {value!r} is not a number")
        try:
            parse(str(value))
        except argparse.ArgumentTypeError as err:
            raise ValueError(f"{name} = {value!r}: {err}") from None


REFERENCE_TEMPERATURE = HyperPrior.temperature  # τ at REFERENCE_EXAMPLES
REFERENCE_EXAMPLES = 60_000


def temperature_for(num_data: int) -> float:
    """τ(N) = τ_ref (N / N_ref)^½ (Eq. (13)): the price of a unit per example falls like 1/√N.

    A unit is kept when its summed evidence N Δ_s exceeds τ KL_s; with τ ∝ √N the bar on the
    per-example evidence Δ_s falls like the standard error of a mean over N examples, so a
    unit whose effect is detectable in the data is kept and the widths grow with N
    (docs/method.md §4). τ_ref = 0.03 at N_ref = 60,000 (full Fashion-MNIST, §6c).
    """
    return REFERENCE_TEMPERATURE * (num_data / REFERENCE_EXAMPLES) ** 0.5


def weights_optimizer(config: TrainConfig, num_data: int = 1) -> tuple[type, dict]:
    """The weights' ``torch.optim`` class and its arguments: Adam, or SGD with heavy-ball momentum.

    ``num_data``: the examples the differentiated objective sums over — N for the ELBO, whose
    data term is N times a per-example mean (Eq. (8)); 1 for the dense baseline's mean
    cross-entropy. Adam's step does not depend on that scale; SGD's does, so it takes
    lr / ``num_data``, which makes ``lr`` the step on the per-example objective, as in the dense
    baseline and in any SGD recipe a user brings (without it, lr 0.05 on the N-scaled ELBO
    diverged in five steps). Both optimisers average the gradient over about 1 / (1 − β) = 10
    steps at the default β₁ = momentum = 0.9, the horizon :data:`WINDOW_MIN_STEPS` is set against.
    """
    config._check_momentum()  # as at construction: a field may be set after it
    if config.optimizer == "sgd":
        return torch.optim.SGD, {"lr": config.lr / num_data, "momentum": config.momentum}
    return torch.optim.Adam, {"lr": config.lr}


def evidence_window(config: TrainConfig, num_data: int) -> float:
    """W_N of Eq. (10n): the examples the gate evidence averages, min(N, W) (``window_cap``
    "data") or W ("none"), but at least 10 steps' worth.

    The evidence of a unit in a training set of N examples is its mean per-example θ-gradient
    over those N; one pass computes it, and averaging over more than one pass only repeats the
    same examples while slowing every decision, counted in epochs, by W/N. Capped at N, every
    clock of the schedule (the evidence average, the release spacing, the check interval, the
    dwell of Eq. (12), the merge rounds) spans the same part of the data, one pass, at every
    N ≤ W, as the warm-up's blocks of min(N, W) examples (Eq. (10w)) already did.

    A window of fewer than :data:`WINDOW_MIN_STEPS` optimiser steps is stretched to that many
    steps, W_N = max(min(N, W), 10 min(B, N)) (a batch above N is one step of N examples): the
    gates otherwise follow one or two mini-batches and flicker. A small N shortens the window
    (iris's 120 examples at batch 100 are 1.2 steps) as a large batch does (W = 10,000 examples
    at batch 8,192 are 1.2 steps); the floor binds where min(N, W) < 10 B, so the clocks are
    batch-size invariant for B ≤ min(N, W) / 10.
    """
    window = config.theta_window
    if config.window_cap == "data":
        window = min(num_data, window)  # one pass
    # a window shorter than Adam's memory; a batch larger than the data set is the whole set
    floor = WINDOW_MIN_STEPS * step_examples(config, num_data)
    return float(max(window, floor))


# 1 / (1 − β₁) at Adam's β₁ = 0.9 (and SGD's default momentum 0.9): the steps over which the
# weights' optimiser averages its gradients. A unit's evidence is read through how the weights
# respond to its gate; an average over fewer steps follows that response's transient, not the
# unit's value (Eq. (10n)).
WINDOW_MIN_STEPS = 10


def check_interval(config: TrainConfig, num_data: int, window: float | None = None) -> int:
    """c: the configured ``check_every``, or half an evidence window, ⌈W_N / (2B)⌉ steps.

    Counted in examples, so the batch size does not change how often (per example seen) the
    pruning condition is checked: 50 steps at batch 100 and N ≥ W, 157 at batch 32, 20 at 256,
    5 on 1,000 examples at batch 100. ``window``: W_N if not :func:`evidence_window`'s (a
    resumed run's own, :meth:`~bayesprune.inference.trainer.Trainer.restore`).
    """
    if config.check_every is not None:
        return config.check_every
    window = evidence_window(config, num_data) if window is None else window
    return max(1, math.ceil(window / (2 * step_examples(config, num_data))))


def step_examples(config: TrainConfig, num_data: int) -> int:
    """The examples one step holds: B, or the whole training set where B exceeds it (a step
    then takes all N examples, as the evidence window's floor counts it)."""
    return min(config.batch_size, num_data)


def checks_per_window(config: TrainConfig, num_data: int, window: float | None = None) -> int:
    """⌈W_N / (B c)⌉: pruning checks (c steps of B examples apart, B at most N) that span one
    evidence window."""
    window = evidence_window(config, num_data) if window is None else window
    step = step_examples(config, num_data)
    return math.ceil(window / (step * check_interval(config, num_data, window)))


def pruning_patience(config: TrainConfig, num_data: int, window: float | None = None) -> int:
    """m of Eq. (12): the configured patience, or enough checks to span the evidence window.

    At θ_s = 0 the evidence m_s of Eq. (10) still remembers the push that brought the unit there
    for about W_N examples (:func:`evidence_window`); a unit outside the absorbing set leaves 0
    within that time, one inside stays. (m − 1) checks c steps of B examples apart must
    therefore cover the window: m = ⌈W_N / (B c)⌉ + 1 (3 with the default check interval).
    """
    if config.patience is not None:
        return config.patience
    return checks_per_window(config, num_data, window) + 1


def add_config_arguments(parser: argparse.ArgumentParser, groups: dict | None = None) -> None:
    """One flag per :class:`TrainConfig` field (``batch_size`` → ``--batch-size``), each in
    ``groups[key]`` (argparse argument groups by :data:`OPTION_GROUPS` key) where given."""
    for f in fields(TrainConfig):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        kwargs = {"default": default, "help": meta.get("help")}
        if meta.get("choices") is not None:
            kwargs["choices"] = meta["choices"]
        if meta.get("type") is not None:
            kwargs["type"] = meta["type"]
        where = parser if groups is None else groups[meta["group"]]
        where.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def training_device(name):
    """``name`` as a ``torch.device`` if it is one bayesprune trains on (cpu, cuda, cuda:N),
    else None (whether CUDA is there is for the caller to check)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return None
    return device if device.type in ("cpu", "cuda") else None


def _check_device(name: str) -> None:
    """Refuse a ``device`` that is not one torch trains on here, as the command line's
    ``--device`` does (:func:`training_device`)."""
    if training_device(name) is None:
        raise ValueError(
            f"TrainConfig.device = {name!r} is not a device to train on (cpu, cuda, cuda:N)"
        )
