"""The variational posterior q(ξ) q(w) q(Λ) (Eq. (7) of docs/method.md)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from bayesprune.guides.straight_through import StraightThroughBernoulli
from bayesprune.models.gated_model import HyperPrior
from bayesprune.models.network import GatedNet

POSTERIORS = ("coupled", "structured", "mean-field")


class GateGuide(PyroModule):
    """q(ξ_s) = Bernoulli(θ_s), q(w) = δ(w − μ) or N(μ, σ²), q(π) = δ(θ), q(σ₁²) = δ(σ̂₁²).

    θ is stored as itself (a ``PyroParam`` per layer, no squashing transform) and kept in [0, 1]
    by projection after every optimiser step (:func:`project_`). The weight means μ are the
    network's own parameters, so the trained network *is* the posterior mean. The prior parameters
    are point estimates updated in closed form (:func:`bayesprune.inference.update_slab_variances`).

    :param net: the network whose parameters are the posterior means μ.
    :param hyper: prior settings (used for the initial σ̂₁² = reference variance 1/fan_in).
    :param weights: ``"point"`` (point masses, the default) or ``"gaussian"`` (mean-field normal,
        reparameterised).
    :param init_theta: initial gate probability θ₀ for every unit.
    :param init_sigma: initial posterior standard deviation for ``weights="gaussian"``.
    :param posterior: ``"coupled"`` (default): a weight has its posterior only when both the unit
        it feeds and the unit feeding it are on, and is the prior otherwise (Eq. (4c)), so a
        unit pays for its incoming *and* outgoing weights; ``"structured"``: q(w_s | ξ_s = 0) is
        the spike prior and q(w_s | ξ_s = 1) the weight posterior, so an off unit costs nothing
        (Eq. (4s)); ``"mean-field"``: one q(w) shared by both gate states (Eq. (4)).

    Parameters are module-local (``pyro.settings`` ``module_local_params``), never in the global
    param store.

    References:
        Titsias & Lázaro-Gredilla, "Spike and Slab Variational Inference for Multi-Task and
        Multiple Kernel Learning", NeurIPS 2011.
    """

    def __init__(
        self,
        net: GatedNet,
        hyper: HyperPrior,
        weights: str = "point",
        init_theta: float = 1.0,
        init_sigma: float = 1e-3,
        posterior: str = "coupled",
    ):
        with pyro.settings.context(module_local_params=True):
            self._build(net, hyper, weights, init_theta, init_sigma, posterior)

    def _build(self, net, hyper, weights, init_theta, init_sigma, posterior) -> None:
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
        self.structured = posterior in ("coupled", "structured")
        self.coupled = posterior == "coupled"
        if weights not in ("point", "gaussian"):
            raise ValueError(f"weights must be 'point' or 'gaussian', got {weights!r}")
        if not 0 < init_theta <= 1:
            raise ValueError(f"init_theta must lie in (0, 1], got {init_theta}")
        self.net = net
        self.weights = weights
        self.theta = PyroModule()
        for name in net.gated:
            setattr(
                self.theta,
                name,
                PyroParam(torch.full((net.width(name),), init_theta)),
            )
        self.log_sigma = PyroModule()
        if weights == "gaussian":
            for name in net.layers:
                shape = (net.width(name), net.fan_in(name) + 1)
                setattr(self.log_sigma, name, PyroParam(torch.full(shape, float(init_sigma)).log()))
        for name in net.layers:
            self.register_buffer(f"slab_var_{name}", torch.tensor(1.0 / net.fan_in(name)))
        for name in net.gated:  # original unit indices; remove_units slices them with the units
            self.register_buffer(f"unit_ids_{name}", torch.arange(net.width(name)))

    def __call__(self, *args, **kwargs):
        # Parameters live in the module, not in Pyro's global param store, so that several guides
        # can coexist and physical removal only has to touch the module.
        with pyro.settings.context(module_local_params=True):
            return super().__call__(*args, **kwargs)

    def gate_probs(self, name: str) -> torch.Tensor:
        """θ of one layer."""
        return getattr(self.theta, name)

    def unit_ids(self, name: str) -> torch.Tensor:
        """Each current unit's index in the layer as it was built (stable across removals)."""
        return getattr(self, f"unit_ids_{name}")

    def slab_var(self, name: str) -> torch.Tensor:
        """Current point estimate of σ₁² of one layer."""
        return getattr(self, f"slab_var_{name}")

    def set_slab_var(self, name: str, value: torch.Tensor) -> None:
        getattr(self, f"slab_var_{name}").copy_(value)

    def weight_posterior(self, name: str) -> dist.Distribution:
        """q(w) of one layer's augmented weights ``[W | b]``."""
        mean = self.net.augmented(name)
        if self.weights == "point":
            return dist.Delta(mean, event_dim=2)
        return dist.Normal(mean, getattr(self.log_sigma, name).exp()).to_event(2)

    def forward(self, x, y=None, num_data=None, index=None):
        num_data = x.shape[0] if num_data is None else num_data
        thetas = {}
        for name in self.net.layers:
            pyro.sample(f"{name}.slab_var", dist.Delta(self.slab_var(name)))
            if name != "out":
                thetas[name] = self.gate_probs(name)
                # Eq. (6): under the flattening hyper-prior the optimal π is θ itself.
                pyro.sample(f"{name}.prob", dist.Delta(thetas[name], event_dim=1))
            structured = self.structured and name != "out"
            pyro.sample(
                f"{name}.weight",
                self.weight_posterior(name),
                infer={"structured": structured, "coupled": structured and self.coupled},
            )
        subsample = torch.arange(x.shape[0]) if index is None else index
        with pyro.plate("data", num_data, subsample=subsample):
            for name, theta in thetas.items():
                pyro.sample(
                    f"{name}.gate",
                    StraightThroughBernoulli(theta)
                    .expand([x.shape[0], theta.shape[-1]])
                    .to_event(1),
                )

    def raw_param(self, container: str, name: str) -> nn.Parameter:
        """The ``nn.Parameter`` storing ``container``'s PyroParam for layer ``name``."""
        return getattr(self, container)._parameters[f"{name}_unconstrained"]

    @torch.no_grad()
    def project_(self) -> None:
        """θ ← clip(θ, 0, 1): the projection of projected SGD (Eq. (10))."""
        for p in self.theta.parameters():
            p.clamp_(0.0, 1.0)

    def theta_parameters(self) -> list[nn.Parameter]:
        """The unconstrained parameters holding θ (identity transform), for the θ optimiser."""
        return list(self.theta.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """The network's parameters and, for Gaussian weights, the log standard deviations."""
        return [*self.net.parameters(), *self.log_sigma.parameters()]
