"""The Pyro model of a gated network (Eqs. (1)-(5) of docs/method.md)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK

from bayesprune.models.distributions import Flattening, GaussianScaleMixture
from bayesprune.models.network import GatedNet


@dataclass(frozen=True)
class HyperPrior:
    """Settings of the GSM prior and its hyper-prior.

    :param rho: spike-to-slab variance ratio σ₀²/σ₁² (Eq. (2)).
    :param strength: weight of the inverse-gamma hyper-prior on σ₁², in pseudo-weights per weight:
        α_l = strength · (number of weights in layer l) / 2 and β_l = α_l / fan_in, so the prior's
        reference variance is 1/fan_in whatever the layer's width or the initial weight scale
        (Eq. (5)). It bounds σ₁² from below, which prevents the empirical-Bayes collapse.
    :param temperature: τ, the scale on every prior term (a ``poutine.scale`` around the prior
        sites). τ = 1 is the plain posterior; τ < 1 a tempered one.
    """

    rho: float = 0.1
    strength: float = 1.0
    temperature: float = 0.03

    def __post_init__(self):
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must lie in (0, 1), got {self.rho}")
        if self.strength <= 0 or self.temperature <= 0:
            raise ValueError("strength and temperature must be positive")

    def concentration(self, fan_in: int, width: int) -> float:
        """α_l of Eq. (5)."""
        return self.strength * width * (fan_in + 1) / 2

    def rate(self, fan_in: int, width: int) -> float:
        """β_l of Eq. (5): the hyper-prior's reference variance is 1/fan_in."""
        return self.concentration(fan_in, width) / fan_in


