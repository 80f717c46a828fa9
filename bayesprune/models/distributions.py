"""The GSM weight prior and the flattening hyper-prior as Pyro distributions."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all


class Flattening(TorchDistribution):
    """The flattening hyper-prior on the gate prior probabilities π ∈ [0, 1]^S.

    It is flat on the closed unit cube (log density 0), so the optimal π for a Bernoulli posterior
    with parameter θ is π = θ and the gate KL vanishes: the objective is then affine in each θ
    (Eq. (6)). Unlike ``Uniform(0, 1)`` it has support on the *closed* interval, because the optimum
    sits at the vertices.

    :param size: number of gates S.
    :param dtype, device: of its samples (the prior predictive's π; the default dtype and the
        CPU if not given).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(
        self,
        size: int,
        validate_args: bool | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        self.size = int(size)
        self.dtype, self.device = dtype, device
        super().__init__(torch.Size(), torch.Size([self.size]), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        inside = ((value >= 0) & (value <= 1)).all(-1)
        zero = torch.zeros(inside.shape, dtype=value.dtype, device=value.device)
        return zero.masked_fill(~inside, -math.inf)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return torch.rand(sample_shape + self.event_shape, dtype=self.dtype, device=self.device)


# exp(±x) of a log-density difference is capped here in the mixture's gradient: the true
# ∂/∂π at a vertex is 1 − exp(spike − slab), astronomically large where a row's weights sit in the
# spike, and e^40 keeps it (and its square, in Adam's second moment) finite in float32
_MAX_EXPONENT = 40.0


class _RowMixture(torch.autograd.Function):
    """log(π e^{a} + (1 − π) e^{b}) per row from π and the components' log-densities a, b.

    The forward pass is ``logaddexp(log π + a, log1p(−π) + b)`` (bitwise the expression it
    replaces). The backward pass is the derivative itself, ∂/∂π = e^{a−f} − e^{b−f},
    ∂/∂a = π e^{a−f}, ∂/∂b = (1 − π) e^{b−f} with f the value, finite at π ∈ {0, 1} where
    autograd of the logarithms gives 0 · ∞. The components' weights π e^{a−f} and
    (1 − π) e^{b−f} are at most 1 and exact (0 at the vertex that drops a component); only
    ∂/∂π, whose terms are not bounded, has its exponents capped.
    """

    @staticmethod
    def forward(ctx, probs, slab, spike):
        out = torch.logaddexp(torch.log(probs) + slab, torch.log1p(-probs) + spike)
        ctx.save_for_backward(probs, slab, spike, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        probs, slab, spike, out = ctx.saved_tensors

        def shaped(g, like):
            return g.sum_to_size(like.shape)

        grads = [None, None, None]
        if ctx.needs_input_grad[0]:
            on = torch.exp((slab - out).clamp(max=_MAX_EXPONENT))
            off = torch.exp((spike - out).clamp(max=_MAX_EXPONENT))
            grads[0] = shaped(grad * (on - off), probs)
        if ctx.needs_input_grad[1]:  # the slab's share of the density, in [0, 1]
            grads[1] = shaped(grad * torch.exp(torch.log(probs) + slab - out), slab)
        if ctx.needs_input_grad[2]:  # the spike's
            grads[2] = shaped(grad * torch.exp(torch.log1p(-probs) + spike - out), spike)
        return tuple(grads)


class GaussianScaleMixture(TorchDistribution):
    """Spike-and-slab GSM prior over the rows of a weight matrix, one mixture per unit.

    Row s (the unit's incoming weights and bias, n_s values) is drawn from
    ``π_s N(0, σ₁² I) + (1 − π_s) N(0, σ₀² I)`` (Eq. (2)): the gate ξ_s picks the scale of the whole
    row. ``batch_shape`` is ``()``, ``event_shape`` is ``(S, n)``.

    :param probs: slab probabilities π, shape ``(S,)``.
    :param spike_scale: σ₀ (scalar tensor).
    :param slab_scale: σ₁ (scalar tensor), σ₁ > σ₀.
    :param row_size: n, the number of values per row.
    :param row_mask: optional boolean ``(S,)``; rows that are ``False`` are left out of the density
        (pruned units, see :class:`~bayesprune.inference.PruneMessenger`).
    :param column_mask: optional boolean ``(n,)``; columns that are ``False`` (the inputs from
        pruned units of the layer before) are left out of every row, which then has
        ``column_mask.sum()`` values.
    """

    arg_constraints = {
        "probs": constraints.unit_interval,
        "spike_scale": constraints.positive,
        "slab_scale": constraints.positive,
    }
    support = constraints.independent(constraints.real, 2)

    def __init__(
        self,
        probs,
        spike_scale,
        slab_scale,
        row_size: int,
        row_mask=None,
        column_probs=None,
        column_mask=None,
        validate_args=None,
    ):
        self.probs = probs
        self.row_mask = row_mask
        self.column_mask = column_mask
        self.column_probs = column_probs  # for the coupled posterior only (structured_kl)
        self.spike_scale, self.slab_scale = broadcast_all(
            torch.as_tensor(spike_scale, dtype=probs.dtype),
            torch.as_tensor(slab_scale, dtype=probs.dtype),
        )
        self.row_size = int(row_size)
        event_shape = torch.Size([probs.shape[-1], self.row_size])
        super().__init__(torch.Size(), event_shape, validate_args=validate_args)

    def row_log_normal(self, sq_norm: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """log N(w_s; 0, scale² I) of each row from its squared norm (Eq. (3))."""
        return -gaussian_nll(sq_norm, self._size(), scale**2)

    def _size(self):
        """Values per row (kept columns only)."""
        return self.row_size if self.column_mask is None else self.column_mask.sum()

    def _row_sums(self, per_value: torch.Tensor) -> torch.Tensor:
        """Σ over each row's (kept) columns."""
        if self.column_mask is None:
            return per_value.sum(-1)
        return per_value @ self.column_mask.to(per_value.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log[π N(w_s; 0, σ₁²) + (1 − π) N(w_s; 0, ρσ₁²)] summed over the rows.

        Its gradient is written out (:class:`_RowMixture`): autograd of the log-sum-exp takes
        log π and log(1 − π), whose derivatives are infinite at the vertices π ∈ {0, 1}, where
        the gates end, and multiplies them by the vanishing component's weight: 0 · ∞, a NaN
        that a stock ``Trace_ELBO`` step would write into θ. The value is the same.
        """
        sq = self._row_sums(value.pow(2))
        slab = self.row_log_normal(sq, self.slab_scale)
        spike = self.row_log_normal(sq, self.spike_scale)
        return self._sum_rows(_RowMixture.apply(self.probs, slab, spike))

    def _sum_rows(self, per_row: torch.Tensor) -> torch.Tensor:
        if self.row_mask is not None:
            per_row = per_row * self.row_mask.to(per_row.dtype)
        return per_row.sum(-1)

    def _with(self, **changes) -> GaussianScaleMixture:
        """The same prior with some of its masks or column probabilities replaced."""
        kwargs = {
            "row_mask": self.row_mask,
            "column_probs": self.column_probs,
            "column_mask": self.column_mask,
            **changes,
        }
        return GaussianScaleMixture(
            self.probs, self.spike_scale, self.slab_scale, self.row_size, **kwargs
        )

    def mask_rows(self, keep: torch.Tensor) -> GaussianScaleMixture:
        """The same prior restricted to the rows where ``keep`` is ``True``."""
        return self._with(row_mask=keep if self.row_mask is None else self.row_mask & keep)

    def mask_columns(self, keep: torch.Tensor) -> GaussianScaleMixture:
        """The same prior with the columns where ``keep`` is ``False`` left out of every row."""
        mask = keep if self.column_mask is None else self.column_mask & keep
        return self._with(column_mask=mask)

    def expected_log_prob(
        self, mean: torch.Tensor, var: torch.Tensor | float = 0.0, gate_probs=None
    ) -> torch.Tensor:
        """E_{q(w) q(ξ)}[log p(w | ξ)] for q(w) = N(mean, var) and q(ξ_s) = Bernoulli(gate_probs).

        This is −Σ_s [θ_s A_s + (1 − θ_s) B_s] of Eq. (4); with point-mass weights ``var = 0``.
        ``gate_probs`` defaults to π (the flattening optimum π = θ).
        """
        theta = self.probs if gate_probs is None else gate_probs
        sq = self._row_sums(mean.pow(2) + var)
        on = self.row_log_normal(sq, self.slab_scale)
        off = self.row_log_normal(sq, self.spike_scale)
        return self._sum_rows(theta * on + (1 - theta) * off)

    def structured_kl(
        self, mean: torch.Tensor, var=None, gate_probs=None, column_probs=None
    ) -> torch.Tensor:
        """Σ_s θ_s KL(N(μ_s, v_s) ‖ N(0, σ₁² I)) for the structured posterior of Eq. (4s).

        The structured spike-and-slab posterior sets q(w_s | ξ_s = 0) to the spike prior itself
        (KL 0: an off unit costs nothing) and q(w_s | ξ_s = 1) = N(μ_s, v_s). For point-mass
        weights (``var=None``) the on-state width is tied to the spike, v = σ₀², so a kept weight
        is described to the spike's resolution; the KL per row is then
        ``(n/2)(ln(1/ρ) + ρ − 1) + ‖μ_s‖²/(2σ₁²)``.

        ``column_probs`` (one per column: the probability that the column's input unit is on)
        gives the coupled posterior of Eq. (4c): a weight whose input unit is off is not
        described either (q = prior, KL 0), so each weight's KL is weighted by the probability
        that its input is on, and n becomes the expected number of live inputs.
        """
        theta = self.probs if gate_probs is None else gate_probs
        slab_var = self.slab_scale**2
        if self.column_mask is not None:
            mask = self.column_mask.to(mean.dtype)
            column_probs = mask if column_probs is None else column_probs * mask
        if var is None:
            rho = self.spike_scale**2 / slab_var
            if column_probs is None:
                sq, size = mean.pow(2).sum(-1), self.row_size
            else:
                sq, size = mean.pow(2) @ column_probs, column_probs.sum()
            kl = point_mass_structured_kl(sq, slab_var, rho, size)
        else:
            var = torch.as_tensor(var, dtype=mean.dtype).expand_as(mean)
            per_weight = 0.5 * (torch.log(slab_var / var) + (var + mean.pow(2)) / slab_var - 1)
            kl = per_weight.sum(-1) if column_probs is None else per_weight @ column_probs
        return self._sum_rows(theta * kl)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = sample_shape + self.event_shape
            gate = torch.bernoulli(self.probs.expand(shape[:-1])).unsqueeze(-1)
            scale = gate * self.slab_scale + (1 - gate) * self.spike_scale
            return torch.randn(shape, dtype=scale.dtype, device=scale.device) * scale


# The prior's terms, each written once; the traced ELBO reaches them through the distributions
# above, the fast evaluation (bayesprune/inference/elbo_fast.py) calls them directly.


def gaussian_nll(sq_norm, size, var):
    """−log N(w; 0, var·I) of a vector of ``size`` values from its squared norm (Eq. (3))."""
    return 0.5 * sq_norm / var + 0.5 * size * torch.log(2 * math.pi * torch.as_tensor(var))


def point_mass_structured_kl(sq_norms, slab_var, rho, row_size):
    """KL(N(μ_s, ρσ₁² I) ‖ N(0, σ₁² I)) per row from ‖μ_s‖² (Eq. (4s), point-mass weights):
    ``(n/2)(ln(1/ρ) + ρ − 1) + ‖μ_s‖²/(2σ₁²)`` (n may be a tensor: the expected live inputs)."""
    return 0.5 * row_size * _spike_constant(rho) + sq_norms / (2 * slab_var)


_SPIKE_CONSTANTS: dict = {}


def _spike_constant(rho) -> torch.Tensor:
    """ln(1/ρ) + ρ − 1 as a tensor, computed once per ρ (and default dtype): the fast ELBO
    evaluates the KL of every layer at every step, and these four operations on a constant were
    a tenth of its prior pass. The same tensor operations as before, so the same value to the
    bit."""
    if isinstance(rho, torch.Tensor):
        return -torch.log(rho) + rho - 1
    key = (float(rho), torch.get_default_dtype(), torch.is_inference_mode_enabled())
    value = _SPIKE_CONSTANTS.get(key)
    if value is None:
        rho = torch.as_tensor(rho)
        value = _SPIKE_CONSTANTS[key] = -torch.log(rho) + rho - 1
    return value


def inverse_gamma_log_prob(value, concentration: float, rate: float):
    """log InverseGamma(value; α, β) of the slab variance (Eq. (5)) for a float or a tensor
    ``value`` (α, β plain floats)."""
    log = torch.log if isinstance(value, torch.Tensor) else math.log
    return (
        concentration * math.log(rate)
        - math.lgamma(concentration)
        - (concentration + 1) * log(value)
        - rate / value
    )
