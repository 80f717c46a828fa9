"""The objective F of Eq. (8) as a Pyro ELBO with exact expectations over the gates."""

from __future__ import annotations

from contextlib import contextmanager

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.poutine.util import site_is_subsample

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.guides.straight_through import draw_gates
from bayesprune.inference.elbo_fast import (
    FAST_ESTIMATORS,
    add_prior_weight_grads,
    evaluate,
    fast_prior_applies,
    vertex_correction,
    vertex_pricing_applies,
)
from bayesprune.inference.pruning import PruneMessenger, active_pruning
from bayesprune.models.distributions import GaussianScaleMixture
from bayesprune.models.gated_model import GatedModel, check_batch

ESTIMATORS = ("first-order", "secant", "exact", "score")
IMPLEMENTATIONS = ("auto", "fast", "traced")


def _is_gate(site: dict) -> bool:
    return site["type"] == "sample" and site["name"].endswith(".gate")


def _guide_only_sites(model_trace, guide_trace) -> dict:
    """The guide's latent sample sites the model does not have (auxiliary sites)."""
    return {
        name: site
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and name not in model_trace.nodes
    }


def _pruned(trace) -> bool:
    """Whether a pruning handler changed any gate site of ``trace`` (as a context around the
    evaluation, or wrapped around the model by the functional ``prune``)."""
    return any(
        getattr(site["fn"], "_bayesprune_pruned", False)
        for site in trace.nodes.values()
        if site["type"] == "sample" and _is_gate(site)
    )


def _check_model_trace(model_trace) -> None:
    """Refuse, in one line, a model trace this ELBO cannot evaluate: no likelihood site ``obs``
    (blocked or hidden), or gate sites the model observes (``poutine.condition``), whose log p
    the exact expectation over the gates would leave out."""
    if "obs" not in model_trace.nodes:
        raise ValueError(
            "GatedELBO needs the model's likelihood site 'obs' (the gates' evidence is its "
            "log-likelihood); it is blocked or missing in this model"
        )
    nodes = model_trace.nodes.items()
    observed = [
        n
        for n, site in nodes
        if site["type"] == "sample"
        and site["is_observed"]
        and (_is_gate(site) or n.endswith(".prob"))
    ]
    if observed:  # q(π) = δ(θ) makes the gates' KL exactly 0: a fixed π ≠ θ has no place
        raise NotImplementedError(
            f"GatedELBO takes the expectation over the gates exactly, with the gate "
            f"probabilities π at the guide's θ, and cannot condition on gates or on π "
            f"({', '.join(observed)} observed); pyro.infer.Trace_ELBO evaluates such a model"
        )
    masked = [
        n
        for n, site in nodes
        if site["type"] == "sample"
        and n != "obs"
        and not _is_gate(site)
        and isinstance(site["mask"], torch.Tensor)
        and site["mask"].numel() > 1
        and not site_is_subsample(site)
    ]
    if masked:
        raise ValueError(
            f"a mask of many values reaches the global site(s) {', '.join(masked)}: mask the "
            "examples where they are drawn (poutine.mask inside the model's data plate, or a "
            "smaller batch), not the whole model"
        )


