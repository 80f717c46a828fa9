"""The objective F of Eq. (8) as a Pyro ELBO with exact expectations over the gates."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from bayesprune.models.distributions import GaussianScaleMixture

ESTIMATORS = ("first-order", "secant", "exact", "score")


def _is_gate(site: dict) -> bool:
    return site["type"] == "sample" and site["name"].endswith(".gate")


class GatedELBO(Trace_ELBO):
    """Negative ELBO plus negative log hyper-prior of a gated network, F of Eq. (8).

    Differences from :class:`~pyro.infer.Trace_ELBO`:

    - every GSM weight site contributes its *exact* expectation over q(ξ) instead of a sampled log
      density: −Σ_s θ_s KL_s when the guide marks the site ``infer={"structured": True}``
      (Eq. (4s)), the mean-field expectation of Eq. (4) otherwise; q(π) = δ(θ), so the gate KL
      is exactly 0 (Eq. (6));
    - the per-example gate sites contribute nothing (their KL to Bernoulli(π = θ) is 0);
    - the gradient with respect to θ of the data term uses the chosen estimator (Eq. (9)):

      ``"first-order"``: ∂L/∂ξ at the sampled ξ, from the straight-through gate samples of the guide
      (biased, free);
      ``"secant"``: Δ_s ≈ Σ_n [g_ns + (½ − ξ_ns) h_ns], the first-order term g corrected by a
      Gauss-Newton curvature h = ĝ², ĝ the gate gradient at labels ŷ sampled from the model
      (the second-order secant of L(ξ_s = 1) − L(ξ_s = 0); exact for a quadratic loss in ξ_s;
      two extra backward passes to the gates only);
      ``"exact"``: Δ_s = Σ_n [ℓ_n(ξ_ns = 1) − ℓ_n(ξ_ns = 0)] with the other gates at their samples,
      by two extra forward passes per unit (unbiased; a test oracle for small networks);
      ``"score"``: the score function with a leave-one-out baseline (unbiased, noisy).

    Other sites (σ₁², output weights) are handled as in ``Trace_ELBO``.

    .. warning:: Assumes the model and guide of :mod:`bayesprune` (sites named ``"{layer}.gate"``,
        ``"{layer}.prob"``, ``"{layer}.weight"`` and an observed ``"obs"`` with one log-likelihood
        per example) and ``num_particles=1``.

    :param estimator: one of ``"secant"`` (the library's default), ``"first-order"``, ``"exact"``,
        ``"score"``.
    """

    def __init__(self, estimator: str = "secant", **kwargs):
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}"
            )
        super().__init__(**kwargs)
        self.estimator = estimator

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
        """The data term, the prior term and the estimator's surrogate (zero-valued) term."""
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        data = prior = torch.zeros(())
        nll = None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or _is_gate(site):
                continue
            scale = site["scale"]
            if site["is_observed"]:
                nll = -site["fn"].log_prob(site["value"])  # ℓ_n, one per example
                data = data + scale * nll.sum()
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
                    prior = prior + scale * kl  # Eq. (4s)
                    continue
                prior = prior - scale * (
                    site["fn"].expected_log_prob(mean, var) + entropy
                )  # Eq. (4)
            else:
                prior = prior - scale * (
                    site["fn"].log_prob(site["value"]).sum()
                    - guide_site["fn"].log_prob(site["value"]).sum()
                )
        zero = torch.zeros(())
        extra = (
            self.surrogate(model, model_trace, guide_trace, nll, args, kwargs)
            if surrogate
            else zero
        )
        return {"data": data, "prior": prior, "surrogate": extra}

    def surrogate(self, model, model_trace, guide_trace, nll, args, kwargs) -> torch.Tensor:
        """A term with value 0 whose θ-gradient is the chosen estimator's (Eq. (9))."""
        if self.estimator == "first-order":
            return torch.zeros(())
        scale = model_trace.nodes["obs"]["scale"]
        gates = {n: s for n, s in guide_trace.nodes.items() if _is_gate(s)}
        total = torch.zeros(())
        if self.estimator == "secant":
            xis = [site["value"] for site in gates.values()]
            deltas = secant_differences(model_trace.nodes["obs"], xis)
            for site, delta in zip(gates.values(), deltas, strict=True):
                theta = site["fn"].base_dist.probs[0]
                total = total + scale * (theta * delta.sum(0)).sum()
            return total - total.detach()
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
        for name, site in gates.items():
            delta = exact_gate_differences(model, values, name, args, kwargs)
            theta = site["fn"].base_dist.probs[0]
            total = total + scale * (theta * delta.sum(0)).sum()
        return total - total.detach()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        terms = self.terms(model, guide, *args, **kwargs)
        return terms["data"] + terms["prior"] + terms["surrogate"]

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            terms = self.terms(model, guide, *args, surrogate=False, **kwargs)
        return float(terms["data"] + terms["prior"])

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        return float(self.loss_and_grads_terms(model, guide, *args, **kwargs)["loss"])

    def loss_and_grads_terms(self, model, guide, *args, **kwargs) -> dict[str, float]:
        """Backpropagate F and return its value and its data and prior terms."""
        terms = self.terms(model, guide, *args, **kwargs)
        loss = terms["data"] + terms["prior"]
        (loss + terms["surrogate"]).backward()
        return {
            "loss": loss.detach(),
            "data": terms["data"].detach(),
            "prior": terms["prior"].detach(),
        }


def sample_labels(logits: torch.Tensor) -> torch.Tensor:
    """ŷ_n ~ Categorical(softmax(logits_n)), without building a distribution object."""
    return torch.multinomial(torch.softmax(logits.detach(), -1), 1).squeeze(-1)


def secant_differences(obs: dict, xis: list[torch.Tensor]) -> list[torch.Tensor]:
    """g + (½ − ξ) h per example and unit for each gate tensor (Eq. (9s)), each ``(B, S)``.

    g = ∂Σ_n ℓ_n/∂ξ_n at the sampled gates; h = ĝ², ĝ the same gradient at labels ŷ ~ p(y | x)
    sampled once from the model: E[ĝ²] is the Gauss-Newton diagonal of ℓ_n in ξ_ns. The gates must
    be leaves of the graph that requires grad; the graph is retained for the main backward.
    """
    logits = obs["fn"].logits
    nll = -obs["fn"].log_prob(obs["value"]).sum()
    grads = torch.autograd.grad(nll, xis, retain_graph=True)
    sampled = sample_labels(logits)
    nll_sampled = -obs["fn"].log_prob(sampled).sum()
    grads_hat = torch.autograd.grad(nll_sampled, xis, retain_graph=True)
    return [
        (g + (0.5 - xi.detach()) * g_hat.pow(2)).detach()
        for g, g_hat, xi in zip(grads, grads_hat, xis, strict=True)
    ]


def _is_delta(q: dist.Distribution) -> bool:
    base = q.base_dist if isinstance(q, dist.Independent) else q
    return isinstance(base, dist.Delta)


def _moments(q: dist.Distribution, value: torch.Tensor):
    """Mean, variance and entropy of a point-mass or mean-field normal q(w)."""
    base = q.base_dist if isinstance(q, dist.Independent) else q
    if isinstance(base, dist.Delta):
        return base.v, 0.0, torch.zeros(())
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
