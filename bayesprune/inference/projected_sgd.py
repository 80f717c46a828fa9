"""Projected SGD with momentum: the θ update of Eq. (10)."""

from __future__ import annotations

import torch


class ProjectedSGD(torch.optim.Optimizer):
    """v ← β v + ∇, θ ← clip(θ − η v, low, high): heavy-ball SGD followed by the projection.

    The projection makes the vertices θ ∈ {0, 1} reachable exactly, which the pruning condition
    (Eq. (12)) relies on. State ``momentum_buffer`` has the parameter's shape, so physical removal
    slices it with the parameter.

    :param params: the θ tensors.
    :param lr: step size η.
    :param momentum: β.
    :param bounds: the box to project onto.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, bounds=(0.0, 1.0)):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got {lr}, {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "bounds": tuple(bounds)})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            low, high = group["bounds"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = p.grad.detach().clone()
                else:
                    buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-group["lr"]).clamp_(low, high)
