import torch

from bayesprune.inference import slab_variance


def _objective(v, sq, theta, n, rho, alpha, beta):
    """F as a function of σ₁² (Eq. (11)'s derivation), tempered terms and hyper-prior together."""
    on = sq / (2 * v) + n / 2 * torch.log(v)
    off = sq / (2 * rho * v) + n / 2 * torch.log(rho * v)
    return (theta * on + (1 - theta) * off).sum() + (alpha + 1) * torch.log(v) + beta / v


def test_closed_form_slab_variance_is_the_minimiser():
    sq = torch.rand(20) * 0.5
    theta = torch.rand(20)
    n, rho, alpha, beta = 11, 0.1, 50.0, 5.0
    v = slab_variance(sq, theta, n, rho, alpha, beta)
    f = lambda x: _objective(torch.tensor(x), sq, theta, n, rho, alpha, beta)  # noqa: E731
    assert f(float(v)) < f(float(v) * 1.01)
    assert f(float(v)) < f(float(v) * 0.99)


def test_slab_variance_cannot_collapse():
    # All weights at zero: plain empirical Bayes would give σ₁² = 0 (Evidence 1).
    width, n, fan_in = 50, 785, 784
    alpha = width * n / 2
    v = slab_variance(torch.zeros(width), torch.ones(width), n, 0.1, alpha, alpha / fan_in)
    assert v.item() >= 0.49 / fan_in
