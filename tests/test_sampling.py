"""Annealed Langevin dynamics against closed forms on a Gaussian, whose noisy score is exact."""

import math

import pytest
import torch

from robustrep.errors import UserError
from robustrep.sampling import annealed_langevin, geometric_sigmas, stationary_variance

MU, S = 0.4, 0.3  # data N(MU, S^2)


def gaussian_score(x, sigma):
    return -(x - MU) / (S**2 + sigma**2)  # score of N(MU, S^2 + sigma^2): the data blurred at sigma


def test_chain_settles_at_the_exact_stationary_law_of_its_step_size():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(40_000, 1, generator=g, dtype=torch.float64)
    sigmas = [1.0, 0.5, math.sqrt(0.01)]
    eps = 0.04  # alpha at the last level; v = S^2 + 0.01 = 0.1, so V = v / (1 - 0.1): 11% above v
    x = annealed_langevin(gaussian_score, x0, sigmas, steps=100, eps=eps, denoise=False, generator=g)
    v = S**2 + sigmas[-1] ** 2
    expected = stationary_variance(v, eps)
    assert expected == pytest.approx(v / 0.9)
    assert float(x.mean()) == pytest.approx(MU, abs=0.005)
    assert float(x.var()) == pytest.approx(expected, rel=0.025)
    assert abs(float(x.var()) - v) / v > 0.06  # the test tells the exact law from the step-free one


def test_tweedie_denoising_step_shrinks_towards_the_mean_by_the_closed_form_factor():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(40_000, 1, generator=g, dtype=torch.float64)
    sigma, eps = 0.2, 0.01
    x = annealed_langevin(gaussian_score, x0, [sigma], steps=200, eps=eps, denoise=True, generator=g)
    v = S**2 + sigma**2
    shrink = S**2 / v  # x + sigma^2 score(x) = MU + (x - MU) S^2 / v
    assert float(x.var()) == pytest.approx(stationary_variance(v, eps) * shrink**2, rel=0.025)


def test_levels_and_steps_are_visited_in_order_with_the_annealed_step():
    seen = []

    def score(x, sigma):
        seen.append(sigma)
        return torch.zeros_like(x)

    x0 = torch.zeros(4, 1, 2, 2)
    x = annealed_langevin(
        score, x0, [2.0, 1.0], steps=3, eps=1e-2, denoise=False, generator=torch.Generator().manual_seed(0)
    )
    assert seen == [2.0] * 3 + [1.0] * 3
    # zero score: pure noise with variance 3 * eps * 4 + 3 * eps * 1 per coordinate
    assert x.shape == x0.shape


def test_a_generator_makes_it_reproducible_and_clamp_keeps_the_unit_interval():
    x0 = torch.rand(8, 1, 4, 4)
    a = annealed_langevin(
        gaussian_score,
        x0,
        geometric_sigmas(1, 0.01, 5),
        steps=5,
        eps=1e-3,
        clamp=True,
        generator=torch.Generator().manual_seed(3),
    )
    b = annealed_langevin(
        gaussian_score,
        x0,
        geometric_sigmas(1, 0.01, 5),
        steps=5,
        eps=1e-3,
        clamp=True,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_geometric_sigmas_have_a_constant_ratio():
    s = geometric_sigmas(1.0, 0.01, 10)
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(0.01)
    torch.testing.assert_close(s[1:] / s[:-1], torch.full((9,), 0.01 ** (1 / 9)))


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=0),
        dict(steps=1.5),
        dict(eps=0.0),
        dict(eps=float("nan")),
        dict(eps=-1.0),
        dict(sigmas=[]),
        dict(sigmas=[0.1, 1.0]),
        dict(sigmas=[1.0, float("inf")]),
        dict(sigmas=[1.0, -0.1]),
        dict(x0=torch.tensor([float("nan")])),
        dict(x0=torch.tensor([1, 2])),
    ],
)
def test_bad_settings_are_refused_before_sampling(bad):
    calls = []

    def score(x, sigma):
        calls.append(sigma)
        return x

    kwargs = dict(sigmas=[1.0, 0.1], steps=2, eps=1e-3, x0=torch.zeros(2))
    kwargs.update(bad)
    x0 = kwargs.pop("x0")
    with pytest.raises(UserError):
        annealed_langevin(score, x0, **kwargs)
    assert calls == []


@pytest.mark.parametrize("bad", [(0.0, 0.1, 3), (1.0, 2.0, 3), (1.0, 0.1, 0), (float("nan"), 0.1, 3)])
def test_bad_sigma_ranges_are_refused(bad):
    with pytest.raises(UserError):
        geometric_sigmas(*bad)