class GatedELBO(Trace_ELBO):
    """Negative ELBO plus negative log hyper-prior of a gated network, F of Eq. (8).

    A :class:`~pyro.infer.Trace_ELBO` for :class:`pyro.infer.SVI`: ``SVI(model, guide, optim,
    loss=GatedELBO())``. Differences from ``Trace_ELBO``:

    - every GSM weight site contributes its *exact* expectation over q(ξ) instead of a sampled log
      density: −Σ_s θ_s KL_s when the guide marks the site ``infer={"structured": True}``
      (Eq. (4s); with ``"coupled": True`` as well, each weight's KL counted with the probability
      that its input unit is on, Eq. (4c), the default posterior), the mean-field expectation of
      Eq. (4) otherwise; q(π) = δ(θ), so the gate KL
      is exactly 0 (Eq. (6));
    - the per-example gate sites contribute nothing (their KL to Bernoulli(π = θ) is 0);
    - the gradient with respect to θ of the data term uses the chosen estimator (Eq. (9)):

      ``"first-order"``: ∂L/∂ξ at the sampled ξ, from the straight-through gate samples of the guide
      (biased, free);
      ``"secant"``: Δ_s ≈ Σ_n [g_ns + (½ − ξ_ns) h_ns], the first-order term g corrected by a
      Gauss-Newton curvature h = ĝ², ĝ the gate gradient at labels ŷ sampled from the model
      (the second-order secant of L(ξ_s = 1) − L(ξ_s = 0); exact for a quadratic loss in ξ_s;
      one extra backward pass to the gates only);
      ``"exact"``: Δ_s = Σ_n [ℓ_n(ξ_ns = 1) − ℓ_n(ξ_ns = 0)] with the other gates at their samples,
      by two extra forward passes per unit (unbiased; a test oracle for small networks);
      ``"score"``: the score function with a leave-one-out baseline (unbiased, noisy).

    Other sites (σ₁², the read-out's weights, sites of other guides such as an ``AutoNormal``)
    count as in ``Trace_ELBO``: log p − log q at the sampled value, with the site's scale and mask.

    **Two evaluations of the same F.** ``implementation="traced"`` runs the guide and the model
    under ``poutine.trace``/``replay`` and reads the sites: it works for any guide of the model
    (``AutoGuideList`` included) and under any handler; it is the reference. ``"fast"``
    computes the same terms from the tensors of the library's own :class:`GateGuide` and
    :class:`GatedModel` (:mod:`bayesprune.inference.elbo_fast`), without traces; it honours the
    :class:`~bayesprune.inference.PruneMessenger` (so a pruned step is as cheap as the traced one
    is exact) and refuses other handlers. ``"auto"`` (default) takes the fast evaluation when it
    applies and the traced one otherwise. Both declare the same ``param`` sites, so ``SVI``
    steps the same parameters.

    .. note:: The gate expectations are exact and each example draws its own gates, so more
        particles add nothing a larger batch would not: ``num_particles`` must be 1.

    :param estimator: one of ``"secant"`` (the library's default), ``"first-order"``, ``"exact"``,
        ``"score"``.
    :param implementation: ``"auto"``, ``"fast"`` or ``"traced"``.
    """

    def __init__(self, estimator: str = "secant", implementation: str = "auto", **kwargs):
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"unknown implementation {implementation!r}: choose one of "
                f"{', '.join(IMPLEMENTATIONS)}"
            )
        if implementation == "fast" and estimator not in FAST_ESTIMATORS:
            raise ValueError(f"the fast evaluation supports {FAST_ESTIMATORS}, not {estimator!r}")
        if kwargs.get("num_particles", 1) != 1:
            raise ValueError(
                "GatedELBO takes its gate expectations exactly and draws one gate per example "
                f"and unit, so num_particles must be 1 (got {kwargs['num_particles']}): use a "
                "larger batch for a lower-variance step"
            )
        if kwargs.get("vectorize_particles"):
            raise ValueError("GatedELBO does not vectorize particles (num_particles is 1)")
        super().__init__(**kwargs)
        self.estimator = estimator
        self.implementation = implementation
        self.last_terms: dict[str, torch.Tensor] | None = None
        # data-parallel training (bayesprune.distributed.GradientSync): ``start()`` is called
        # once the data term's weight gradients exist, ``finish(terms)`` once every gradient of
        # the step does, before the prior's closed-form weight gradients are added
        self.grad_sync = None
        # Eq. (10e): None, or a callable returning per gated layer the units whose gates head
        # for 1 (bool); a producer's θ-gradient then prices the weights it feeds at those
        # consumer units only (the value of F and every other gradient are unchanged)
        self.vertex = None
        # Eq. (9h): None (the gates' evidence on the batch the weights step on), or a callable
        # returning a batch (x, y) of held-out examples, on which the data term's θ-gradient is
        # measured instead (secant estimator, fast evaluation)
        self.evidence_batch = None

    # --- which evaluation -----------------------------------------------------------------------

    def fast_applies(self, model, guide) -> str | None:
        """``None`` if the fast evaluation computes F for this model and guide now, else why."""
        if self.estimator not in FAST_ESTIMATORS:
            return f"the {self.estimator!r} estimator needs the traced evaluation"
        if not isinstance(guide, GateGuide) or not isinstance(model, GatedModel):
            return "the model and guide are not bayesprune's GatedModel and GateGuide"
        if model.net is not guide.net:
            return "the model and the guide hold different networks"
        for frame in _PYRO_STACK:
            if isinstance(frame, PruneMessenger):
                if frame.net is not guide.net:
                    return "a PruneMessenger of another network is active"
                if not fast_prior_applies(guide):
                    return "pruning handler with Gaussian or mean-field weights"
            elif not (isinstance(frame, TraceMessenger) and frame.param_only):
                return f"handler {type(frame).__name__} is active"
        return None

    def _fast(self, model, guide) -> bool:
        if self.implementation == "traced":
            return False
        reason = self.fast_applies(model, guide)
        if reason is not None and self.implementation == "fast":
            raise ValueError(f"GatedELBO(implementation='fast') does not apply: {reason}")
        return reason is None

    # --- the traced evaluation ------------------------------------------------------------------

    def traces(self, model, guide, *args, **kwargs):
        """Guide trace and the model trace replayed against it."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        if self.estimator != "first-order":
            for site in guide_trace.nodes.values():
                if _is_gate(site):
                    site["value"] = site["value"].detach()
                    if self.estimator == "secant" and torch.is_grad_enabled():
                        site["value"].requires_grad_(True)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return model_trace, guide_trace

    def terms(
        self, model, guide, *args, surrogate: bool = True, **kwargs
    ) -> dict[str, torch.Tensor]:
        """The traced evaluation: data term, prior term, the estimator's surrogate term (value 0;
        ``"exact"`` and ``"score"``), and what the secant needs after the backward pass."""
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        _check_model_trace(model_trace)
        data = prior = torch.zeros(())
        nll = None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or _is_gate(site) or site_is_subsample(site):
                continue
            scale, mask = site["scale"], site["mask"]
            if site["is_observed"]:
                nll = -site["fn"].log_prob(site["value"])  # ℓ_n, one per example
                data = data + scale_and_mask(nll, scale, mask).sum()
                continue
            guide_site = guide_trace.nodes[name]
            if isinstance(site["fn"], GaussianScaleMixture):
                q = guide_site["fn"]
                mean, var, entropy = _moments(q, site["value"])
                if guide_site["infer"].get("structured"):
                    coupled = guide_site["infer"].get("coupled")
                    columns = site["fn"].column_probs if coupled else None
                    kl = site["fn"].structured_kl(
                        mean, None if _is_delta(q) else var, column_probs=columns
                    )
                    prior = prior + scale_and_mask(kl, scale, mask)  # Eq. (4s)
                    continue
                expected = site["fn"].expected_log_prob(mean, var) + entropy  # Eq. (4)
                prior = prior - scale_and_mask(expected, scale, mask)
            else:
                log_r = (
                    site["fn"].log_prob(site["value"]).sum()
                    - guide_site["fn"].log_prob(site["value"]).sum()
                )
                prior = prior - scale_and_mask(log_r, scale, mask)
        # sites of the guide alone (an AutoNormal's "{site}_unconstrained" Normal, whose
        # "{site}" the model sees as a point mass): log q at the drawn value, as Trace_ELBO
        # counts them; −τ·H(q) of the weights lives there
        own = _guide_only_sites(model_trace, guide_trace)
        if own and (_pruned(model_trace) or _pruned(guide_trace)):  # (as a context or wrapping)
            raise NotImplementedError(
                f"the pruning handler cannot drop pruned units from the guide's own sites "
                f"({', '.join(own)}): it masks the model's sites only; remove the units "
                "physically (GateGuide.remove_units) or use GateGuide's own weights"
            )
        for site in own.values():
            log_q = site["fn"].log_prob(site["value"])
            prior = prior + scale_and_mask(log_q, site["scale"], site["mask"]).sum()
        obs = model_trace.nodes["obs"]
        gates = {n: s for n, s in guide_trace.nodes.items() if _is_gate(s)}
        out = {"data": data, "prior": prior, "surrogate": torch.zeros(())}
        out["logits"] = obs["fn"].logits
        layer = {n: n.rpartition(".")[0] for n in gates}  # "fc1.gate" -> "fc1"
        out["gates"] = {layer[n]: s["value"] for n, s in gates.items()}
        # θ as each gate site uses it: (B, S), expanded from θ; row 0 is θ itself in value
        out["thetas"] = {layer[n]: s["fn"].base_dist.probs for n, s in gates.items()}
        out["scale"] = obs["scale"]
        if surrogate and self.estimator in ("exact", "score"):
            out["surrogate"] = self.oracle_surrogate(
                model, guide_trace, nll, obs, out["thetas"], args, kwargs
            )
        return out

    def oracle_surrogate(self, model, guide_trace, nll, obs, thetas, args, kwargs) -> torch.Tensor:
        """A term with value 0 whose θ-gradient is the ``"exact"`` or ``"score"`` estimator's."""
        scale = obs["scale"]
        gates = {n: s for n, s in guide_trace.nodes.items() if _is_gate(s)}
        total = torch.zeros(())
        if self.estimator == "score":
            nll = nll.detach()
            batch = nll.shape[0]
            baseline = (nll.sum() - nll) / max(batch - 1, 1)  # leave-one-out: unbiased
            for site in gates.values():
                log_q = site["fn"].base_dist.log_prob(site["value"])  # (B, S)
                total = total + scale * ((nll - baseline).unsqueeze(-1) * log_q).sum()
            return total - total.detach()
        values = {
            n: s["value"].detach()
            for n, s in guide_trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]
        }
        for name in gates:
            delta = exact_gate_differences(model, values, name, args, kwargs)
            total = total + scale * (_row(thetas[name.rpartition(".")[0]]) * delta.sum(0)).sum()
        return total - total.detach()

    # --- Pyro's ELBO interface ------------------------------------------------------------------

    def _vertex(self, guide) -> dict | None:
        if self.vertex is None:
            return None
        if not (isinstance(guide, GateGuide) and vertex_pricing_applies(guide)):
            raise ValueError(
                "vertex pricing (Eq. (10e)) needs bayesprune's GateGuide with point-mass "
                "weights and the coupled posterior"
            )
        return self.vertex()

    def _evaluate(self, model, guide, *args, **kwargs) -> dict:
        vertex = self._vertex(guide)
        if not self._fast(model, guide):
            terms = self.terms(model, guide, *args, **kwargs)
            if vertex:
                pruning = active_pruning(guide.net)
                terms["surrogate"] = terms["surrogate"] + vertex_correction(
                    guide, model.hyper, pruning, vertex
                )
            return terms
        x, y = _batch(args, kwargs)
        num_data = kwargs.get("num_data")
        check_batch(guide.net, x, y, num_data, kwargs.get("index"))  # as the model would
        num_data = x.shape[0] if num_data is None else num_data
        with guide.reading():
            ev = evaluate(
                guide,
                model.hyper,
                x,
                y,
                num_data,
                self.estimator,
                active_pruning(guide.net),
                vertex=vertex,
            )
        return {
            "data": ev.data,
            "prior": ev.prior,
            "surrogate": torch.zeros((), device=x.device),
            "logits": ev.logits,
            "gates": ev.gates,
            "thetas": ev.thetas,
            "scale": ev.scale,
            "weight_grads": ev.weight_grads,
            "theta_grads": ev.theta_grads,
            "labels": y,
            "rerun": _rerun(guide.net, x),
        }

    def data_gate_gradients(self, model, guide, *args, **kwargs) -> dict[str, torch.Tensor]:
        """One draw of the estimator's ∂(data term)/∂θ per gated layer (Eq. (9)); no parameter's
        ``.grad`` changes. For tests and diagnostics."""
        terms = self._evaluate(model, guide, *args, **kwargs)
        thetas = terms["thetas"]
        if self.estimator == "secant":
            leaves = list(terms["gates"].values())
            grads_hat = sampled_label_gate_grads(terms["logits"], leaves)
            grads = torch.autograd.grad(terms["data"], leaves)
            return {
                name: secant_delta(g, g_hat, xi, terms["scale"]).sum(0)
                for name, g, g_hat, xi in zip(thetas, grads, grads_hat, leaves, strict=True)
            }
        grads = torch.autograd.grad(
            terms["data"] + terms["surrogate"], list(thetas.values()), allow_unused=True
        )
        return {
            name: torch.zeros_like(_row(t)) if g is None else (g.sum(0) if g.dim() == 2 else g)
            for (name, t), g in zip(thetas.items(), grads, strict=True)
        }

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """F with the gradients of the first-order estimator (the traced evaluation)."""
        if self.estimator != "first-order":
            raise ValueError(
                "differentiable_loss gives autograd's gradient, the first-order estimator's; "
                f"the {self.estimator!r} estimator needs loss_and_grads"
            )
        terms = self.terms(model, guide, *args, **kwargs)
        return terms["data"] + terms["prior"]

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            terms = self._evaluate(model, guide, *args, **kwargs)
        return float(terms["data"] + terms["prior"])

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backpropagate F; return its value. The terms stay in :attr:`last_terms` (on the
        device, detached): ``"loss"``, ``"data"``, ``"prior"``."""
        return float(self.loss_and_grads_terms(model, guide, *args, **kwargs)["loss"])

    def loss_and_grads_terms(self, model, guide, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Backpropagate F and return its value and its data and prior terms (detached)."""
        terms = self._evaluate(model, guide, *args, **kwargs)
        loss = terms["data"] + terms["prior"]
        secant = self.estimator == "secant" and terms["gates"]
        # the prior's θ-gradient, where the fast evaluation gave it in closed form
        prior_theta = terms.get("theta_grads") or {}
        roots, root_grads = [loss + terms["surrogate"]], [None]
        if not secant:  # (the secant adds it to θ's evidence below: one pass through θ)
            for name, grad in prior_theta.items():
                theta = _row(terms["thetas"][name])
                if theta.requires_grad:
                    roots.append(theta)
                    root_grads.append(grad)
        # the secant's ĝ pass and θ's evidence go back through the graph again: keep it
        torch.autograd.backward(roots, root_grads, retain_graph=bool(secant))
        if self.grad_sync is not None:  # the weights' gradients travel during the ĝ pass
            self.grad_sync.start()
        if secant:  # ĝ: the gate gradient at labels drawn from the model (Eq. (9s))
            if self.evidence_batch is not None:  # Eq. (9h): measured on held-out examples
                deltas = self.held_out_evidence(guide, terms, kwargs.get("num_data"))
            else:
                leaves = list(terms["gates"].values())
                grads_hat = sampled_label_gate_grads(
                    terms["logits"], leaves, terms.get("labels"), terms.get("rerun"),
                    terms["scale"],
                )  # fmt: skip
                deltas = {
                    name: secant_delta(xi.grad, g_hat, xi, terms["scale"]).sum(0)
                    for (name, xi), g_hat in zip(terms["gates"].items(), grads_hat, strict=True)
                }
            thetas, evidence = [], []
            for name, delta in deltas.items():
                thetas.append(_row(terms["thetas"][name]))
                evidence.append(delta if name not in prior_theta else delta + prior_theta[name])
            # θ's gradient: Σ_n Δ_ns, through θ's constraint; the backward of Σ_s θ_s Δ_s,
            # given Δ directly (one engine call, no product and sum to build and undo)
            torch.autograd.backward(thetas, evidence)
        self.last_terms = {
            "loss": loss.detach(),
            "data": terms["data"].detach(),
            "prior": terms["prior"].detach(),
        }
        if self.grad_sync is not None:
            self.last_terms = self.grad_sync.finish(self.last_terms)
        # the prior's weight gradients depend on the weights alone, the same in every process
        add_prior_weight_grads(terms.get("weight_grads", ()))
        return self.last_terms

    def held_out_evidence(self, guide, terms: dict, num_data: int | None) -> dict:
        """Eq. (9h): the secant's Σ_n Δ_ns (Eq. (9s)) per gated layer on a batch of held-out
        examples, ``self.evidence_batch()``, scaled to the N training examples like the data
        term; gates drawn from θ (the pruned units' θ is 0), the weights those of this step.
        Only the gates get gradients: nothing the examples say reaches a weight, and
        BatchNorm's running statistics are left as they were."""
        if "weight_grads" not in terms:
            raise ValueError("held-out evidence (Eq. (9h)) needs the fast evaluation")
        x, y = self.evidence_batch()
        net = guide.net
        gates = {}
        for name, theta in terms["thetas"].items():
            probs = _row(theta).detach()
            gates[name] = draw_gates(probs, (x.shape[0], probs.shape[-1])).requires_grad_(True)
        with _norm_statistics_kept(net):
            logits = net(x, gates=gates)
        scale = (x.shape[0] if num_data is None else num_data) / x.shape[0]
        data = scale * torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        leaves = list(gates.values())
        for xi, grad in zip(leaves, torch.autograd.grad(data, leaves, retain_graph=True),
                            strict=True):  # fmt: skip
            xi.grad = grad
        grads_hat = sampled_label_gate_grads(logits, leaves, y, _rerun(net, x), scale)
        return {
            name: secant_delta(xi.grad, g_hat, xi, scale).sum(0)
            for (name, xi), g_hat in zip(gates.items(), grads_hat, strict=True)
        }


