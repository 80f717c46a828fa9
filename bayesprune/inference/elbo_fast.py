"""The fast evaluation of :class:`~bayesprune.inference.GatedELBO`: no Pyro traces, same numbers.

For the library's own model and guide the ELBO knows every site in advance, so building two
``poutine.trace`` records per step (which at LeNet-300-100 size costs more than the network) buys
nothing. :func:`evaluate` computes the same terms from the guide's tensors, in the same order of
random draws (``tests/inference/test_elbo_implementations.py`` checks values and gradients against
the traced evaluation), calling the prior functions of :mod:`bayesprune.models.distributions`.
With point-mass weights and a structured posterior (the default) the weight prior is evaluated
with the weights detached and its weight gradients are added in closed form after the backward
pass (:func:`add_prior_weight_grads`, checked against autograd of the same functions), so the
prior costs one pass over the weights and no autograd graph.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.guides.straight_through import draw_gates
from bayesprune.inference.pruning import PruneMessenger
from bayesprune.models.distributions import (
    GaussianScaleMixture,
    _spike_constant,
    gaussian_nll,
    inverse_gamma_log_prob,
    point_mass_structured_kl,
)
from bayesprune.models.gated_model import HyperPrior
from bayesprune.models.network import layout

FAST_ESTIMATORS = ("first-order", "secant")


@dataclass
class Evaluation:
    """One mini-batch's terms, before the backward pass."""

    data: torch.Tensor
    prior: torch.Tensor
    logits: torch.Tensor
    gates: dict[str, torch.Tensor]  # ξ per gated layer, (B, S); leaves for the secant
    thetas: dict[str, torch.Tensor]  # θ per gated layer (differentiable w.r.t. its storage)
    scale: float
    weight_grads: list = field(default_factory=list)  # (parameter, gradient) added after backward
    # the prior's ∂/∂θ per gated layer, in closed form (``prior`` then has no θ in its graph)
    theta_grads: dict = field(default_factory=dict)


def fast_prior_applies(guide: GateGuide) -> bool:
    """Point-mass weights under a structured posterior: the closed-form prior gradients apply."""
    return guide.weights == "point" and guide.structured


def layer_shape(guide: GateGuide, name: str, pruning: PruneMessenger | None) -> tuple[int, int]:
    """(width, fan-in) of a layer, as the pruned network would have it."""
    if pruning is not None:
        return pruning.shape(name)
    return guide.net.width(name), guide.net.fan_in(name)


