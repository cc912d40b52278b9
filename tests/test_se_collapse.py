"""The smooth encoder's collapse watch: a huge gamma makes mu constant in x during training, and the fit
says so at the next epoch's start (warns, or stops with on_collapse="stop"); a small gamma escapes the
near-constant initial encoder and is left alone."""

from __future__ import annotations

import warnings

import pytest
import torch

from robustrep import data, models
from robustrep.errors import UserError
from robustrep.models.smooth_encoder import CollapseWarning, code_nats
from robustrep.training import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(gamma: float, epochs: int, **kw):
    # 16 steps an epoch; a healthy encoder leaves its near-constant initialisation within about 64 steps here
    torch.manual_seed(0)
    X, _ = data.load("digits", "train")
    model = models.build(
        "se",
        input_shape=[1, 8, 8],
        latent_dim=4,
        hidden=64,
        arch="conv",
        obs_var=1e-3,
        gamma=gamma,
        select_eps=0.1,
        select_steps=1,
        collapse_warmup=64,
        **kw,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, X[:512], epochs=epochs, batch_size=32, lr=3e-3, progress=False, device="cpu", seed=0)
    return model, history, [w for w in caught if issubclass(w.category, CollapseWarning)]


def test_code_nats_is_the_gaussian_channel_capacity():
    mu = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # Var_x mu_0 = 4/3 (unbiased), mu_1 constant
    var = torch.full((4, 2), 0.5)
    expected = 0.5 * torch.log1p(torch.tensor(4 / 3 / 0.5))
    assert torch.allclose(code_nats(mu, var), expected)
    assert code_nats(torch.ones(8, 3), torch.ones(8, 3)) == 0  # a constant encoder carries nothing
    assert code_nats(mu[:1], var[:1]) == 0


def test_a_huge_gamma_collapses_and_is_caught_during_training():
    model, history, caught = _train(gamma=1e4, epochs=6)
    assert len(caught) == 2  # at the start of epochs 5 and 6: during training, not after it
    assert "collapsed by the end of epoch 4" in str(caught[0].message)
    assert history[-1]["code_nats"] < 0.05  # the logged metric shows it too
    # on_collapse="stop": the same check stops the fit (a UserError, one plain line) at the next epoch's start
    model.on_collapse = "stop"
    model.train().loss(data.load("digits", "train")[0][:32])
    with pytest.raises(UserError, match="collapsed by the end of epoch 6"):
        model.on_epoch_start(6, 7)


def test_a_small_gamma_is_not_flagged():
    model, history, caught = _train(gamma=0.01, epochs=6)
    assert not caught and history[-1]["code_nats"] > 1.0


@pytest.mark.parametrize(
    "bad",
    [
        {"collapse_nats": float("nan")},
        {"collapse_nats": -1.0},
        {"collapse_nats": float("inf")},
        {"on_collapse": "explode"},
        {"on_collapse": 1},
        {"collapse_warmup": -1},
        {"collapse_warmup": 2.5},
    ],
)
def test_bad_collapse_settings_are_refused(bad):
    with pytest.raises(UserError):
        models.build("se", input_shape=[1, 8, 8], **bad)