@contextmanager
def _norm_statistics_kept(net):
    """BatchNorm layers normalise by the batch as in training, without updating their running
    statistics (momentum 0 for the duration)."""
    momenta = {name: norm.momentum for name, norm in net.norms.items()}
    for norm in net.norms.values():
        norm.momentum = 0.0
    try:
        yield
    finally:
        for name, momentum in momenta.items():
            net.norms[name].momentum = momentum


def sample_labels(logits: torch.Tensor) -> torch.Tensor:
    """ŷ_n ~ Categorical(softmax(logits_n)), without building a distribution object."""
    probs = torch.softmax(logits.detach(), -1)
    # non-finite logits (a diverged step) draw uniformly: the loss is then non-finite and the
    # trainer stops the run with one line, instead of multinomial raising mid-step
    probs = probs.nan_to_num(1.0 / probs.shape[-1])
    return torch.multinomial(probs, 1).squeeze(-1)


RERUN_SHARE = 0.4  # above this share of drawn labels that differ, ĝ takes the whole batch


def sampled_label_gate_grads(
    logits: torch.Tensor, gates: list[torch.Tensor], labels=None, rerun=None, scale=None
):
    """ĝ = ∂Σ_n ℓ_n(ŷ_n)/∂ξ at labels ŷ ~ p(y | x) drawn once from the model (graph retained).

    E[ĝ²] is the Gauss-Newton diagonal of ℓ_n in ξ_ns, the curvature of the secant (Eq. (9s)).

    Where the drawn label is the observed one, ĝ_n is the data term's own gate gradient
    divided by its scale N/B (``gate.grad`` after the loss's backward pass); given ``labels``
    and ``rerun`` (a function that runs the network on some of the batch's examples with given
    gates, :func:`_rerun`), only the other examples go back through the network, on a forward
    pass of their own. A trained network draws its own label for most examples, so this costs a
    fraction of the full backward pass where the network's arithmetic, not the number of
    operations, sets the time (convolutions); above ``RERUN_SHARE`` the whole batch is used.
    """
    sampled = sample_labels(logits)
    differ = None if labels is None or rerun is None else sampled != labels
    if differ is None or any(g.grad is None for g in gates):
        nll = torch.nn.functional.cross_entropy(logits, sampled, reduction="sum")
        return torch.autograd.grad(nll, gates, retain_graph=True)
    index = torch.nonzero(differ).flatten()
    if index.numel() > RERUN_SHARE * differ.numel():
        nll = torch.nn.functional.cross_entropy(logits, sampled, reduction="sum")
        return torch.autograd.grad(nll, gates, retain_graph=True)
    grads = [g.grad / scale for g in gates]
    if index.numel():
        subset = [g.detach()[index].requires_grad_(True) for g in gates]
        logits_part = rerun(index, subset)
        nll = torch.nn.functional.cross_entropy(logits_part, sampled[index], reduction="sum")
        for grad, part in zip(grads, torch.autograd.grad(nll, subset), strict=True):
            grad[index] = part
    return grads


