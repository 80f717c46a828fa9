"""Projected gate updates on the per-example clock: the θ update of Eq. (10)."""

from __future__ import annotations

import inspect

import torch
from pyro.optim import PyroOptim


class ProjectedSGD(torch.optim.Optimizer):
    """Evidence average and projected step, both measured in examples seen, not in steps.

    With ĝ = ∇/N the mini-batch estimate of the per-example θ-gradient (the parameters' ``grad``
    holds ∂F/∂θ of the whole-data objective F), a step that has seen B examples does

        m ← m + a (ĝ − m),   a = min(1, B / window)        (the evidence: an average over the
                                                             last ``window`` examples)
        θ ← clip(θ − η B m, low, high)                       (η per example seen)

    (with at most a fraction ``transit`` of a layer's units away from ``high`` at once)

    so k steps of batch B and k/2 steps of batch 2B move θ alike in expectation: the drift of θ
    per example, and the number of examples its evidence averages, do not depend on the batch
    size (Eq. (10)). ``m`` starts at 0 and fills over ``window`` examples. The projection makes
    the vertices θ ∈ {0, 1} reachable exactly, which the pruning condition (Eq. (12)) relies on.
    State ``evidence`` has the parameter's shape, so physical removal slices it with the
    parameter.

    With ``confidence`` z > 0 the step uses d = m − z·se(m) in place of m (Eq. (10s)): θ falls
    only while the window's evidence says, at z standard errors, that the unit is worth less than
    its price, and rises otherwise. se(m)² = v·a/(2 − a) is the variance of the running average
    for steps whose estimates ĝ vary with variance v, estimated online as the running average of
    ĝ² (state ``evidence_sq``) less m², while the unit is at ``high`` (held in transit, state
    ``evidence_se``; a unit not yet at ``high`` since the start, state ``evidence_was_on``, is
    measured in transit too); d is kept as state ``decision``.

    :param params: the θ tensors.
    :param lr: η, the step per example seen and per unit of per-example evidence.
    :param window: the number of examples the evidence averages (``1/a`` batches of size B).
    :param num_data: N, the number of training examples (∇ is divided by it).
    :param bounds: the box to project onto.
    :param confidence: z of Eq. (10s); 0: θ follows the sign of m (no test).
    :param transit: the largest fraction of a layer's units (one θ tensor) whose θ may be away
        from ``high`` at once (Eq. (10t)); a unit whose step would take it below ``high`` waits
        at ``high`` while that many are away, those with the largest evidence go first. 1: no
        limit.
    """

    def __init__(
        self,
        params,
        lr: float,
        window: float,
        num_data: int,
        bounds=(0.0, 1.0),
        transit: float = 1.0,
        confidence: float = 0.0,
    ):
        if lr <= 0 or window <= 0 or num_data < 1 or not 0 < transit <= 1 or not confidence >= 0:
            msg = (
                "need lr > 0, window > 0, num_data >= 1, 0 < transit <= 1, confidence >= 0; "
                f"got {lr}, {window}, {num_data}, {transit}, {confidence}"
            )
            raise ValueError(msg)
        defaults = {
            "lr": lr,
            "window": float(window),
            "num_data": int(num_data),
            "transit": float(transit),
            "confidence": float(confidence),
        }
        super().__init__(params, {**defaults, "bounds": tuple(bounds)})

    @torch.no_grad()
    def step(self, closure=None, examples: int = 1, move=True):
        """Average the evidence of a step that saw ``examples`` examples; move θ where allowed.

        :param move: ``True`` (every θ moves), ``False`` (none: the warm-up of Eq. (10w)
            accumulates evidence without moving θ) or a collection of the θ parameters that
            may move (the ordered release of Eq. (10o)).
        """
        for group in self.param_groups:
            low, high = group["bounds"]
            rate = min(1.0, examples / group["window"])
            # se(m)'s a is a full step's: an epoch's short last batch is not less noisy per step
            full = group["full_rate"] = max(group.get("full_rate", 0.0), rate)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                evidence = state.get("evidence")
                if evidence is None:
                    evidence = state["evidence"] = torch.zeros_like(p)
                per_example = p.grad / group["num_data"]
                evidence.lerp_(per_example, rate)
                decision = evidence
                z = group.get("confidence", 0.0)  # (a checkpoint from before Eq. (10s))
                if z > 0:
                    decision = _decision(state, per_example, evidence, rate, z, p >= high, full)
                if move is not True and (move is False or p not in move):
                    continue
                transit = group.get("transit", 1.0)  # (a checkpoint from before Eq. (10t))
                if transit >= 1:
                    p.add_(decision, alpha=-group["lr"] * examples).clamp_(low, high)
                else:
                    p.copy_(_limit_transit(p, decision, group["lr"] * examples, low, high, transit))


