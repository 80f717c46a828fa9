"""Bernoulli gates whose samples carry the first-order gate gradient."""

from __future__ import annotations

import torch
from pyro.distributions import Bernoulli


class StraightThroughBernoulli(Bernoulli):
    """q(ξ) = Bernoulli(θ) whose ``rsample`` returns ξ + θ − stop_grad(θ).

    The value is the exact sample ξ ∈ {0, 1} (θ = 1 draws a deterministic 1, θ = 0 a deterministic
    0), and the derivative of any loss L(ξ) with respect to θ is ∂L/∂ξ at the sampled ξ: the
    first-order gate-gradient estimator of Eq. (9), obtained from the same backward pass as the
    weight gradients. Other estimators detach this path
    (see :class:`~bayesprune.inference.GatedELBO`).
    """

    has_rsample = True

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        probs = self.probs.expand(self._extended_shape(sample_shape))
        xi = draw_gates(probs.detach())
        return xi + (probs - probs.detach())  # exactly ξ in value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value.detach())


def draw_gates(probs: torch.Tensor, shape: torch.Size | tuple | None = None) -> torch.Tensor:
    """ξ ~ Bernoulli(probs), expanded to ``shape`` if given; when every probability is 0 or 1 (the
    usual case once the gates have converged) the draw is deterministic and, on the CPU, no random
    number is used. The check reads ``probs`` before expansion (one value per unit). On a GPU it
    would synchronise with the host every step, so the draw is always made there (a Bernoulli
    draw at probability 0 or 1 is exact anyway)."""
    expanded = probs if shape is None else probs.expand(shape)
    if probs.is_cuda or bool(((probs > 0) & (probs < 1)).any()):
        return torch.bernoulli(expanded)
    return expanded.clone()
