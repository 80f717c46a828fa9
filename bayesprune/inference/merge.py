"""Merge moves: remove a unit whose job the other units of its layer can take over (Eq. (14)).

The gate gradient ∂F/∂θ_s of Eq. (9) measures what the network loses when unit s is switched off
*with every other weight held fixed*. For a unit that duplicates another (or that the rest of its
layer reproduces), that loss is large although the function does not need the unit: the consumer
could read the copy instead. What decides redundancy is the *profile* objective, min over the
weights of F with the unit off. A merge move evaluates it for one unit, the way merge moves of
memoized variational inference do (Hughes & Sudderth, NeurIPS 2013): propose the unit's removal
with the consumer re-wired to the least-squares reconstruction of the unit's output from the other
live units of its layer (and a constant), compute the change of F on a sample of training
examples, and accept the move only if F falls. Accepted moves therefore lower the objective the
gates optimise; nothing is assumed about how well the others compensate, it is measured, and
the moves are taken one at a time, each on the network the previous one left.

For an exact duplicate the reconstruction is exact, the data term does not change and the move
saves the unit's whole price: one of the pair always goes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import torch
import torch.nn.functional as F

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.inference.elbo_fast import fast_prior_applies, point_mass_prior
from bayesprune.models.gated_model import HyperPrior

CHUNK = 512  # examples per forward pass
# values of the held-out half's consumer inputs kept at once (256 MB in float32); the rounds of
# one check keep the previous round's two halves as well (Trainer.merge's cache)
BUDGET = 2**26
# the largest group move under groups="auto" (Eq. (14x), :meth:`MergeMoves.group_cap_in`)
GROUP_CAPS = ("excess", "half")


class SettleStopped(Exception):
    """:meth:`MergeMoves.settle` was told to stop (``stop``) between two units' measurements;
    the layer it was settling is as it was before that call."""


@dataclass
class Merge:
    """One accepted move."""

    layer: str
    unit: int  # the removed unit's original id
    delta_data: float  # N × change of the mean data term (nats)
    delta_prior: float  # change of the prior term (nats, τ included)


def merges_apply(guide: GateGuide) -> bool:
    """Merge moves need the prior's closed form: point-mass weights under the structured or the
    coupled posterior (the default)."""
    return fast_prior_applies(guide)


def unit_features(h: torch.Tensor, width: int) -> torch.Tensor:
    """The consumer's input as one column per unit: (examples × positions, width).

    ``h`` is what the consumer receives: (n, S) for a Linear after a Linear, (n, S·P) after a
    Flatten (P positions per unit, contiguous), (n, S, H, W) for a convolution.
    """
    if h.dim() == 4:
        return h.permute(0, 2, 3, 1).reshape(-1, width)
    n = h.shape[0]
    return h.reshape(n, width, -1).transpose(1, 2).reshape(-1, width)


def elimination_order(inv: torch.Tensor, outgoing: torch.Tensor, count: int) -> list[int]:
    """Backward elimination (Eq. (14j)): ``count`` of the units, in the order in which each is
    the cheapest to rebuild from those not yet taken.

    ``inv`` is the inverse Gram matrix of the units' outputs and a last constant, ``outgoing``
    the units' outgoing weights² (one per unit); a unit's cost is its residual energy
    1/inv_jj times ``outgoing`` (what the single moves rank by), and as each unit leaves the
    regressors the inverse is downdated (the Schur complement), so the next costs are those
    given the units still kept.
    """
    gone = torch.zeros(len(outgoing), dtype=torch.bool, device=inv.device)
    picks = []
    for _ in range(count):
        score = outgoing / inv.diagonal()[:-1]
        score[gone] = float("inf")
        p = int(torch.argmin(score))
        picks.append(p)
        gone[p] = True
        inv = without_regressor(inv, p)  # (its row and column, now 0, stay: ``gone`` marks it)
    return picks


def without_regressor(inv: torch.Tensor, p: int) -> torch.Tensor:
    """The Schur complement of ``inv``'s pivot p: on the other rows and columns, the inverse
    of the regressors' Gram matrix without regressor p (row and column p become 0)."""
    return inv - torch.outer(inv[:, p], inv[p, :]) / inv[p, p]


def downdate(idx: torch.Tensor, inv: torch.Tensor, pick: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``idx`` without its ``pick``-th entry and the inverse of the regressors' (ridged) Gram
    matrix without that regressor: the Schur complement of ``inv``'s pivot, O(width²) where a
    new inversion is O(width³) (the same matrix in exact arithmetic, as in
    :func:`elimination_order`). A round that accepts k moves on a layer of w units inverts
    once instead of k + 1 times: at w = 1,200 an inversion is about 75 ms on one thread."""
    inv = without_regressor(inv, pick)
    keep = torch.ones(len(idx), dtype=torch.bool, device=idx.device)
    keep[pick] = False
    return idx[keep], inv[keep][:, keep]


def joint_coefficients(gram, ridge: float, eye, kept, group) -> torch.Tensor:
    """Least-squares coefficients of the ``group`` units' outputs on the ``kept`` ones (Eq.
    (14j)): (len(kept), len(group)), ``kept`` ending with the constant's index of ``gram``,
    ridge-regularised as the single moves' inverse; ``eye`` an identity at least that large."""
    n = len(kept)
    return torch.linalg.solve(gram[kept][:, kept] + ridge * eye[:n, :n], gram[kept][:, group])