def _rerun(net, x):
    """``run(index, gates)``: the network's logits on ``x[index]`` with those gates (one per gated
    layer, in order), for :func:`sampled_label_gate_grads`; None where a forward pass on part of
    the batch is not that part of the batch's pass (BatchNorm) or would cost more in operations
    than it saves in arithmetic (no convolution)."""
    if len(net.norms) or not any(kind == "conv" for kind, _ in net.ops):
        return None

    def run(index, gates):
        return net(x[index], gates=dict(zip(net.gated, gates, strict=True)))

    return run


def secant_delta(grad, grad_hat, xi, scale) -> torch.Tensor:
    """Δ_ns = g_ns + (½ − ξ_ns) h_ns per example and unit (Eq. (9s)), times the data scale N/B.

    ``grad`` is the gate gradient of the scaled data term (N/B Σ_n ℓ_n), ``grad_hat`` the
    unscaled ĝ of :func:`sampled_label_gate_grads`, h = ĝ². One fused ``addcmul`` (its CPU
    kernel multiplies left to right, ``(scale · (½ − ξ)) · h``, as the expression does).
    """
    return grad.addcmul(0.5 - xi.detach(), grad_hat.pow(2), value=scale)


def _row(theta: torch.Tensor) -> torch.Tensor:
    """θ (S,) from a gate site's probabilities, (B, S) expanded from θ, or θ itself."""
    return theta[0] if theta.dim() == 2 else theta