def _decision(
    state: dict, per_example, evidence, rate: float, z: float, on, full: float | None = None
) -> torch.Tensor:
    """d = m − z·se(m) of Eq. (10s), kept as ``state["decision"]``.

    se(m) is measured while the unit is on (θ at its upper bound, ``on``) and held while it is
    in transit: there its gate is drawn, and the draws' own spread (the secant's (½ − ξ)·h term
    flips with ξ) would widen se, lower d and hold θ between the vertices on noise it makes. A
    unit that has not been on yet (θ₀ < 1) has no se to hold: it is measured in transit until
    then, draws' spread included (with se held at 0, d was m and (10s) did nothing there).

    ``full``: a of a full step (the largest seen). v is the variance of a full step's ĝ, so
    se² = v·a/(2 − a) takes a full step's a: a short step (an epoch's last batch of b < B
    examples) enters the averages at rate b/W with ĝ b/B times as noisy, and leaves se(m) about
    where it was; with its own a it would shrink se by √(b/B) for that step (z = 2 read as
    z ≈ 1.2 at batch 256 on 60,000 examples, whose last batch is 96).
    """
    square = state.get("evidence_sq")
    if square is None:
        square = state["evidence_sq"] = torch.zeros_like(evidence)
        state["evidence_se"] = torch.zeros_like(evidence)
    square.lerp_(per_example.square(), rate)
    # the running average's variance for steps of variance v = E[ĝ²] − m²: v·a/(2 − a)
    a = rate if full is None else max(rate, full)
    variance = (square - evidence.square()).clamp_(min=0).mul_(a / (2 - a))
    # a unit that has not been on yet (started below the upper bound: --init-theta < 1) has no
    # se to hold, and its draws' spread is the only measure there is: a wider se, a more
    # cautious d (a checkpoint from before this state: a unit with an se has been measured)
    # (1.0 once on; a float, as the optimiser's load_state_dict casts its state to θ's dtype)
    was_on = state.get("evidence_was_on")
    if was_on is None:
        was_on = state["evidence_was_on"] = (state["evidence_se"] > 0).to(evidence.dtype)
    measured = on | (was_on == 0)
    was_on.masked_fill_(on, 1.0)
    se = state["evidence_se"] = torch.where(measured, variance.sqrt_(), state["evidence_se"])
    state["decision"] = decision = evidence - z * se
    return decision


