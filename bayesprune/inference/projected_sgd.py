"""Projected gate updates on the per-example clock: the θ update of Eq. (10)."""

from __future__ import annotations

import torch


class ProjectedSGD(torch.optim.Optimizer):
    """Evidence average and projected step, both measured in examples seen, not in steps.

    With ĝ = ∇/N the mini-batch estimate of the per-example θ-gradient (the parameters' ``grad``
    holds ∂F/∂θ of the whole-data objective F), a step that has seen B examples does

        m ← m + a (ĝ − m),   a = min(1, B / window)        (the evidence: an average over the
                                                             last ``window`` examples)
        θ ← clip(θ − η B m, low, high)                       (η per example seen)

    so k steps of batch B and k/2 steps of batch 2B move θ alike in expectation: the drift of θ
    per example, and the number of examples its evidence averages, do not depend on the batch
    size (Eq. (10)). ``m`` starts at 0 and fills over ``window`` examples. The projection makes
    the vertices θ ∈ {0, 1} reachable exactly, which the pruning condition (Eq. (12)) relies on.
    State ``evidence`` has the parameter's shape, so physical removal slices it with the
    parameter.

    :param params: the θ tensors.
    :param lr: η, the step per example seen and per unit of per-example evidence.
    :param window: the number of examples the evidence averages (``1/a`` batches of size B).
    :param num_data: N, the number of training examples (∇ is divided by it).
    :param bounds: the box to project onto.
    """

    def __init__(self, params, lr: float, window: float, num_data: int, bounds=(0.0, 1.0)):
        if lr <= 0 or window <= 0 or num_data < 1:
            msg = f"need lr > 0, window > 0, num_data >= 1; got {lr}, {window}, {num_data}"
            raise ValueError(msg)
        defaults = {"lr": lr, "window": float(window), "num_data": int(num_data)}
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
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                evidence = state.get("evidence")
                if evidence is None:
                    evidence = state["evidence"] = torch.zeros_like(p)
                evidence.lerp_(p.grad / group["num_data"], rate)
                if move is True or (move is not False and p in move):
                    p.add_(evidence, alpha=-group["lr"] * examples).clamp_(low, high)
