"""The constraint of the gate probabilities θ: the closed unit interval, enforced by projection."""

from __future__ import annotations

import torch
from torch.distributions import constraints, transform_to
from torch.distributions.transforms import Transform


class _ProjectedUnitInterval(constraints._Interval):
    """θ ∈ [0, 1], both ends included, kept there by projection rather than by a bijection.

    Pyro's :data:`~torch.distributions.constraints.unit_interval` maps an unconstrained value
    through a sigmoid, which never reaches 0 or 1 and whose gradient vanishes near them; the
    method needs the vertices exactly (a unit at θ = 0 is pruned, Eq. (12)). Registered with
    :data:`~torch.distributions.transform_to` as :class:`ClipTransform`, so a
    :class:`~pyro.nn.PyroParam` with this constraint stores u and reads θ = clip(u, 0, 1):

    - under the projected optimiser (:class:`~bayesprune.inference.ProjectedSGD`) u stays in
      [0, 1] and θ = u: the projected step of Eq. (10);
    - under any stock optimiser (``pyro.optim.Adam``) u may leave [0, 1] and θ stays a valid
      probability. Below 0 its gradient is 0: a unit pushed past 0 stays off, the absorbing
      state of Eq. (6). Above 1 a gradient that would lower θ passes (one that would raise it
      does not), so keeping a unit is not absorbing: u returns to 1 and θ moves when its
      evidence turns.
    """

    def __init__(self):
        super().__init__(0.0, 1.0)


projected_unit_interval = _ProjectedUnitInterval()


class _Clip(torch.autograd.Function):
    """clip(u, 0, 1), with the gradient 1 on [0, 1] (end points included), 0 below 0, and
    above 1 only where it points back into [0, 1] (a descent step lowers u)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = ((x >= 0.0) & (x <= 1.0)) | ((x > 1.0) & (grad > 0))
        return grad * passes.to(grad.dtype)


class ClipTransform(Transform):
    """θ = clip(u, 0, 1); its "inverse" is the identity on [0, 1] (values outside are clipped).

    Not a bijection, so only :data:`transform_to` (never ``biject_to``) knows it. The gradient is
    1 on [0, 1] *including* the end points, so a gate at exactly 0 or 1 still receives its
    evidence; 0 below 0 (a removed unit stays removed); above 1 (only a stock optimiser gets
    there) it passes where it would lower θ, so that a kept unit can still leave.
    """

    domain = constraints.real
    codomain = projected_unit_interval
    bijective = False

    def __eq__(self, other):
        return isinstance(other, ClipTransform)

    def _call(self, x):
        return _Clip.apply(x)

    def _inverse(self, y):
        return y.clamp(0.0, 1.0)

    def log_abs_det_jacobian(self, x, y):
        return torch.zeros_like(x)


@transform_to.register(_ProjectedUnitInterval)
def _transform_to_projected_unit_interval(constraint):
    return ClipTransform()