def _limit_transit(theta, evidence, scale, low, high, fraction, host=None) -> torch.Tensor:
    """The projected step of Eq. (10) with at most ``⌊fraction · n⌋`` of the n units away from
    ``high`` afterwards (Eq. (10t)): units already away move freely; of those that would leave
    ``high`` now, the ones with the largest evidence go first, up to the free places; ties go
    to the lower index. On a GPU (``host`` False by default there) tensor operations only, no
    host synchronisation; on the CPU the host first counts the units that would leave and
    ranks them only when some, but not all, of them fit (the same result, tested)."""
    new = (theta - scale * evidence).clamp(low, high)
    at_top = theta >= high
    leaving = at_top & (new < high)
    if host is None:
        host = not theta.is_cuda
    if host:
        count = int(leaving.sum())
        if count == 0:  # nobody leaves: the plain step
            return new
        free = int(fraction * theta.numel()) - int((~at_top).sum())
        if count <= free:  # all of them fit
            return new
        if free <= 0:  # no place: every unit that would leave waits at the top
            return torch.where(leaving, theta, new)
    else:
        free = int(fraction * theta.numel()) - (~at_top).sum()
    score = torch.where(leaving, evidence, torch.full_like(evidence, -torch.inf))
    order = torch.argsort(score, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return torch.where(leaving & (rank >= free), theta, new)


def multi_tensor(constructor, params, kwargs: dict) -> torch.optim.Optimizer:
    """``constructor(params, **kwargs)`` with its fused kernels where it has them.

    Fused Adam updates each parameter in one kernel (CPU and CUDA); the ``foreach`` path runs
    about ten element-wise operations per tensor, which at LeNet-300-100 size cost 0.53 ms a step
    against 0.20 ms fused (1 thread). An optimiser or dtype without a fused kernel gets
    ``foreach``.
    """
    params = list(params)
    if "fused" not in kwargs and "foreach" not in kwargs:
        try:
            return constructor(params, **kwargs, fused=True)
        except (TypeError, RuntimeError, ValueError):
            pass
    return constructor(params, **{"foreach": True, **kwargs})


class GateOptim(PyroOptim):
    """A ``pyro.optim`` optimiser for SVI on a gated network: projected θ steps, Adam (or the
    ``weights_optimizer`` given) elsewhere.

    :class:`pyro.infer.SVI` hands every step the parameters its trace saw. Those the guide marks
    as θ's storage (:class:`~bayesprune.guides.GateGuide`) take the projected step of
    :class:`ProjectedSGD` (Eq. (10)); all others (the network's weights, Gaussian scales, or an
    ``AutoNormal``'s parameters) share one multi-tensor ``torch.optim`` optimiser (Adam by
    default). Unlike :class:`~pyro.optim.PyroOptim`'s one optimiser per parameter, both are
    single optimisers over all their parameters (fused or ``foreach`` kernels,
    :func:`multi_tensor`), and parameters seen for the first time join them as new groups.

    Per step, :meth:`configure` says how many examples the mini-batch had (the θ clock of Eq.
    (10); ``batch_size`` by default) and which θ may move (Eqs. (10w), (10o)).

    :param weights_args: keyword arguments of the weights' optimiser (e.g. ``{"lr": 1e-3}``).
    :param gates_args: keyword arguments of :class:`ProjectedSGD` (``lr``, ``window``,
        ``num_data``, and ``transit`` and ``confidence``, the switches of Eqs. (10t) and (10s)).
    :param batch_size: examples per step unless :meth:`configure` says otherwise.
    :param params: parameters to build the optimisers on now (else on the first step), so that
        a learning-rate scheduler can be attached to :attr:`weights` before training.
    :param weights_optimizer: the ``torch.optim`` class of the weights' optimiser.
    :param gates_optimizer: θ's optimiser class (:class:`ProjectedSGD` by default, or
        :class:`ProjectedAdam`); its ``step`` takes ``examples`` and ``move``.
    """

    def __init__(
        self,
        weights_args: dict,
        gates_args: dict,
        batch_size: int = 1,
        params=None,
        weights_optimizer=torch.optim.Adam,
        gates_optimizer=None,
    ):
        super().__init__(weights_optimizer, weights_args)
        self.gates_args = dict(gates_args)
        self.gates_optimizer = ProjectedSGD if gates_optimizer is None else gates_optimizer
        try:  # θ's optimiser is built at the first step: its arguments are checked now
            inspect.signature(self.gates_optimizer).bind([], **self.gates_args)
        except TypeError as err:
            raise TypeError(
                f"GateOptim: gates_args {sorted(self.gates_args)} do not fit "
                f"{self.gates_optimizer.__name__} ({err}); ProjectedSGD needs lr, window (examples "
                "its evidence averages) and num_data (N)"
            ) from None
        self.gate_grads: dict | None = None  # {param: grad} of the last step, when recorded
        self.record_gate_grads = False
        self.batch_size = int(batch_size)
        self.weights: torch.optim.Optimizer | None = None
        self.gates: ProjectedSGD | None = None
        self._seen: set = set()
        self.configure()
        if params is not None:
            self._admit(list(params))

    def configure(self, examples: int | None = None, move=True) -> None:
        """Set the next step's number of examples and which θ may move (see ProjectedSGD.step).

        ``move`` may be a callable returning that value, called at the θ step (after the
        objective of the step is known).
        """
        self._examples = self.batch_size if examples is None else int(examples)
        self._move = move

    @staticmethod
    def is_gate(p: torch.Tensor) -> bool:
        """Whether ``p`` stores gate probabilities (marked so by the guide)."""
        return getattr(p, "_bayesprune_gate", False)

    def _admit(self, params) -> None:
        new = [p for p in params if p not in self._seen]
        if not new:
            return
        self._seen.update(new)
        gates = [p for p in new if self.is_gate(p)]
        others = [p for p in new if not self.is_gate(p)]
        if others:
            if self.weights is None:
                self.weights = multi_tensor(self.pt_optim_constructor, others, self.pt_optim_args)
            else:
                self.weights.add_param_group({"params": others})
        if gates:
            if self.gates is None:
                self.gates = self.gates_optimizer(gates, **self.gates_args)
            else:
                self.gates.add_param_group({"params": gates})

    def __call__(self, params, *args, **kwargs) -> None:
        """One step on ``params`` (the parameters SVI's trace saw)."""
        params = list(params)
        self._admit(params)
        if self.weights is not None:
            self.weights.step()
        if self.gates is not None:
            if self.record_gate_grads:
                self.gate_grads = {
                    p: p.grad.detach().clone()
                    for group in self.gates.param_groups
                    for p in group["params"]
                    if p.grad is not None
                }
            move = self._move() if callable(self._move) else self._move
            self.gates.step(examples=self._examples, move=move)
        for p in params:  # as zero_grad(set_to_none=True): SVI's zero_grads then skips them,
            p.grad = None  # and the next backward writes the gradient instead of adding to 0

    def torch_optimizers(self) -> list[torch.optim.Optimizer]:
        """The underlying optimisers (their state follows physical removal of units)."""
        return [opt for opt in (self.weights, self.gates) if opt is not None]

    def get_state(self) -> dict:
        return {
            "weights": None if self.weights is None else self.weights.state_dict(),
            "gates": None if self.gates is None else self.gates.state_dict(),
        }

    def set_state(self, state_dict: dict) -> None:
        for key in ("weights", "gates"):
            opt = getattr(self, key)
            if state_dict.get(key) is not None:
                if opt is None:
                    raise ValueError(
                        f"GateOptim.set_state: build the {key} optimiser first (params=)"
                    )
                opt.load_state_dict(state_dict[key])
                _match_layouts(opt)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Lay every state tensor of a parameter's shape out as the parameter is: a checkpoint
    keeps its tensors' strides, and a run resumed where ``--memory-format auto`` chooses
    another layout (a GPU run resumed on the CPU: contiguous moments, channels-last weights)
    would otherwise step with moments that fused Adam pairs with the wrong entries."""
    for p, state in opt.state.items():
        for key, value in state.items():
            if (isinstance(value, torch.Tensor) and value.shape == p.shape
                    and value.stride() != p.stride()):  # fmt: skip
                state[key] = torch.empty_like(p).copy_(value)


class ProjectedAdam(torch.optim.Adam):
    """Adam on θ followed by the projection onto [0, 1] (``--theta-optimizer adam``).

    Steps per mini-batch, not per example (unlike :class:`ProjectedSGD`); kept as an alternative.
    :meth:`step` takes the same ``examples`` and ``move`` arguments as ProjectedSGD's.
    """

    def __init__(
        self,
        params,
        lr: float,
        window: float = 1.0,
        num_data: int = 1,
        transit: float = 1.0,
        confidence: float = 0.0,
    ):  # the transit limit of Eq. (10t) and the evidence test of Eq. (10s) are ProjectedSGD's:
        # here every θ moves freely, by Adam's normalised gradient
        super().__init__(params, lr=lr, foreach=True)

    @torch.no_grad()
    def step(self, closure=None, examples: int = 1, move=True):
        frozen = {
            p: p.detach().clone()
            for group in self.param_groups
            for p in group["params"]
            if move is False or (move is not True and p not in move)
        }
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                if p in frozen:
                    p.copy_(frozen[p])
                p.clamp_(0.0, 1.0)


THETA_OPTIMIZERS = {"sgd": ProjectedSGD, "adam": ProjectedAdam}  # --theta-optimizer
