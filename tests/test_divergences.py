"""The identities of MATH.md 2 and 3 for KL, W2 and the entropic W2 divergence."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from robustrep import divergences as dv


def _gaussians(b=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu_a, mu_b = (
        torch.randn(b, d, generator=g, dtype=torch.float64),
        torch.randn(b, d, generator=g, dtype=torch.float64),
    )
    var_a = torch.rand(b, d, generator=g, dtype=torch.float64) * 2 + 0.05
    var_b = torch.rand(b, d, generator=g, dtype=torch.float64) * 2 + 0.05
    return mu_a, var_a, mu_b, var_b


def test_kl_matches_torch_distributions():
    mu, var, _, _ = _gaussians()
    q = torch.distributions.Normal(mu, var.sqrt())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(dv.kl_standard_normal(mu, var), expected)


def test_w2_is_mean_distance_for_equal_variances_and_zero_for_equal_gaussians():
    mu_a, var_a, mu_b, _ = _gaussians()
    torch.testing.assert_close(dv.w2_squared(mu_a, var_a, mu_b, var_a), (mu_a - mu_b).pow(2).sum(-1))
    assert torch.all(dv.w2_squared(mu_a, var_a, mu_a, var_a) == 0)


def test_w2_of_one_dimensional_gaussians_by_quantile_coupling():
    # In 1-D the optimal coupling is monotone: W2^2 = int_0^1 (Fa^-1(t) - Fb^-1(t))^2 dt.
    from scipy.stats import norm

    ma, sa, mb, sb = 0.3, 0.7, -1.1, 1.9
    t = (np.arange(200000) + 0.5) / 200000
    numeric = np.mean((norm.ppf(t, ma, sa) - norm.ppf(t, mb, sb)) ** 2)
    closed = dv.w2_squared(torch.tensor([[ma]]), torch.tensor([[sa**2]]), torch.tensor([[mb]]), torch.tensor([[sb**2]]))
    assert closed.item() == pytest.approx(numeric, rel=1e-3)


def test_entropic_w2_tends_to_w2_as_gamma_grows():
    mu_a, var_a, mu_b, var_b = _gaussians()
    exact = dv.w2_squared(mu_a, var_a, mu_b, var_b)
    gaps = [(dv.entropic_w2_squared(mu_a, var_a, mu_b, var_b, g) - exact).abs().max().item() for g in (1, 10, 1e3, 1e6)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-5


def test_entropic_wasserstein_at_small_gamma_is_minus_the_entropies():
    mu_a, var_a, mu_b, var_b = _gaussians()
    d = mu_a.shape[1]
    limit = (-0.5 * var_a.log() - 0.5 * var_b.log()).sum(-1) - d * (math.log(2 * math.pi) + 1)
    wd = dv.entropic_wasserstein(mu_a, var_a, mu_b, var_b, 1e-9)
    torch.testing.assert_close(wd, limit, rtol=0, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.01, 0.5, 1.0, 10.0, 50.0])
def test_entropic_wasserstein_is_the_minimum_over_the_coupling(gamma):
    # WD = min over psi in (-sqrt(va vb), sqrt(va vb)) of
    #      gamma/2 ((ma-mb)^2 + va + vb - 2 psi) - log(2 pi e) - 1/2 log(va vb - psi^2)
    rng = np.random.default_rng(int(gamma * 100))
    for _ in range(5):
        ma, mb = rng.normal(size=2)
        va, vb = rng.uniform(0.05, 2.0, size=2)
        s = math.sqrt(va * vb)

        def objective(psi):
            return (
                gamma / 2 * ((ma - mb) ** 2 + va + vb - 2 * psi)
                - math.log(2 * math.pi * math.e)
                - 0.5 * math.log(va * vb - psi**2)
            )

        best = minimize_scalar(
            objective, bounds=(-s * (1 - 1e-12), s * (1 - 1e-12)), method="bounded", options={"xatol": 1e-12}
        )
        t = lambda v: torch.tensor([[v]], dtype=torch.float64)  # noqa: E731
        closed = dv.entropic_wasserstein(t(ma), t(va), t(mb), t(vb), gamma).item()
        assert closed == pytest.approx(best.fun, abs=1e-7)
        assert closed <= objective(0.0) + 1e-12  # never above the independent coupling


def test_entropic_wasserstein_has_no_cancellation_for_tiny_gamma_in_float32():
    mu, var = torch.zeros(1, 3), torch.full((1, 3), 1e-3)
    wd32 = dv.entropic_wasserstein(mu, var, mu, var, 1e-4)
    wd64 = dv.entropic_wasserstein(mu.double(), var.double(), mu.double(), var.double(), 1e-4)
    assert torch.isfinite(wd32).all()
    assert wd32.double().item() == pytest.approx(wd64.item(), rel=1e-6)


def test_gaussian_nll_matches_torch_distributions():
    x, mean = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.rand(3, 1, 4, 4, dtype=torch.float64)
    v = 0.3
    expected = -torch.distributions.Normal(mean, math.sqrt(v)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(dv.gaussian_nll(x, mean, v), expected)