class GatedModel:
    """p(Λ) p(w | π, σ) p(ξ | π) p(y | x, w, ξ) for a :class:`GatedNet`.

    Sample sites, per gated layer ``l``:

    - ``"{l}.prob"``: gate prior probabilities π ~ Flattening (Eq. (5)),
    - ``"{l}.slab_var"``: σ₁² ~ InverseGamma(α_l, β_l), with σ₀² = ρ σ₁² (Eq. (5)),
    - ``"{l}.weight"``: the augmented weights ``[W | b]`` ~ GSM(π, σ₀, σ₁) row by row (Eq. (2)),
    - ``"{l}.gate"``: per-example gates ξ ~ Bernoulli(π) inside the ``"data"`` plate (Eq. (1)),

    plus ``"out.slab_var"`` and ``"out.weight"`` (a plain Gaussian, the output layer is never
    gated) and the likelihood ``"obs"``. The per-example gates are local copies of the unit's gate:
    E_q[Σ_n log p(y_n | x_n, w, ξ)] is separable over examples, so drawing an independent gate per
    example is an unbiased, lower-variance estimate of the data term, like local
    reparameterisation. Every prior site sits under ``poutine.scale(temperature)``.

    :param net: the network; only its current shape is read (the guide owns the parameters).
    :param hyper: prior settings.
    """

    def __init__(self, net: GatedNet, hyper: HyperPrior):
        self.net = net
        self.hyper = hyper

    def layer_prior(
        self, name: str, input_probs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Declare the prior sites of one layer; return its augmented weights and π (or None).

        ``input_probs`` (π of the previous gated layer) is attached to the GSM as its
        ``column_probs``, for the coupled posterior (Eq. (4c)); the density itself ignores it.
        """
        width, fan_in = self.net.width(name), self.net.fan_in(name)
        weight = self.net.layers[name].weight  # the prior's numbers in the weights' dtype
        like = {"device": weight.device, "dtype": weight.dtype}
        alpha = torch.tensor(self.hyper.concentration(fan_in, width), **like)
        beta = torch.tensor(self.hyper.rate(fan_in, width), **like)
        slab_var = _unbatched(pyro.sample(f"{name}.slab_var", dist.InverseGamma(alpha, beta)), 0)
        if name == "out":
            return pyro.sample(
                f"{name}.weight",
                dist.Normal(0.0, slab_var.sqrt()).expand([width, fan_in + 1]).to_event(2),
            ), None
        probs = pyro.sample(f"{name}.prob", Flattening(width, **like))
        gsm = GaussianScaleMixture(
            probs,
            (self.hyper.rho * slab_var).sqrt(),
            slab_var.sqrt(),
            fan_in + 1,
            column_probs=self.net.column_probs(name, input_probs),
        )
        return pyro.sample(f"{name}.weight", gsm), probs

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the model on a mini-batch.

        :param x: inputs of the mini-batch.
        :param y: labels (observed) or ``None``.
        :param num_data: N, the size of the full training set (defaults to the batch size).
        :param index: the mini-batch's indices into the training set (for the plate).
        """
        check_batch(self.net, x, y, num_data, index)
        _check_no_enclosing_plate()
        num_data = x.shape[0] if num_data is None else num_data
        params, probs = {}, {}
        with poutine.scale(scale=self.hyper.temperature):
            for name in self.net.layers:
                previous = self.net.previous_gated(name)
                weight, prob = self.layer_prior(name, probs.get(previous))
                # Predictive (sequential) hands back global samples with a singleton dim per
                # plate: drop it, the network takes one set of weights
                params[name] = _unbatched(weight, 2)
                probs[name] = None if prob is None else _unbatched(prob, 1)
        subsample = torch.arange(x.shape[0]) if index is None else index
        with pyro.plate("data", num_data, subsample=subsample):
            gates = {
                name: pyro.sample(
                    f"{name}.gate",
                    dist.Bernoulli(probs[name])
                    .expand([x.shape[0], probs[name].shape[-1]])
                    .to_event(1),
                )
                for name in self.net.gated
            }
            logits = self.net(x, gates=gates, params=params)
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits


def check_batch(net: GatedNet, x, y=None, num_data=None, index=None, inputs: bool = True) -> None:
    """Refuse, with one ``ValueError`` or ``TypeError`` naming the argument, a mini-batch that the
    model (or the fast ELBO, which never runs it) would fail on deep inside torch, or would take
    without a word and get wrong: ``x`` empty or not a tensor of the network's dtype and input
    shape, labels that are not one integer per example, ``num_data`` (N, the training set's
    size) below the batch, an ``index`` of another length than the batch. Shapes and dtypes
    only, so no device synchronisation, but for non-finite inputs, which are looked for while
    Pyro's validation is on (its default; ``Trainer`` turns it off and checks its data once).
    ``inputs`` False: ``x`` only gives the batch size
    (the guide's use of it: ``bayesprune.inspection`` draws gates with a placeholder)."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(f"x must be a tensor of examples, not {type(x).__name__}")
    batch, dtype = x.shape[0], net.layers["out"].weight.dtype
    if batch == 0:
        raise ValueError("x holds no example: a mini-batch needs at least one")
    if inputs and x.dtype != dtype:
        raise TypeError(f"x is {x.dtype}, the network's weights are {dtype}")
    shape = tuple(x.shape[1:])  # the network reshapes each example to its in_shape
    if inputs and math.prod(shape) != math.prod(net.in_shape):
        raise ValueError(f"x holds examples of shape {shape}; the network takes {net.in_shape}")
    if inputs and is_validation_enabled() and not bool(torch.isfinite(x).all()):
        # (the one check that reads values, so only under Pyro's validation, as its own are;
        # Trainer checks its data once and trains with validation off)
        raise ValueError(
            "x holds NaN or infinite values: one would turn every parameter into NaN at the "
            "step's update"
        )
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.long, torch.uint8):
            kind = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"y must hold integer class labels (torch.long or uint8), not {kind}")
        if y.dim() != 1 or y.shape[0] != batch:
            raise ValueError(f"y has shape {tuple(y.shape)}: one label per example ({batch})")
        classes = net.num_classes
        if is_validation_enabled() and bool(((y < 0) | (y >= classes)).any()):
            # (values read, so under Pyro's validation only, as the inputs' finiteness is)
            raise ValueError(
                f"y holds labels outside 0..{classes - 1} (from {int(y.min())} to "
                f"{int(y.max())}): the network has {classes} outputs"
            )
    if isinstance(num_data, torch.Tensor) and num_data.dim() == 0 and not (
        num_data.dtype.is_floating_point or num_data.dtype == torch.bool
    ):  # a 0-d integer tensor: compared on the CPU only (no device synchronisation)
        num_data = int(num_data) if num_data.device.type == "cpu" else None
    if num_data is not None and (
        isinstance(num_data, bool) or not isinstance(num_data, numbers.Integral)
        or num_data < batch
    ):  # fmt: skip
        raise ValueError(
            f"num_data = {num_data!r}: N, the number of training examples, an integer of at "
            f"least the batch's {batch}"
        )
    if index is not None and (not isinstance(index, torch.Tensor) or index.shape != (batch,)):
        shape = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"index must be the batch's {batch} example indices, got {shape}")


def _check_no_enclosing_plate() -> None:
    """Refuse a plate around the whole model (``Predictive(..., parallel=True)`` draws its
    samples in one): the network runs one set of weights at a time. With two or more samples
    the global sites' shapes said so; with one, the error came from deep inside the network."""
    plates = [f.name for f in _PYRO_STACK if isinstance(f, PlateMessenger)]
    if plates:
        raise ValueError(
            f"GatedModel takes one sample of each global site, and runs inside no plate of its "
            f"own caller's (here {', '.join(plates)}): draw samples one at a time "
            "(Predictive(..., parallel=False); an ELBO's particles without "
            "vectorize_particles)"
        )


def _unbatched(value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """``value`` without leading singleton dims beyond its ``event_dim`` (one sample only)."""
    extra = value.dim() - event_dim
    if extra > 0:
        if any(d != 1 for d in value.shape[:extra]):
            raise ValueError(
                f"GatedModel takes one sample of each global site, got shape "
                f"{tuple(value.shape)} (use Predictive(..., parallel=False))"
            )
        value = value.reshape(value.shape[extra:])
    return value