def _blocks(weight: torch.Tensor, width: int) -> torch.Tensor:
    """The consumer's weights as (out, width, P): the P weights that read each producer unit
    (one for a Linear after a Linear, its positions after a Flatten, its k×k slice in a
    convolution). A view: writing it writes ``weight``."""
    return weight.view(weight.shape[0], width, -1)


@torch.no_grad()
def rewire_jointly(weight, bias, kept, group, coef, width: int | None = None) -> None:
    """The consumer reads the ``group``'s reconstruction Σ_j coef_j h_j + coef_const from the
    ``kept`` units (``kept`` ending with the constant, :func:`joint_coefficients`) instead of
    the group's outputs, whose weights go to 0; ``weight`` and ``bias`` in place.

    ``weight`` is a Linear's (out, width·P) (P values per unit: 1, or a Flatten's positions)
    or a convolution's (out, width, k, k); ``width`` (the producer's units) defaults to
    ``weight.shape[1]``. The consumer is linear in its input, so its map of the
    reconstruction is its map by the re-wired weights; a constant input map becomes the bias
    (exact without padding; with padding, what :meth:`MergeMoves._group_change` measures).
    """
    view = _blocks(weight, weight.shape[1] if width is None else width)
    out, per = view.shape[0], view.shape[2]
    out_w = view[:, group].double().permute(0, 2, 1).reshape(out * per, len(group))
    moved = (out_w @ coef[:-1].T).reshape(out, per, -1).permute(0, 2, 1)
    view[:, kept[:-1]] += moved.to(weight.dtype)
    bias += (out_w @ coef[-1]).reshape(out, per).sum(1).to(weight.dtype)
    view[:, group] = 0.0


def consumer_map(net, consumer: str, h: torch.Tensor) -> torch.Tensor:
    """Layer ``consumer``'s convolution or linear map of ``h`` at its current weights, chunk by
    chunk: the cached map a merge move's or a settle's proposal changes."""
    return torch.cat([net.map(consumer, c) for c in h.split(CHUNK)])


