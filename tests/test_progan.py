"""Progressive growing (issue 10): the growth schedule, the fade-in (at alpha = 0 a new block changes
nothing, at alpha = 1 the old path is gone), a run through every stage, bad values."""

import pytest
import torch
import torch.nn.functional as F

import robustrep as rr
from robustrep.errors import UserError
from robustrep.models.progan import growth
from robustrep.training import fit


def build():
    torch.manual_seed(0)
    return rr.models.build("progan", input_shape=(1, 8, 8), width=8, noise_dim=8)


def test_growth_runs_stable_fade_stable_fade_stable():
    assert [growth(e, 5) for e in range(5)] == [(0, 1.0), (1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    stages = [growth(e, 20) for e in range(20)]
    assert [s for s, _ in stages] == [0] * 4 + [1] * 8 + [2] * 8
    fading = [a for s, a in stages[4:8]]
    assert fading == sorted(fading) and 0 < fading[0] < fading[-1] < 1


def test_a_new_block_fades_in_from_nothing():
    model = build()
    g = model.generator
    z = torch.randn(4, 8)
    small = g(z, 0, 1.0)  # 2x2
    torch.testing.assert_close(g(z, 1, 0.0), F.interpolate(small, scale_factor=2, mode="nearest"))
    assert not torch.allclose(g(z, 1, 1.0), g(z, 1, 0.0))
    x = torch.rand(4, 1, 4, 4)
    c = model.critic
    torch.testing.assert_close(c(x, 1, 0.0), c(F.avg_pool2d(x, 2), 0, 1.0))
    assert g(z, 2, 1.0).shape == (4, 1, 8, 8) and c(torch.rand(4, 1, 8, 8), 2, 0.3).shape == (4, 1)


def test_samples_are_full_size_at_every_stage():
    model = build().eval()
    for stage, alpha in [(0, 1.0), (1, 0.5), (2, 1.0)]:
        model.stage, model.alpha = stage, alpha
        assert model.sample(3).shape == (3, 1, 8, 8)


def test_training_passes_through_every_stage():
    model = build()
    history = fit(model, torch.rand(32, 1, 8, 8), epochs=5, batch_size=16, progress=False)
    assert [r["critic/stage"] for r in history] == [0, 1, 1, 2, 2]
    assert [r["critic/alpha"] for r in history] == [1.0, 0.5, 1.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "bad",
    [
        dict(input_shape=(1, 10, 10)),
        dict(width=0),
        dict(penalty=float("nan")),
        dict(drift=-1.0),
        dict(d_lr=0.0),
        dict(noise_dim=-3),
    ],
)
def test_bad_settings_are_refused_at_construction(bad):
    with pytest.raises(UserError):
        rr.models.build("progan", **{"input_shape": (1, 8, 8), **bad})
