"""The noise-conditional score network (issue 10): denoising score matching by hand, the noise levels'
positions, the score plugged into the annealed Langevin sampler, bad values."""

import pytest
import torch

import robustrep as rr
from robustrep.errors import UserError


def build(**kw):
    torch.manual_seed(0)
    return rr.models.build("ncsn", input_shape=(1, 8, 8), width=8, **kw)


def test_loss_is_denoising_score_matching_weighted_by_sigma_squared():
    model = build(levels=4)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    loss = model.loss(x)["loss"]
    torch.manual_seed(1)
    sigma = model.sigmas[torch.randint(4, (6,))].view(-1, 1, 1, 1)
    z = torch.randn_like(x)
    noisy = x + sigma * z
    target = -(noisy - x) / sigma**2  # the score of the Gaussian kernel q_sigma(x~ | x)
    s = model.score(noisy, sigma.flatten())
    expected = sum(0.5 * sigma[i, 0, 0, 0] ** 2 * (s[i] - target[i]).pow(2).sum() for i in range(6)) / 6
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_each_level_sits_at_its_index_and_the_score_is_scaled_by_one_over_sigma():
    model = build(levels=5, sigma_max=1.0, sigma_min=0.01)
    torch.testing.assert_close(model._position(model.sigmas), torch.arange(5.0), rtol=0, atol=1e-5)
    x = torch.rand(3, 1, 8, 8)
    sigma = float(model.sigmas[2])
    raw = model.net(x, torch.full((3,), 2.0))
    torch.testing.assert_close(model.score(x, sigma), raw / sigma, rtol=1e-4, atol=1e-5)


def test_sampling_goes_through_the_langevin_sampler(monkeypatch):
    model = build(levels=3, steps_per_level=2).eval()
    seen = []
    original = model.score

    def spy(x, sigma):
        seen.append(float(sigma))
        return original(x, sigma)

    monkeypatch.setattr(model, "score", spy)
    out = model.sample(2, generator=torch.Generator().manual_seed(0))
    levels = [float(s) for s in model.sigmas]
    assert seen == [levels[0]] * 2 + [levels[1]] * 2 + [levels[2]] * 3  # 2 steps a level, then Tweedie
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "bad",
    [
        dict(levels=0),
        dict(sigma_min=0.0),
        dict(sigma_max=0.001),
        dict(step_lr=0.0),
        dict(step_lr=float("nan")),
        dict(steps_per_level=0),
        dict(input_shape=(1, 6, 6)),
        dict(sigma_max=float("inf")),
        dict(sigma_max=1e20),
    ],
)
def test_bad_settings_are_refused_at_construction(bad):
    with pytest.raises(UserError):
        rr.models.build("ncsn", **{"input_shape": (1, 8, 8), **bad})
