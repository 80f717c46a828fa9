"""The variational posterior q(ξ) q(w) q(Λ) (Eq. (7) of docs/method.md)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from contextlib import contextmanager

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroParam
from pyro.params.param_store import param_with_module_name
from pyro.poutine.runtime import effectful
from torch import nn
from torch.distributions import constraints

from bayesprune.guides.constraints import projected_unit_interval
from bayesprune.guides.straight_through import StraightThroughBernoulli
from bayesprune.models.gated_model import HyperPrior, check_batch
from bayesprune.models.network import GatedNet, layout, sliced_copy

POSTERIORS = ("coupled", "structured", "mean-field")


def _param_value(name, value, **kwargs):
    return value


_declare_param = effectful(_param_value, type="param")  # a param statement returning ``value``
WEIGHTS = ("point", "gaussian", None)


class GateGuide(PyroModule):
    """q(ξ_s) = Bernoulli(θ_s), q(w) = δ(w − μ) or N(μ, σ²), q(π) = δ(θ), q(σ₁²) = δ(σ̂₁²).

    θ is a ``PyroParam`` per layer with the constraint
    :data:`~bayesprune.guides.constraints.projected_unit_interval`: θ = clip(u, 0, 1) of its
    stored value u, which the projected optimiser (:class:`~bayesprune.inference.GateOptim`)
    keeps in [0, 1], so θ reaches 0 and 1 exactly (Eq. (10)). The weight means μ are the
    network's own parameters, so the trained network *is* the posterior mean; every call of the
    guide declares them as ``param`` sites (named as Pyro names a module's parameters, e.g.
    ``"net$$$layers.fc1.weight"``) whose values carry
    ``.unconstrained`` like Pyro's own, so :class:`pyro.infer.SVI` with any ``pyro.optim``
    optimiser trains them. The prior parameters are point estimates updated in closed form
    (:func:`bayesprune.inference.update_slab_variances`). The guide owns all of this state:
    :meth:`remove_units` removes units physically, :meth:`set_gate_probs` sets θ.

    :param net: the network whose parameters are the posterior means μ.
    :param hyper: prior settings: the guide's global sites (σ₁², π, the weights) are scaled
        by its temperature τ, as the model's are, so that stock ELBOs weigh log q as they weigh
        log p (the initial σ̂₁² is the reference variance 1/fan_in of each layer, whatever
        ``hyper``); build guide and model from the same one.
    :param weights: ``"point"`` (point masses, the default), ``"gaussian"`` (mean-field normal,
        reparameterised) or ``None``: the guide has no weight sites and leaves them to another
        guide, e.g. ``guide = AutoGuideList(model)``, then
        ``guide.append(poutine.scale(AutoNormal(poutine.block(model, expose=weight_sites)),
        scale=hyper.temperature))`` and ``guide.append(GateGuide(net, hyper, weights=None))``
        (the AutoNormal's sites tempered as the model's are; the network's own parameters are
        then unused).
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
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be 'point', 'gaussian' or None, got {weights!r}")
        if not 0 < init_theta <= 1:
            raise ValueError(f"init_theta must lie in (0, 1], got {init_theta}")
        self.net = net
        self.hyper = hyper  # its temperature scales the global sites, as the model's
        self.weights = weights
        self.theta = PyroModule()
        for name in net.gated:
            setattr(
                self.theta,
                name,
                PyroParam(
                    torch.full((net.width(name),), init_theta),
                    constraint=projected_unit_interval,
                    event_dim=1,
                ),
            )
            self._storage("theta", name)._bayesprune_gate = True  # routed to the projected step
        self.log_sigma = PyroModule()
        if weights == "gaussian":
            for name in net.layers:
                shape = (net.width(name), net.fan_in(name) + 1)
                setattr(self.log_sigma, name, PyroParam(torch.full(shape, float(init_sigma)).log()))
        for name in net.layers:
            self.register_buffer(f"slab_var_{name}", torch.tensor(1.0 / net.fan_in(name)))
        for name in net.gated:  # original unit indices; remove_units slices them with the units
            self.register_buffer(f"unit_ids_{name}", torch.arange(net.width(name)))

    def __getattr__(self, name: str):
        # The network is reached without PyroModule's implicit ``param`` statements, whose values
        # are the bare nn.Parameters that SVI cannot step; :meth:`declare_network_params`
        # declares them instead.
        if name == "net":
            return self._modules["net"]
        return super().__getattr__(name)

    def __call__(self, *args, **kwargs):
        # Parameters live in the module, not in Pyro's global param store, so that several guides
        # can coexist and physical removal only has to touch the module.
        with pyro.settings.context(module_local_params=True):
            return super().__call__(*args, **kwargs)

    def gate_probs(self, name: str) -> torch.Tensor:
        """θ of one layer."""
        return getattr(self.theta, name)

    def mode_mask(self, name: str) -> torch.Tensor:
        """Which units of layer ``name`` the posterior mode keeps: θ_s ≥ ½. At a tie (θ_s = ½,
        a gate started there that no evidence has moved) the unit stays: a unit leaves the
        deployed network only once its evidence has taken θ below ½."""
        return self.gate_probs(name).detach() >= 0.5

    def mode_gates(self) -> dict[str, torch.Tensor]:
        """The posterior mode's gates, one 0/1 vector per gated layer (a unit is on iff
        θ_s ≥ ½, :meth:`mode_mask`), in θ's dtype: what ``GatedNet.run_ops`` takes to run the
        deployed network."""
        return {n: self.mode_mask(n).to(self.gate_probs(n).dtype) for n in self.net.gated}

    def unit_ids(self, name: str) -> torch.Tensor:
        """Each current unit's index in the layer as it was built (stable across removals)."""
        return self._buffers[f"unit_ids_{name}"]

    def slab_var(self, name: str) -> torch.Tensor:
        """Current point estimate of σ₁² of one layer (a buffer, read without PyroModule's
        attribute machinery: the prior reads it for every layer at every step)."""
        return self._buffers[f"slab_var_{name}"]

    def set_slab_var(self, name: str, value: torch.Tensor) -> None:
        self.slab_var(name).copy_(value)

    def weight_posterior(self, name: str) -> dist.Distribution:
        """q(w) of one layer's augmented weights ``[W | b]``."""
        mean = self.net.augmented(name)
        if self.weights == "point":
            return dist.Delta(mean, event_dim=2)
        return dist.Normal(mean, getattr(self.log_sigma, name).exp()).to_event(2)

    @contextmanager
    def reading(self):
        """Read the guide's parameters outside a guide call, declaring them to Pyro as a call
        would (θ, the Gaussian scales, the network's parameters): the fast evaluation of
        :class:`~bayesprune.inference.GatedELBO` runs inside this, so ``SVI`` sees them."""
        with pyro.settings.context(module_local_params=True), self._pyro_context:
            self.declare_network_params()
            yield self

    def declare_network_params(self) -> None:
        """A ``param`` statement for each of the network's parameters (inside a guide call).

        The value is a view of the parameter with ``.unconstrained`` pointing at it, as Pyro's
        constrained parameters have, so ``SVI`` finds and steps it; nothing is stored on the
        parameter itself (it stays picklable).
        """
        if not self._pyro_context.active or self.weights is None:
            return
        prefix = self._pyro_get_fullname("net")
        names = self.__dict__.get("_param_names")
        if names is None or names[0] != prefix:  # parameters keep their identity when sliced
            names = self.__dict__["_param_names"] = (
                prefix,
                [(param_with_module_name(prefix, n), p) for n, p in self.net.named_parameters()],
            )
        for fullname, p in names[1]:
            value = p.view_as(p)
            value.unconstrained = weakref.ref(p)
            _declare_param(fullname, value, constraint=constraints.real, name=fullname)

    def forward(self, x, y=None, num_data=None, index=None):
        check_batch(self.net, x, y, num_data, index, inputs=False)  # the plate's arguments
        num_data = x.shape[0] if num_data is None else num_data
        self.declare_network_params()
        thetas = {}
        # the global sites under the prior's temperature τ, as the model draws them: stock ELBOs
        # then compute τ·E_q[log p − log q] (Trace_ELBO weighted the entropy of Gaussian weights
        # by 1 where F weights it by τ; TraceMeanField_ELBO's KLs, scaled by the guide's sites,
        # were untempered); GatedELBO reads the model's scale, and the fast path no trace
        with poutine.scale(scale=self.hyper.temperature):
            self._global_sites(thetas)
        subsample = torch.arange(x.shape[0]) if index is None else index
        with poutine.block():  # no "data" subsample site: an AutoGuideList records its own
            plate = pyro.plate("data", num_data, subsample=subsample)
        with plate:
            for name, theta in thetas.items():
                pyro.sample(
                    f"{name}.gate",
                    StraightThroughBernoulli(theta)
                    .expand([x.shape[0], theta.shape[-1]])
                    .to_event(1),
                )

    def _global_sites(self, thetas: dict) -> None:
        """σ₁², π and the weights of every layer (θ of the gated ones into ``thetas``)."""
        for name in self.net.layers:
            pyro.sample(f"{name}.slab_var", dist.Delta(self.slab_var(name)))
            if name != "out":
                thetas[name] = self.gate_probs(name)
                # Eq. (6): under the flattening hyper-prior the optimal π is θ itself.
                pyro.sample(f"{name}.prob", dist.Delta(thetas[name], event_dim=1))
            if self.weights is None:  # another guide (an AutoNormal, ...) has the weights
                continue
            structured = self.structured and name != "out"
            pyro.sample(
                f"{name}.weight",
                self.weight_posterior(name),
                infer={"structured": structured, "coupled": structured and self.coupled},
            )

    def __setstate__(self, state: dict) -> None:
        """Unpickling and ``copy.deepcopy``: the copy's θ storage is marked for the projected
        step as the original's is (``nn.Parameter.__deepcopy__`` drops the mark, and GateOptim
        then stepped a copied guide's θ with Adam)."""
        super().__setstate__(state)
        for name in self.net.gated:
            self._storage("theta", name)._bayesprune_gate = True

    def _storage(self, container: str, name: str) -> nn.Parameter:
        """The ``nn.Parameter`` storing ``container``'s PyroParam for layer ``name``."""
        return getattr(self, container)._parameters[f"{name}_unconstrained"]

    @torch.no_grad()
    def set_gate_probs(self, name: str, value) -> None:
        """Set θ of one layer (projected onto [0, 1])."""
        storage = self._storage("theta", name)
        storage.copy_(torch.as_tensor(value, dtype=storage.dtype).clamp(0.0, 1.0))

    def theta_parameters(self, layers: Iterable[str] | None = None) -> list[nn.Parameter]:
        """The parameters storing θ (for an optimiser; θ = clip of each, see the class doc), of
        every gated layer or of ``layers``."""
        names = self.net.gated if layers is None else layers
        return [self._storage("theta", name) for name in names]

    @torch.no_grad()
    def remove_units(
        self, layer: str, keep: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer] = ()
    ) -> None:
        """Physically remove the units of ``layer`` that are not in ``keep``.

        Slices the layer's rows and biases (and BatchNorm entries), the next layer's input columns
        (:meth:`GatedNet.remove_units_`), θ, the Gaussian posterior scales of both layers, the
        units' original ids, and the matching state of ``optimizers`` (torch optimisers, or
        :class:`~bayesprune.inference.GateOptim`), in place, so the optimisers keep working on
        the same parameter objects. The slab variance is a per-layer scalar and stays.

        :param layer: a gated layer name.
        :param keep: indices (integers) of the units to keep, at least one, each once
            (:meth:`GatedNet.unit_indices` refuses a boolean mask, an index outside the layer
            and a repeated one).
        :param optimizers: every optimiser that steps the guide's parameters: torch optimisers,
            :class:`~bayesprune.inference.GateOptim`, or a stock ``pyro.optim`` optimiser (its
            per-parameter torch optimisers); an optimiser left out keeps state of the old
            shape, and its next step fails.
        """
        if self.weights is None:  # another guide (an AutoNormal, ...) holds the weights'
            raise ValueError(  # posterior, shaped for the full layer: it cannot be sliced here
                "remove_units needs the guide that holds the weights' posterior: with "
                "weights=None another guide (e.g. an AutoNormal in an AutoGuideList) keeps them "
                "at the layer's full width and its next step would fail; zero the units' θ "
                "instead (set_gate_probs), or prune a GateGuide that holds its weights"
            )
        keep = self.net.unit_indices(layer, keep).to(self.gate_probs(layer).device)
        torch_optimizers = []
        for opt in optimizers:
            if hasattr(opt, "torch_optimizers"):
                torch_optimizers.extend(opt.torch_optimizers())
            elif hasattr(opt, "optim_objs"):  # pyro.optim.PyroOptim: one per parameter
                # (a learning-rate scheduler's wraps its optimiser)
                torch_optimizers.extend(getattr(o, "optimizer", o) for o in opt.optim_objs.values())
            elif isinstance(opt, torch.optim.Optimizer):
                torch_optimizers.append(opt)
            else:
                raise TypeError(
                    f"optimizers takes torch or pyro.optim optimisers, not {type(opt).__name__}"
                )
        net = self.net
        nxt = net.next_layer(layer)
        columns = torch.cat(  # augmented: the next layer's input columns, and its bias column
            [net.input_columns(nxt, keep), torch.tensor([net.fan_in(nxt)], device=keep.device)]
        )

        def sliced(p, index):
            _slice_param(p, index, torch_optimizers)

        net.remove_units_(layer, keep, sliced)

        def rows(t):
            return t.index_select(0, keep)

        sliced(self._storage("theta", layer), rows)
        setattr(self, f"unit_ids_{layer}", rows(self.unit_ids(layer)))  # ids follow their units
        if self.weights == "gaussian":
            sliced(self._storage("log_sigma", layer), rows)
            sliced(self._storage("log_sigma", nxt), lambda t: t.index_select(-1, columns))


def _slice_param(param: nn.Parameter, index, optimizers) -> None:
    """Apply ``index`` to a parameter in place and to every optimiser state tensor of its shape."""
    for opt in optimizers:
        state = opt.state.get(param, {})
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = index(value).clone(memory_format=layout(param.data))
    param.data = sliced_copy(param.data, index)
    param.grad = None