def _batch(args, kwargs):
    """(x, y) of a model call ``model(x, y, num_data=..., index=...)``."""
    x = args[0] if args else kwargs["x"]
    y = args[1] if len(args) > 1 else kwargs.get("y")
    if y is None:
        raise ValueError("GatedELBO needs observed labels y")
    return x, y


def _is_delta(q: dist.Distribution) -> bool:
    base = q.base_dist if isinstance(q, dist.Independent) else q
    return isinstance(base, dist.Delta)


def _moments(q: dist.Distribution, value: torch.Tensor):
    """Mean, variance and entropy of a point-mass or mean-field normal q(w)."""
    base = q.base_dist if isinstance(q, dist.Independent) else q
    if isinstance(base, dist.Delta):
        return base.v, 0.0, torch.zeros(())
    if not isinstance(base, dist.Normal):  # e.g. masked by the pruning handler
        raise NotImplementedError(
            f"q(w) of type {type(base).__name__}: the objective needs point masses or normals; "
            "under the pruning handler only point-mass weights are supported (Gaussian-weight "
            "units are removed at once, docs/method.md §5)"
        )
    return base.loc, base.scale**2, base.entropy().sum()


def exact_gate_differences(model, values: dict, gate_site: str, args, kwargs) -> torch.Tensor:
    """ℓ_n(ξ_ns = 1) − ℓ_n(ξ_ns = 0) for every example n and unit s of one gate site.

    The other gates keep their sampled values; two forward passes per unit.

    :returns: tensor of shape ``(B, S)``.
    """
    xi = values[gate_site]
    columns = []
    for s in range(xi.shape[-1]):
        nll = []
        for state in (1.0, 0.0):
            flipped = xi.clone()
            flipped[:, s] = state
            data = {**values, gate_site: flipped}
            trace = poutine.trace(poutine.condition(model, data=data)).get_trace(*args, **kwargs)
            obs = trace.nodes["obs"]
            nll.append(-obs["fn"].log_prob(obs["value"]))
        columns.append(nll[0] - nll[1])
    return torch.stack(columns, -1).detach()