def rest_losses(net, consumer: str, gates: dict, y: torch.Tensor) -> Callable:
    """``losses(z)``: each example's loss when layer ``consumer``'s convolution or linear map
    gives ``z`` (the rest of the network run from there, at ``gates``, chunk by chunk), what a
    merge move's or a settle's proposal is measured by; ``losses(z, rows)``: those of the
    examples ``rows`` of ``y``, ``z`` holding only theirs. A pool right after the consumer runs
    before its ReLU and gates, as in the network's own forward (the same values: max commutes
    with both, §4)."""
    start = net.op_index(consumer)
    pooled = net.ops[start + 1 : start + 2] == [("pool", None)]

    def losses(z: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.cat(
            [net.run_ops(net.activate(consumer, c, gates, pool=pooled), gates,
                         start=start + 1 + pooled)
             for c in z.split(CHUNK)]
        )  # fmt: skip
        return F.cross_entropy(logits, y if rows is None else y[rows], reduction="none")

    return losses


def _evaluating(method):
    """A :class:`MergeMoves` method run with the network in evaluation mode (BatchNorm on its
    running statistics), its mode restored however the method ends."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        net = self.guide.net
        was_training = net.training
        net.eval()
        try:
            return method(self, *args, **kwargs)
        finally:
            net.train(was_training)

    return run


class MergeMoves:
    """Greedy merge moves on one layer at a time (:meth:`layer`).

    A move is accepted when the data say, with confidence, that it lowers F: with d_n the change
    of example n's loss on held-out half of the sample (the other half fits the
    reconstruction), N (mean(d) + z·sd(d)/√n) + ΔP < 0, where ΔP is the change of the prior
    term (the unit's price, less what the re-wired weights now cost). A move whose effect on
    the data is within noise of zero is accepted only for a price well above that noise.

    :param guide: the guide (point-mass weights, structured or coupled posterior).
    :param hyper: the hyper-prior (its temperature prices the units).
    :param num_data: N, the number of training examples (the data term is N × the mean).
    :param confidence: the level, as a z, that a unit's tests spend together (Eq. (14a)): its
        k-th test is at the stricter z of :meth:`z` (2.28 for the first at the default 2), so
        that over all its tests the chance of accepting a move that does not lower F stays that
        of one test at ``confidence``; with ``spend`` False every test is at ``confidence``.
    :param max_rejections: a layer's round stops after this many rejected proposals.
    :param spend: whether repeated tests get stricter (Eq. (14a)); False: all at ``confidence``
        (a round's group moves then share its level over their sizes).
    :param groups: after a layer's single moves, one move of a group of its units (Eq. (14j),
        :meth:`_group_move`): True, in every layer; ``"auto"``, in a layer while it has more
        units than inputs per unit + 1 (:meth:`groups_in`).
    :param group_cap: the largest group under ``groups="auto"`` (:meth:`group_cap_in`):
        ``"excess"``, the layer's live units beyond inputs per unit + 1, so that a group move
        never takes a layer below the width its input can make independent; ``"half"``, half
        the live units (the cap of every group move with ``groups=True``, and of ``"auto"``
        before Eq. (14x)).
    """

    def __init__(
        self,
        guide: GateGuide,
        hyper: HyperPrior,
        num_data: int,
        confidence: float = 2.0,
        max_rejections: int = 10,
        spend: bool = True,
        groups: bool | str = False,
        group_cap: str = "excess",
    ):
        if not merges_apply(guide):
            raise ValueError(
                "merge moves need point-mass weights and the structured or coupled posterior"
            )
        self.guide, self.hyper, self.num_data = guide, hyper, num_data
        self.confidence, self.max_rejections = confidence, max_rejections
        self.spend = spend  # False: every test at ``confidence`` (before Eq. (14a))
        if groups not in (True, False, "auto"):
            raise ValueError(f"groups must be True, False or 'auto', not {groups!r}")
        self.groups = groups  # Eq. (14j): a group move after the single moves of a round
        if group_cap not in GROUP_CAPS:
            raise ValueError(f"group_cap must be one of {GROUP_CAPS}, not {group_cap!r}")
        self.group_cap = group_cap  # Eq. (14x): how far an ``auto`` group move may go
        # (layer, original unit id), or (layer, "group") for its group moves: times tested
        self.tests: dict[tuple[str, int | str], int] = {}
        # data-parallel training (bayesprune.distributed): this process measures its share
        # (rank, processes) of each half of the sample, and ``reduce`` sums a float64 tensor
        # over the processes, so every process takes the same decisions from the whole sample
        self.shard: tuple[int, int] = (0, 1)
        self.reduce = None
        # Eq. (14e): per gated layer, the units its gates are heading for keeping (None: price
        # every live unit); a move is priced against those of the *other* layers
        self.expected: Callable[[], dict[str, torch.Tensor]] | None = None

    def groups_in(self, name: str, width: int) -> bool:
        """Whether a round of layer ``name``, ``width`` units live after its single moves, ends
        with a group move. With ``groups="auto"``: while the layer has more units than its
        units have inputs (weights and bias, ``fan_in + 1``). Then their pre-activations are
        linearly dependent, so the units are redundant jointly: a tabular or small input's
        first layer, where single moves cannot take a unit over (docs/method.md §6zb), or a
        second layer wider than the first layer it reads once that has been pruned; §6zzb
        measures where that helps and where it costs. A layer with no more units than inputs
        per unit keeps single moves only."""
        if self.groups == "auto":
            return self.excess(name, width) > 0
        return bool(self.groups)

    def excess(self, name: str, width: int) -> int:
        """How many of layer ``name``'s ``width`` units are beyond its inputs per unit + 1
        (``fan_in + 1``): the units whose pre-activations the others' make linearly dependent,
        which both (14j)'s switch (:meth:`groups_in`) and (14x)'s cap (:meth:`group_cap_in`)
        read."""
        return width - (self.guide.net.fan_in(name) + 1)

    def group_cap_in(self, name: str, live: int) -> int:
        """The most units one group move may take from layer ``name`` with ``live`` units, before
        the round's free places (Eq. (14t)): half of them, or under ``groups="auto"`` with
        ``group_cap="excess"`` (Eq. (14x)) no more than the units beyond inputs per unit + 1.

        Those are the units (14j)'s switch is about: w pre-activations of a k-dimensional input
        (k = fan-in + 1) span at most k dimensions, so w − k of them are linear combinations
        of the others; a group beyond that takes units whose pre-activations no others
        rebuild, which the single moves test one by one. Measured (docs/method.md §6zzd):
        where a half-layer group's saving is about its test's bound it passes or fails on the
        test's noise, so under the half cap a later layer's width depended on the seed.
        """
        cap = live // 2
        if self.groups == "auto" and self.group_cap == "excess":
            cap = min(cap, self.excess(name, live))
        return cap

    def z(self, k: int) -> float:
        """z of a unit's k-th test (k = 1, 2, …): level α/(k(k+1)), α = 1 − Φ(confidence).

        A unit is proposed in every round until it goes, on a new sample each time. At a fixed
        z a move whose true effect is no gain would be accepted once the noise of one sample
        falls below −z·sd/√n, and a run makes dozens of rounds: the accepted moves were the
        lucky draws (measured: their held-out data term *fell* on average, −6e-4 nats per
        example on Fashion-MNIST, while the units went on being removed to the last step).
        Since Σ_k α/(k(k+1)) = α, the union bound keeps the probability that such a move is
        ever accepted at α, the level of a single test, however often it is proposed.
        """
        if not self.spend:
            return self.confidence
        return self._z_at(k * (k + 1))

    def _z_at(self, share: float) -> float:
        """z of a one-sided test at level α/``share``, α = 1 − Φ(confidence)."""
        alpha = 1.0 - NormalDist().cdf(self.confidence)
        return NormalDist().inv_cdf(1.0 - alpha / share)

    def _mine(self, xs: torch.Tensor) -> torch.Tensor:
        rank, world = self.shard
        return xs if world == 1 else torch.tensor_split(xs, world)[rank]

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.reduce is None else self.reduce(t)

    def _mode_gates(self) -> dict[str, torch.Tensor]:
        return self.guide.mode_gates()

    def _prior(self, gates: dict[str, torch.Tensor]) -> float:
        return float(point_mass_prior(self.guide, self.hyper, gates, None, []))

    def _pricing_gates(self, name: str, gates: dict[str, torch.Tensor]) -> dict:
        """The gates a move on layer ``name`` is priced with (Eq. (14e)).

        ``name``'s own entry is ``gates[name]`` itself (the proposals switch its units in
        place); every other layer keeps only the units its gates are heading for keeping, so
        that a layer is not priced against producer (or consumer) units on their way out.
        """
        keep = (None if self.expected is None else self.expected()) or {}
        return {n: g if n == name or n not in keep else g * keep[n].to(g.dtype)
                for n, g in gates.items()}  # fmt: skip

    def _reading(self, name: str) -> tuple:
        """What a merge round or a settle of layer ``name`` reads: its consumer's name, module
        and op index, the posterior mode's gates and the layer's live units in them (a copy)."""
        net = self.guide.net
        consumer = net.next_layer(name)
        gates = self._mode_gates()
        live = gates[name].bool().clone()
        return consumer, net.layers[consumer], net.op_index(consumer), gates, live

    @torch.no_grad()
    @_evaluating
    def layer(
        self,
        name: str,
        x: torch.Tensor,
        y: torch.Tensor,
        cache: dict | None = None,
        limit: int | None = None,
    ) -> tuple[list[Merge], list[int]]:
        """Merge units of gated layer ``name`` into the others while F falls (on ``x``, ``y``).

        The first half of the sample fits the reconstructions, the second measures the moves.
        Changes the consumer's weights of every accepted move in place and returns the moves
        and the (current) indices of the removed units; the caller removes them physically
        (their gates are not touched). The network is evaluated at the posterior mode (a unit
        is on iff θ ≥ ½), in evaluation mode.

        ``cache``: one dict for the rounds of several layers on the same sample (the same
        ``x`` object), from the input on. A round leaves there what its consumer received, and
        the next layer's round goes on from it instead of running the network from the input
        again, the same operations on the same chunks (bitwise the same values); a round that
        accepts a move changes the network and empties it.

        ``limit``: the round ends once it has removed this many units (Eq. (14t)); ``None``:
        no limit.
        """
        net = self.guide.net
        consumer, layer, start, gates, live = self._reading(name)
        if int(live.sum()) < 2:
            return [], []
        sample = x  # the caller's tensor: a cache holds activations of this sample only
        x = x.reshape(x.shape[0], *net.in_shape)
        per_example = net.run_ops(x[:1], gates, stop=start).numel()
        n = min(x.shape[0], max(256, 2 * BUDGET // per_example))  # big maps: fewer examples
        x, y = x[:n], y[:n]
        width, half = net.width(name), n // 2
        prefix = None if cache is None else cache.pop("received", None)
        if prefix is not None and (
            prefix["sample"] is not sample or prefix["stop"] > start or prefix["n"] != n
        ):
            prefix = None  # another sample, another sample size, or further on

        def received(part: str, xs: torch.Tensor):  # what the consumer receives, by chunk
            if prefix is None:
                return (net.run_ops(c, gates, stop=start) for c in xs.split(CHUNK))
            return (net.run_ops(c, gates, start=prefix["stop"], stop=start)
                    for c in prefix[part])  # fmt: skip

        # second moments of the units' outputs and a constant, over examples and positions
        gram = torch.zeros(width + 1, width + 1, dtype=torch.float64, device=x.device)
        count, first = 0, []
        for chunk in received("first", self._mine(x[:half])):
            if cache is not None:  # kept for the next layer's round only
                first.append(chunk)
            feats = unit_features(chunk, width).to(torch.float64)
            aug = torch.cat([feats, feats.new_ones(feats.shape[0], 1)], 1)
            gram = gram + aug.T @ aug
            count += feats.shape[0]
        h = torch.cat(list(received("second", self._mine(x[half:]))))
        prefix = None  # the previous round's activations are not needed any more
        if cache is not None:  # the held-out half as views of h, in the same chunks
            cache["received"] = {
                "sample": sample,
                "stop": start,
                "n": n,
                "first": first,
                "second": list(h.split(CHUNK)),
            }
        gram = self._sum(gram)
        count = int(self._sum(gram.new_tensor(float(count))).item())
        gram = gram / count
        ridge = 1e-8 * float(gram.diagonal().mean())
        eye = torch.eye(width + 1, dtype=gram.dtype, device=gram.device)
        constant = torch.tensor([width], device=live.device)
        y = self._mine(y[half:])

        losses = rest_losses(net, consumer, gates, y)  # the held-out half's

        z = consumer_map(net, consumer, h)
        priced = self._pricing_gates(name, gates)
        before, prior = losses(z), self._prior(priced)
        block = net.blocks[consumer]
        ids = self.guide.unit_ids(name)
        merges, removed, rejected = [], [], torch.zeros_like(live)

        def scores(idx, inv):  # residual energy × outgoing weights², per live unit
            residual = 1.0 / inv.diagonal()[:-1]  # output energy the others cannot rebuild
            outgoing = self._outgoing(layer, block, width).to(gram.dtype)[idx[:-1]]
            return residual * outgoing

        idx = torch.cat([torch.nonzero(live).flatten(), constant])
        inv = torch.linalg.inv(gram[idx][:, idx] + ridge * eye[: len(idx), : len(idx)])
        base_score = scores(idx, inv)
        while int((~rejected).sum()) and int(live.sum()) > 1:
            score = base_score.clone()
            score[rejected[idx[:-1]]] = float("inf")
            pick = int(torch.argmin(score))
            if not torch.isfinite(score[pick]):
                break
            unit = int(idx[pick])
            coef = -inv[:, pick] / inv[pick, pick]  # h_unit ≈ Σ_j coef_j h_j + coef_const
            coef[pick] = 0.0
            gates[name][unit] = 0.0
            proposed = self._change(layer, h, width, unit, idx, coef, base=z)
            after = losses(proposed)
            saved = (layer.weight.detach().clone(), layer.bias.detach().clone())
            self._rewire(layer, block, width, unit, idx, coef)  # ΔP: the re-wired weights'
            new_prior = self._prior(priced)  # cost too
            mean, sd, m = self._moments(after - before)
            key = (name, int(ids[unit]))
            self.tests[key] = self.tests.get(key, 0) + 1
            bound = mean + self.z(self.tests[key]) * sd / m**0.5
            delta_prior = new_prior - prior
            if bound * self.num_data + delta_prior < 0:
                delta_data = mean * self.num_data
                merges.append(Merge(name, int(ids[unit]), delta_data, delta_prior))
                removed.append(unit)
                live[unit] = False
                # the re-wired consumer's map and losses are the proposal's (the map is
                # linear in its weights): no second pass over the held-out half
                z, before, prior = proposed, after, new_prior
                idx, inv = downdate(idx, inv, pick)
                base_score = scores(idx, inv)  # the re-wiring changed the outgoing weights
                if limit is not None and len(removed) >= limit:
                    break
            else:
                layer.weight.copy_(saved[0])
                layer.bias.copy_(saved[1])
                gates[name][unit] = 1.0
                rejected[unit] = True
                if int(rejected.sum()) >= self.max_rejections:
                    break
        left = int(live.sum())
        if left > 3 and self.groups_in(name, left):
            self._group_move(
                name, layer, live, idx=idx, inv=inv, base_score=base_score, gram=gram,
                ridge=ridge, eye=eye, h=h, z=z, before=before, prior=prior, priced=priced,
                gates=gates, losses=losses, ids=ids, merges=merges, removed=removed,
                limit=limit,
            )  # fmt: skip
        if merges and cache is not None:  # the network changed: nothing to go on from
            cache.clear()
        return merges, removed

    @torch.no_grad()
    @_evaluating
    def settle(
        self,
        name: str,
        x: torch.Tensor,
        y: torch.Tensor,
        max_passes: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[list[Merge], list[int]]:
        """The final settle (Eq. (15)): silence layer ``name``'s units one at a time while that
        lowers F with confidence, on the trained network (no re-wiring, no retraining).

        Each pass measures, for every live unit, the change d_n of each example's loss on
        ``x``, ``y`` when the unit alone is silenced (its outgoing weights read nothing) and
        the change ΔP of the prior term, and takes the unit with the lowest
        N (mean d + z sd(d)/√n) + ΔP if that is below 0 (z: ``confidence``, the level of one
        test, Eq. (10s)'s), then measures again on the network it leaves. The gates' evidence
        is a curvature averaged over a window of a moving network; this is the exact change of
        F at the weights the run ends with, the decision of Eq. (9) taken on them.
        Returns the moves (in the order taken) and the (current) indices of the silenced units;
        the caller removes them physically. Nothing is fitted, so the whole sample measures.
        ``max_passes``: stop after that many passes (each removes at most one unit), the
        budget of Eq. (15c); ``None``: while a unit qualifies. ``stop``: asked before each
        unit is measured; once it answers True the settle raises :class:`SettleStopped`,
        leaving the network as it was (the trainer's signal check: a pass over a wide layer
        can take minutes, and Ctrl-C must not wait for all of them).
        """
        net = self.guide.net
        consumer, layer, start, gates, live = self._reading(name)
        x = self._mine(x.reshape(x.shape[0], *net.in_shape))
        y = self._mine(y)
        h = torch.cat([net.run_ops(c, gates, stop=start) for c in x.split(CHUNK)])
        losses = rest_losses(net, consumer, gates, y)

        z = consumer_map(net, consumer, h)
        before = losses(z)
        width, n = net.width(name), len(y)
        prices = self._silencing_prices(name, gates, layer, width, live)
        ids = self.guide.unit_ids(name)
        # Silencing a unit changes only the examples on which it emits something: elsewhere
        # its d_n is 0. So each unit's d is kept from pass to pass and measured again only on
        # the examples where both it and the unit the last pass removed emit something (the
        # network is the same on the others): the same d, at a fraction of the passes' cost.
        active = h.reshape(n, width, -1).ne(0).any(dim=2)  # (examples, units)
        changes: dict[int, torch.Tensor] = {}  # unit -> its d on the network now
        changed = torch.ones(n, dtype=torch.bool, device=active.device)  # where it changed
        moves, removed = [], []
        while int(live.sum()) > 1 and (max_passes is None or len(removed) < max_passes):
            best = None
            for unit in torch.nonzero(live).flatten().tolist():
                if stop is not None and stop():
                    raise SettleStopped(name)
                d = changes.setdefault(unit, before.new_zeros(n))
                rows = torch.nonzero(active[:, unit] & changed).flatten()
                if len(rows):
                    d[rows] = self._silenced_losses(losses, layer, h, z, width, unit, rows)
                    d[rows] -= before[rows]
                mean, sd, m = self._moments(d)
                delta_prior = prices[unit]
                score = (mean + self.confidence * sd / m**0.5) * self.num_data + delta_prior
                if score < 0 and (best is None or score < best[0]):
                    best = (score, unit, mean, delta_prior)
            if best is None:
                break
            _, unit, mean, delta_prior = best
            changed = active[:, unit]
            rows = torch.nonzero(changed).flatten()
            if len(rows):  # (a unit that emits nothing changes nothing)
                z[rows] += self._silenced(layer, h[rows], width, unit)
                before[rows] = losses(z[rows], rows)
            del changes[unit]
            gates[name][unit] = 0.0
            live[unit] = False
            moves.append(Merge(name, int(ids[unit]), mean * self.num_data, delta_prior))
            removed.append(unit)
        return moves, removed

    @classmethod
    def _silenced_losses(cls, losses, layer, h, z, width: int, unit: int, rows) -> torch.Tensor:
        """The losses of examples ``rows`` with unit ``unit`` silenced: run on those rows alone,
        or on all of them where more than three in four are asked for (a filter's map is seldom
        0 on a whole example, and gathering most of a large map costs more than it saves)."""
        if 4 * len(rows) <= 3 * len(z):
            return losses(z[rows] + cls._silenced(layer, h[rows], width, unit), rows)
        if z.dim() == 2:
            return losses(z + cls._silenced(layer, h, width, unit))[rows]
        # a convolution's maps: chunk by chunk, no second map of the whole sample made
        return torch.cat([
            losses(z[i : i + CHUNK] + cls._silenced(layer, h[i : i + CHUNK], width, unit),
                   slice(i, i + CHUNK))
            for i in range(0, len(z), CHUNK)
        ])[rows]  # fmt: skip

    def _silencing_prices(self, name, gates, layer, width: int, live) -> dict[int, float]:
        """ΔP of silencing each live unit of layer ``name`` alone (its gate off, the consumer's
        weights that read it zeroed: the prior of the network with the unit removed), priced
        as a merge move is (Eq. (14e)). The prior is affine in each gate and has no product of
        two gates of one layer (Eq. (4c): a unit's KL reads its producers' gates, the read-out
        none), so one unit's ΔP does not depend on which others of its layer are silenced: the
        prices of a layer's settle are computed once."""
        priced = self._pricing_gates(name, gates)
        prior = self._prior(priced)
        weight = layer.weight.data
        columns = weight.view(weight.shape[0], width, -1) if weight.dim() == 2 else weight
        prices = {}
        for unit in torch.nonzero(live).flatten().tolist():
            saved = columns[:, unit].clone()
            columns[:, unit] = 0.0
            gates[name][unit] = 0.0
            prices[unit] = self._prior(priced) - prior
            columns[:, unit] = saved
            gates[name][unit] = 1.0
        return prices

    @staticmethod
    def _silenced(layer, h: torch.Tensor, width: int, unit: int) -> torch.Tensor:
        """The change of the consumer's map of ``h`` when producer unit ``unit`` is silenced:
        the map, by the unit's outgoing weights alone, of −h_unit (the map is linear)."""
        w = layer.weight
        if w.dim() == 4:
            parts = [F.conv2d(-c[:, unit : unit + 1], w[:, unit : unit + 1], padding=layer.padding)
                     for c in h.split(CHUNK)]  # fmt: skip
            return torch.cat(parts)
        out_w = w.view(w.shape[0], width, -1)[:, unit]  # (out, P)
        return -(h.view(h.shape[0], width, -1)[:, unit] @ out_w.T)

    def _moments(self, diff: torch.Tensor) -> tuple[float, float, int]:
        """Mean, standard deviation (n − 1) and count of the loss changes over the whole
        held-out half (summed over the processes' shares)."""
        if self.reduce is None:  # one process: the statistics as they always were computed
            return float(diff.mean()), float(diff.std()), len(diff)
        d = diff.to(torch.float64)
        sums = self._sum(torch.stack([d.new_tensor(float(len(d))), d.sum(), d.square().sum()]))
        m, total, squares = (float(v) for v in sums)
        mean = total / m
        var = max(squares - m * mean * mean, 0.0) / max(m - 1, 1)
        return mean, var**0.5, int(m)

    def _group_move(self, name, layer, live, *, idx, inv, base_score, gram, ridge, eye, h, z,
                    before, prior, priced, gates, losses, ids, merges, removed, limit) -> None:
        """Eq. (14j): one move of a group of ``name``'s live units, taken over jointly by the
        others, after the round's single moves (any consumer: a Linear, a Flatten's Linear or a
        convolution, :func:`rewire_jointly`).

        The units are ordered by backward elimination on the fitting half
        (:func:`elimination_order`): each next one is the cheapest (residual energy × outgoing
        weights², as the single moves rank them) to rebuild from the units still kept, so a
        group does not take a unit together with the only other that rebuilds it (units that
        feed nothing cost nothing either way). The
        groups are the first k of that order, k = c, c/2, c/4, … ≥ 2, c the round's free places
        (Eq. (14t)'s limit) and at most :meth:`group_cap_in`'s cap (half the live units;
        under ``auto``, the units beyond inputs per unit + 1, Eq. (14x)); the consumer reads
        the group's least-squares reconstruction from the kept units and a constant, and the
        largest group
        whose move passes the test of Eq. (14), N (mean d + z sd(d)/√n) + ΔP < 0, is taken. A
        single move prices one unit against the norm its take-over adds to the others'
        outgoing weights; a group's saving grows with its size, its data cost and noise more
        slowly, which is what a layer of cheap units (few inputs each) needs. The level: the
        layer's group tests spend α over its rounds as a unit's tests do (Eq. (14a); the count
        is the layer's, over the whole run), split evenly over the sizes tried in a round; with
        ``spend`` False (``--merge-tests fixed``) every round's tests share α over its sizes.

        ``idx``, ``inv``, ``base_score``: the live units and the constant, the inverse Gram and
        the single moves' scores of :meth:`layer`'s last reconstruction (the live units now).
        """
        cap = self.group_cap_in(name, int(live.sum()))
        if limit is not None:
            cap = min(cap, limit - len(removed))
        sizes, k = [], cap
        while k >= 2:
            sizes.append(k)
            k //= 2
        if not sizes:
            return
        # base_score is outgoing / inv_jj: the outgoing weights² back, in the scores' arithmetic
        picks = elimination_order(inv, base_score * inv.diagonal()[:-1], cap)
        order = idx[:-1][torch.tensor(picks, device=idx.device)]
        constant = idx[-1:]
        key = (name, "group")
        self.tests[key] = self.tests.get(key, 0) + 1
        tests = self.tests[key]
        spent = tests * (tests + 1) if self.spend else 1
        z_group = self._z_at(spent * len(sizes))
        w, b = layer.weight.data, layer.bias.data
        width = len(live)
        for k in sizes:
            group = order[:k]
            keep = live.clone()
            keep[group] = False
            kept = torch.cat([torch.nonzero(keep).flatten(), constant])
            coef = joint_coefficients(gram, ridge, eye, kept, group)
            proposed = z + self._group_change(layer, h, width, kept, group, coef)
            gates[name][group] = 0.0
            after = losses(proposed)
            saved = (w.clone(), b.clone())
            rewire_jointly(w, b, kept, group, coef, width)
            new_prior = self._prior(priced)
            mean, sd, m = self._moments(after - before)
            delta_prior = new_prior - prior
            if (mean + z_group * sd / m**0.5) * self.num_data + delta_prior < 0:
                for unit in group.tolist():  # the group's changes, shared out over its units
                    merges.append(
                        Merge(name, int(ids[unit]), mean * self.num_data / k, delta_prior / k)
                    )
                    removed.append(unit)
                live[group] = False
                return
            w.copy_(saved[0])
            b.copy_(saved[1])
            gates[name][group] = 1.0

    @staticmethod
    def _group_change(layer, h: torch.Tensor, width: int, kept, group, coef) -> torch.Tensor:
        """What :func:`rewire_jointly` would change in the consumer's map of ``h`` (Eq. (14j)),
        without touching its weights: the map, by the group's outgoing weights alone, of the
        reconstructions' residuals r_g = Σ_j coef_jg h_j + coef_const,g − h_g, the constants
        through the bias as the re-wiring puts them there (for a Linear after a Linear, the
        single-value residuals times the group's columns)."""
        w = layer.weight
        if w.dim() == 4:  # a convolution: residual maps, convolved with the group's slices
            out_w = w[:, group]
            parts = []
            for c in h.split(CHUNK):
                r = torch.einsum("njhw,jg->nghw", c[:, kept[:-1]].double(), coef[:-1])
                r = r - c[:, group].double()
                parts.append(F.conv2d(r.to(w.dtype), out_w, stride=layer.stride,
                                      padding=layer.padding, dilation=layer.dilation))  # fmt: skip
            shift = (out_w.double().sum((2, 3)) @ coef[-1]).to(w.dtype)
            return torch.cat(parts) + shift.view(1, -1, 1, 1)
        n, view = h.shape[0], _blocks(w, width)
        out, per = view.shape[0], view.shape[2]
        if per == 1:
            residual = h[:, kept[:-1]].double() @ coef[:-1] + coef[-1] - h[:, group].double()
            return residual.to(w.dtype) @ w[:, group].T
        hv = h.view(n, width, per).permute(0, 2, 1)  # (n, P, width)
        residual = hv[..., kept[:-1]].double() @ coef[:-1] + coef[-1] - hv[..., group].double()
        out_w = view[:, group].permute(0, 2, 1).reshape(out, per * len(group))
        return residual.reshape(n, per * len(group)).to(w.dtype) @ out_w.T

    @staticmethod
    def _outgoing(layer, block: int, width: int) -> torch.Tensor:
        """‖weights unit s feeds‖² per unit of the producing layer."""
        w = layer.weight.detach()
        if w.dim() == 4:  # a convolution: (out, in, k, k)
            return w.square().sum((0, 2, 3))
        return w.square().reshape(w.shape[0], width, block).sum((0, 2))

    @staticmethod
    def _change(
        layer, h: torch.Tensor, width: int, unit: int, idx, coef, base: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What :meth:`_rewire` would change in the consumer's map of ``h``, without touching
        its weights: the map is linear in its input and its weights, so re-wiring adds the map,
        by the unit's outgoing weights alone, of the reconstruction's residual
        r = Σ_j coef_j h_j − h_unit, plus coef_const times their sum. One input channel instead
        of the whole layer: a rejected proposal costs the residual and the layers after the
        consumer, not the consumer.

        ``base``: the consumer's map before the move; then ``base`` plus the change is returned,
        added chunk by chunk in place (the same values as ``base + _change(…)``, bitwise: the
        same two additions, without the change's map and a sum as two more full-size tensors).
        """
        w = layer.weight
        full = torch.zeros(width, dtype=w.dtype, device=w.device)
        full[idx[:-1]] = coef[:-1].to(w.dtype)
        const = float(coef[-1])
        if w.dim() == 4:
            out_w = w[:, unit : unit + 1]  # (out, 1, k, k)
            shift = const * w[:, unit].sum((1, 2)).view(1, -1, 1, 1)
            out = None if base is None else torch.empty_like(base)
            parts = []
            for i, c in enumerate(h.split(CHUNK)):
                r = torch.einsum("nshw,s->nhw", c, full) - c[:, unit]
                part = F.conv2d(r.unsqueeze(1), out_w, padding=layer.padding)
                if out is None:
                    parts.append(part)
                    continue
                part.add_(shift)  # (the change) + base = base + (the change): one rounding
                rows = slice(i * CHUNK, i * CHUNK + len(c))
                torch.add(part, base[rows], out=out[rows])
            return torch.cat(parts) + shift if out is None else out
        out_w = w.view(w.shape[0], width, -1)[:, unit]  # (out, P)
        hv = h.view(h.shape[0], width, -1)
        r = torch.einsum("nsp,s->np", hv, full) - hv[:, unit]
        change = r @ out_w.T
        change.add_(const * out_w.sum(1))
        return change if base is None else change.add_(base)

    @staticmethod
    def _rewire(layer, block: int, width: int, unit: int, idx, coef) -> None:
        """Consumer reads Σ_j coef_j h_j + coef_const instead of h_unit; h_unit's weights → 0."""
        w, b = layer.weight.data, layer.bias.data
        others, const = idx[:-1], float(coef[-1])
        c = coef[:-1].to(w.dtype)
        if w.dim() == 4:
            out_w = w[:, unit].clone()  # (out, k, k)
            w[:, others] += c.view(1, -1, 1, 1) * out_w.unsqueeze(1)
            b += const * out_w.sum((1, 2))
            w[:, unit] = 0.0
            return
        view = w.view(w.shape[0], width, block)
        out_w = view[:, unit].clone()  # (out, P)
        view[:, others] += c.view(1, -1, 1) * out_w.unsqueeze(1)
        b += const * out_w.sum(1)
        view[:, unit] = 0.0
