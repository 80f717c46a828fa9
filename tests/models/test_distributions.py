import math

import pyro.distributions as dist
import pytest
import torch

from bayesprune.models import Flattening, GaussianScaleMixture


def _explicit_gsm_log_prob(value, probs, spike, slab):
    """The same mixture, built from torch's MixtureSameFamily, one mixture per row."""
    n = value.shape[-1]
    total = 0.0
    for s in range(value.shape[0]):
        mix = dist.Categorical(probs=torch.stack([probs[s], 1 - probs[s]]))
        comp = dist.Normal(torch.zeros(2, n), torch.stack([slab, spike]).unsqueeze(-1).expand(2, n))
        total = total + dist.MixtureSameFamily(mix, dist.Independent(comp, 1)).log_prob(value[s])
    return total


def test_gsm_log_prob_matches_explicit_mixture():
    probs = torch.tensor([0.9, 0.5, 0.1, 0.999])
    spike, slab = torch.tensor(0.03), torch.tensor(0.1)
    value = torch.randn(4, 6) * torch.tensor([0.1, 0.02, 0.05, 0.3]).unsqueeze(-1)
    gsm = GaussianScaleMixture(probs, spike, slab, row_size=6)
    assert gsm.event_shape == (4, 6)
    expected = _explicit_gsm_log_prob(value, probs, spike, slab)
    assert torch.allclose(gsm.log_prob(value), expected, atol=1e-4)


def test_gsm_log_prob_integrates_to_one_in_one_dimension():
    gsm = GaussianScaleMixture(
        torch.tensor([0.3]), torch.tensor(0.2), torch.tensor(1.0), row_size=1
    )
    grid = torch.linspace(-8, 8, 20001).reshape(-1, 1, 1)
    density = torch.stack([gsm.log_prob(g) for g in grid]).exp()
    mass = torch.trapezoid(density, grid.flatten())
    assert mass.item() == pytest.approx(1.0, abs=1e-4)


def test_expected_log_prob_is_affine_in_theta_with_gaussian_vertices():
    value = torch.randn(3, 5) * 0.1
    spike, slab = torch.tensor(0.05), torch.tensor(0.2)
    normal = lambda s: dist.Normal(0, s).log_prob(value).sum(-1)  # noqa: E731
    for t in (0.0, 0.25, 1.0):
        theta = torch.full((3,), t)
        gsm = GaussianScaleMixture(theta, spike, slab, row_size=5)
        expected = (t * normal(slab) + (1 - t) * normal(spike)).sum()
        assert torch.allclose(gsm.expected_log_prob(value), expected, atol=1e-5)
    # Gaussian q(w): E[w²] = μ² + σ² enters the quadratic term only.
    gsm = GaussianScaleMixture(torch.ones(3), spike, slab, row_size=5)
    var = torch.full_like(value, 0.01)
    gap = gsm.expected_log_prob(value) - gsm.expected_log_prob(value, var)
    assert gap.item() == pytest.approx(15 * 0.01 / (2 * 0.04), rel=1e-5)


def test_gsm_row_mask_drops_rows():
    value = torch.randn(4, 3)
    gsm = GaussianScaleMixture(torch.full((4,), 0.5), torch.tensor(0.1), torch.tensor(1.0), 3)
    keep = torch.tensor([True, False, True, True])
    sliced = GaussianScaleMixture(torch.full((3,), 0.5), torch.tensor(0.1), torch.tensor(1.0), 3)
    assert torch.allclose(gsm.mask_rows(keep).log_prob(value), sliced.log_prob(value[keep]))


def test_flattening_is_flat_on_the_closed_cube():
    flat = Flattening(3)
    assert flat.log_prob(torch.tensor([0.0, 1.0, 0.3])).item() == 0.0
    assert flat.log_prob(torch.tensor([0.0, 1.01, 0.3])).item() == -math.inf
    assert flat.log_prob(torch.tensor([-1e-3, 0.5, 0.3])).item() == -math.inf
    assert flat.sample((7,)).shape == (7, 3)


def test_gsm_prior_samples_have_the_slab_scale_where_pi_is_one_and_spike_where_zero():
    """GaussianScaleMixture.sample (the prior predictive): π_s = 1 rows ~ N(0, σ₁²), π_s = 0 rows
    ~ N(0, σ₀²)."""
    torch.manual_seed(0)
    gsm = GaussianScaleMixture(torch.tensor([1.0, 0.0]), torch.tensor(0.1), torch.tensor(2.0), 500)
    draws = gsm.sample((20,))  # (20, 2, 500)
    assert float(draws[:, 0].std()) == pytest.approx(2.0, rel=0.03)
    assert float(draws[:, 1].std()) == pytest.approx(0.1, rel=0.03)
