"""Closed-form update of the prior parameters under the hyper-prior (Eq. (11))."""

from __future__ import annotations

import torch

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.models.gated_model import HyperPrior


@torch.no_grad()
def slab_variance(
    sq_norms: torch.Tensor,
    theta: torch.Tensor,
    row_size: int,
    rho: float,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """The σ₁² that minimises F given the weights and gates (Eq. (11)).

    With σ₀² = ρ σ₁² tied, F depends on σ₁² through
    ``Σ_s [θ_s E‖w_s‖²/(2σ₁²) + (1 − θ_s) E‖w_s‖²/(2ρσ₁²) + (n_s/2) log σ₁²]`` plus the
    inverse-gamma term ``(α + 1) log σ₁² + β/σ₁²``; setting the derivative to zero gives
    ``σ₁² = (β + ½ Σ_s E‖w_s‖² (θ_s + (1 − θ_s)/ρ)) / (α + 1 + ½ S n)``. The temperature scales all
    of these terms alike, so it cancels. The result is at least β / (α + 1 + S n / 2): it cannot
    collapse.

    :param sq_norms: E‖w_s‖² per unit, shape ``(S,)``.
    :param theta: gate probabilities, shape ``(S,)`` (ones for an ungated layer).
    :param row_size: n, values per unit (fan-in + 1).
    """
    weighted = (sq_norms * (theta + (1 - theta) / rho)).sum()
    return (beta + 0.5 * weighted) / (alpha + 1 + 0.5 * sq_norms.numel() * row_size)


@torch.no_grad()
def structured_slab_variance(
    sq_norms: torch.Tensor,
    theta: torch.Tensor,
    row_size: int,
    alpha: float,
    beta: float,
    var_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """The σ₁² that minimises F under the structured posterior (Eq. (11s)).

    F depends on σ₁² through ``Σ_s θ_s KL_s`` plus the hyper-prior. With point-mass weights the
    on-state width is tied to σ₀² = ρσ₁², so only ``θ_s ‖μ_s‖²/(2σ₁²)`` varies and
    ``σ₁² = (β + ½ Σ_s θ_s ‖μ_s‖²)/(α + 1)``. With Gaussian weights of variance sums V_s,
    ``σ₁² = (β + ½ Σ_s θ_s (‖μ_s‖² + V_s))/(α + 1 + ½ n Σ_s θ_s)``. Both are ≥ β/(α + 1 + …).
    """
    if var_sums is None:
        return (beta + 0.5 * (theta * sq_norms).sum()) / (alpha + 1)
    weighted = (theta * (sq_norms + var_sums)).sum()
    return (beta + 0.5 * weighted) / (alpha + 1 + 0.5 * row_size * theta.sum())


@torch.no_grad()
def update_slab_variances(
    guide: GateGuide, hyper: HyperPrior, pruning=None
) -> dict[str, torch.Tensor]:
    """Set every layer's σ̂₁² to its closed-form optimum; return the new values.

    :param pruning: a :class:`~bayesprune.inference.PruneMessenger` whose collapsed units are
        left out, as if removed (their rows, the columns they feed, the layers' α and β).
    """
    out = {}
    net = guide.net
    keep = {} if pruning is None else pruning.keep
    for name in net.layers:
        rows = keep.get(name)
        columns = None if pruning is None else pruning.column_mask(name)
        if columns is None:  # ‖w_s‖² without building [W | b]
            sq_mean = net.row_sq_norms(name)
        else:  # over the columns fed by kept units only
            sq_mean = net.augmented(name).pow(2) @ columns.to(net.layers[name].weight.dtype)
        var = (
            None if guide.weights == "point" else guide.weight_posterior(name).base_dist.scale ** 2
        )
        var_sums = None if var is None else var.sum(-1)
        width, fan_in = (
            (net.width(name), net.fan_in(name)) if pruning is None else pruning.shape(name)
        )
        alpha, beta = hyper.concentration(fan_in, width), hyper.rate(fan_in, width)
        if guide.structured and name != "out":
            theta, row_size = guide.gate_probs(name).detach(), fan_in + 1
            if rows is not None:
                theta = theta * rows.to(theta.dtype)
            previous = net.previous_gated(name)
            if guide.coupled and previous is not None:  # Eq. (4c): live inputs only
                inputs = guide.gate_probs(previous).detach()
                if previous in keep:
                    inputs = inputs * keep[previous].to(inputs.dtype)
                live = net.column_probs(name, inputs)
                sq_mean, row_size = net.augmented(name).pow(2) @ live, live.sum()
                var_sums = None if var is None else var @ live
            value = structured_slab_variance(sq_mean, theta, row_size, alpha, beta, var_sums)
        else:
            sq = sq_mean if var_sums is None else sq_mean + var_sums
            theta = guide.gate_probs(name).detach() if name != "out" else torch.ones_like(sq)
            if rows is not None:  # pruned rows are absent
                sq, theta = sq[rows], theta[rows]
            value = slab_variance(sq, theta, fan_in + 1, hyper.rho, alpha, beta)
        guide.set_slab_var(name, value)
        out[name] = value  # a tensor: no host synchronisation on a GPU
    return out