def hyper_prior_term(
    guide, hyper: HyperPrior, name: str, pruning, shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """−log InverseGamma(σ̂₁²; α_l, β_l) of one layer (Eq. (5)); σ̂₁² gets no gradient.

    σ̂₁² changes only at the prior updates (every ``prior_every`` steps), so the value is kept
    with the guide until σ̂₁² (its version counter), the layer's shape or the hyper-prior change.
    ``shape``: the layer's :func:`layer_shape`, where the caller has it already.
    """
    width, fan_in = layer_shape(guide, name, pruning) if shape is None else shape
    slab_var = guide.slab_var(name)
    key = (slab_var._version, width, fan_in, hyper.concentration(fan_in, width))
    cache = guide.__dict__.setdefault("_hyper_prior_cache", {})
    if name not in cache or cache[name][0] != key:
        value = -inverse_gamma_log_prob(
            slab_var.detach().clone(),
            hyper.concentration(fan_in, width),
            hyper.rate(fan_in, width),
        )
        cache[name] = (key, value)
    return cache[name][1]


@torch.no_grad()
def _columns(guide, name, pruning) -> torch.Tensor | None:
    """Kept input columns of ``name`` (no bias column), as a float vector, or None (all)."""
    mask = None if pruning is None else pruning.column_mask(name)
    return None if mask is None else mask[:-1].to(guide.net.layers[name].weight.dtype)


def vertex_pricing_applies(guide: GateGuide) -> bool:
    """Eq. (10e) changes a gradient only where a unit pays for the weights it feeds: point-mass
    weights under the coupled posterior (Eq. (4c))."""
    return fast_prior_applies(guide) and guide.coupled


def vertex_correction(guide, hyper: HyperPrior, pruning, vertex: dict) -> torch.Tensor:
    """Eq. (10e) for an evaluation that priced the producers at every live consumer (the traced
    one): a term of value 0 whose θ-gradient takes out what the consumer units heading for 0
    (``vertex[name]`` False) add to their producers' price. It is the difference of
    :func:`point_mass_prior` with and without ``vertex`` (two passes over the weights, on the
    reference path only), so that (10e) is written once."""
    thetas = {name: guide.gate_probs(name) for name in guide.net.gated}
    priced = point_mass_prior(guide, hyper, thetas, pruning, [], vertex=vertex)
    return priced - point_mass_prior(guide, hyper, thetas, pruning, [])


def point_mass_prior(
    guide,
    hyper: HyperPrior,
    thetas,
    pruning,
    grads: list,
    attach_weights: bool = False,
    vertex: dict | None = None,
    theta_grads: dict | None = None,
) -> torch.Tensor:
    """τ [Σ_l Σ_s θ_s KL_s − log p(σ₁²)] with the weights detached, θ differentiable.

    Appends to ``grads`` the prior's gradient for every weight and bias as ``(parameter, base,
    coef)``, the gradient being ``base · coef`` (``τ θ_s w/σ₁²``, the coupled posterior's
    ``τ θ_s θ_in w/σ₁²``, ``τ w/σ²`` for the read-out): what autograd gives for the same
    expression with ``attach_weights=True`` (``tests/inference/test_elbo_implementations.py``).
    Each weight matrix is read about three times, with at most two temporaries of its size.

    ``vertex`` (Eq. (10e)): per gated layer, the units whose gates head for 1; a producer's
    θ-gradient then prices the weights it feeds at those consumer units only. The value, the
    consumers' θ-gradients and the weights' gradients are unchanged.

    ``theta_grads`` (a dict to fill): θ is read detached and the θ-gradient of the returned
    value is written there in closed form, one tensor per gated layer (what autograd gives,
    checked in ``tests/inference/test_elbo_implementations.py``; with ``vertex``, that of
    Eq. (10e)), so the prior adds no node to the autograd graph. With the layer's KL
    ``KL_s = ½ n C + sq_s / (2σ₁²)``, ``C = ln(1/ρ) + ρ − 1``, and the coupled posterior's
    ``sq_s = Σ_j ‖w_sj‖² θ_j + b_s²``, ``n = 1 + block Σ_j θ_j`` (Eq. (4c)):

        ∂/∂θ_s = τ KL_s,    ∂/∂θ_j (producer) = τ Σ_s w_s (‖w_sj‖² / (2σ₁²) + ½ block C)

    with ``w_s = θ_s`` (``θ_s`` of the units heading for 1 under ``vertex``).
    """
    if vertex is not None and attach_weights:
        raise ValueError("vertex pricing changes θ-gradients only: use attach_weights=False")
    if theta_grads is not None and attach_weights:
        raise ValueError("closed-form θ-gradients need the weights detached")
    # with θ-gradients in closed form nothing here needs autograd: no graph, no detaching
    with torch.no_grad() if theta_grads is not None else nullcontext():
        return _point_mass_prior(
            guide, hyper, thetas, pruning, grads, attach_weights, vertex, theta_grads
        )


def _point_mass_prior(guide, hyper, thetas, pruning, grads, attach_weights, vertex, theta_grads):
    tau, net = hyper.temperature, guide.net
    total = torch.zeros((), device=net.layers["out"].weight.device)
    keep = {} if pruning is None else pruning.keep
    detach = not attach_weights and torch.is_grad_enabled()
    for name, layer in net.layers.items():
        slab_var = guide.slab_var(name)
        weight, bias = layer.weight, layer.bias
        if pruning is None:  # layer_shape's, read off the weights already in hand
            width, fan_in = weight.shape[0], math.prod(weight.shape[1:])
        else:
            width, fan_in = pruning.shape(name)
        total = total + hyper_prior_term(guide, hyper, name, pruning, (width, fan_in))
        if detach:
            weight, bias = weight.detach(), bias.detach()
        flat = weight.flatten(1)
        columns = None if pruning is None else _columns(guide, name, pruning)
        if name == "out":  # −log N(w; 0, σ²I), Eq. (3)
            base = flat if columns is None else flat * columns
            sq = (base * flat).sum() + bias.pow(2).sum()
            total = total + gaussian_nll(sq, width * (fan_in + 1), slab_var)
            coef = tau / slab_var
            grads += [(layer.weight, base, coef), (layer.bias, bias, coef)]
            continue
        theta = thetas[name]
        if name in keep:
            theta = theta * keep[name].to(theta.dtype)  # pruned rows: no description
        previous = net.previous_gated(name)
        if guide.coupled and previous is not None:  # Eq. (4c): each weight × P(input on)
            inputs = thetas[previous]
            if previous in keep:
                inputs = inputs * keep[previous].to(inputs.dtype)
            block = net.blocks[name]
            squares = flat.square()
            if block > 1:
                squares = squares.reshape(flat.shape[0], -1, block).sum(-1)
            sq = squares @ inputs + bias.pow(2)  # differentiable in θ of the inputs
            kl = point_mass_structured_kl(sq, slab_var, hyper.rho, 1 + block * inputs.sum())
            if theta_grads is not None:  # the producer's share: ∂(Σ_s w_s KL_s)/∂θ_j
                w = theta if vertex is None or name not in vertex else theta * vertex[name]
                share = (w @ squares) / (2 * slab_var) + 0.5 * block * _spike_constant(
                    hyper.rho
                ) * w.sum()
                if previous in keep:
                    share = share * keep[previous].to(share.dtype)
                _add_grad(theta_grads, previous, share)
            elif vertex is not None and name in vertex:  # Eq. (10e): value 0, θ of the inputs
                leaving = theta.detach() * (~vertex[name]).to(theta.dtype)  # heading for 0
                total = total - (leaving * (kl - kl.detach())).sum()
            live = inputs.detach()
            base = flat * (live if block == 1 else live.repeat_interleave(block))
        else:  # Eq. (4s)
            base = flat if columns is None else flat * columns
            sq = (base * flat).sum(-1) if columns is not None or attach_weights else None
            if sq is None:
                sq = torch.linalg.vector_norm(flat, dim=-1).square()
            sq = sq + bias.pow(2)
            kl = point_mass_structured_kl(sq, slab_var, hyper.rho, fan_in + 1)
        total = total + (theta * kl).sum()
        if theta_grads is not None:
            _add_grad(theta_grads, name, kl if name not in keep else kl * keep[name].to(kl.dtype))
        coef = tau * theta.detach() / slab_var
        grads += [(layer.weight, base, coef.unsqueeze(-1)), (layer.bias, bias, coef)]
    if theta_grads is not None:
        for name, grad in theta_grads.items():
            theta_grads[name] = tau * grad
    return tau * total


def _add_grad(grads: dict, name: str, grad: torch.Tensor) -> None:
    grads[name] = grad if name not in grads else grads[name] + grad


def _sampled_weights(guide: GateGuide, name: str):
    """Sampled augmented weights, their mean, variance and q (None for point masses)."""
    mean = guide.net.augmented(name)
    if guide.weights == "point":
        return mean, mean, None, None
    q = guide.weight_posterior(name).base_dist
    return q.rsample(), mean, q.scale**2, q


def general_prior(guide, hyper: HyperPrior, name, weights, mean, var, q, thetas):
    """−log p(σ₁²) and the (expected) weight prior term of one layer, before tempering.

    Gaussian weights or the mean-field posterior: the same distributions as the model's sites,
    differentiated by autograd.
    """
    net = guide.net
    fan_in = net.fan_in(name)
    slab_var = guide.slab_var(name)
    term = hyper_prior_term(guide, hyper, name, None)
    if name == "out":  # sampled, as Trace_ELBO does for a non-GSM site
        log_q = 0.0 if q is None else q.log_prob(weights).sum()
        return term + gaussian_nll(weights.pow(2).sum(), weights.numel(), slab_var) + log_q
    q_entropy = 0.0 if q is None else q.entropy().sum()
    gsm = GaussianScaleMixture(
        thetas[name], (hyper.rho * slab_var).sqrt(), slab_var.sqrt(), fan_in + 1
    )
    if guide.structured:
        previous = net.previous_gated(name)
        columns = net.column_probs(name, thetas.get(previous)) if guide.coupled else None
        return term + gsm.structured_kl(mean, var, column_probs=columns)  # Eq. (4s), (4c)
    return term - gsm.expected_log_prob(mean, 0.0 if var is None else var) - q_entropy


def evaluate(
    guide: GateGuide,
    hyper: HyperPrior,
    x: torch.Tensor,
    y: torch.Tensor,
    num_data: int,
    estimator: str,
    pruning: PruneMessenger | None = None,
    vertex: dict | None = None,
) -> Evaluation:
    """The data and prior terms of F (Eq. (8)) for one mini-batch, with the gates drawn.

    Must run inside the guide's parameter context (:meth:`GateGuide.reading`), so that the
    parameters it reads are declared to Pyro.
    """
    net, batch = guide.net, x.shape[0]
    scale = num_data / batch
    params, moments, gates, thetas = {}, {}, {}, {}
    fast = fast_prior_applies(guide)
    if pruning is not None and not fast:
        raise NotImplementedError("pruning handler with Gaussian or mean-field weights")
    for name in net.layers if not fast else ():  # the guide's order of draws: weights, gates
        params[name], *moments[name] = _sampled_weights(guide, name)
    keep = {} if pruning is None else pruning.keep
    for name in net.gated:
        theta = guide.gate_probs(name)
        if name in keep:  # a pruned unit's θ is not in the pruned network's objective
            theta = theta * keep[name].to(theta.dtype)
        thetas[name] = theta
        probs = theta.detach()
        xi = draw_gates(probs, (batch, probs.shape[-1]))
        if estimator == "first-order":
            xi = xi + (theta - theta.detach())  # straight-through: Eq. (9)
        else:
            xi.requires_grad_(True)
        gates[name] = xi
    weight_grads: list = []
    theta_grads: dict = {}
    if fast:
        prior = point_mass_prior(
            guide, hyper, thetas, pruning, weight_grads, vertex=vertex, theta_grads=theta_grads
        )
    elif vertex is not None:
        raise ValueError("vertex pricing (Eq. (10e)) needs point-mass weights")
    else:
        prior = hyper.temperature * sum(
            general_prior(guide, hyper, name, params[name], *moments[name], thetas)
            for name in net.layers
        )
    logits = net(x, gates=gates, params=params or None)
    data = scale * F.cross_entropy(logits, y, reduction="sum")
    return Evaluation(data, prior, logits, gates, thetas, scale, weight_grads, theta_grads)


@torch.no_grad()
def add_prior_weight_grads(grads: list) -> None:
    """param.grad += base · coef for each ``(parameter, base, coef)`` of
    :func:`point_mass_prior`, in place."""
    for param, base, coef in grads:
        if param.grad is None:  # (in the weight's layout: fused Adam pairs them by memory)
            grad = (base * coef).reshape(param.shape)
            param.grad = grad.contiguous(memory_format=layout(param.data))
        elif param.grad.is_contiguous():
            param.grad.view(base.shape).addcmul_(base, coef)
        else:  # a channels-last convolution's: the same sums, in the weight's own shape
            trailing = (1,) * (param.dim() - coef.dim())
            param.grad.addcmul_(base.reshape(param.shape), coef.reshape(*coef.shape, *trailing))
