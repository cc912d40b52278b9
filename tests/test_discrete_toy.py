"""The discrete toy of Cemgil et al. 2020, Sec. 2.2: its batch ELBO by explicit loops, and the fragility
it shows: unobserved rows of a VAE's encoder get no gradient, a smooth encoder's do."""

import math

import pytest
import torch

import robustrep as rr
from robustrep.discrete_toy import DiscreteVAE, circular_distance, von_mises_target


def test_tables_are_distributions_and_the_elbo_matches_loops():
    model = DiscreteVAE(nx=6, nz=5, seed=1)
    q, p = model.encoder(), model.decoder()
    torch.testing.assert_close(q.sum(1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(p.sum(0), torch.ones(5, dtype=torch.float64))
    mu, sig = model.mu.detach(), model.log_sigma.detach().exp()
    m, v = model.m.detach(), float(model.log_v.detach().exp())
    qq = [[math.exp(math.cos(2 * math.pi * (mu[i] - j / 5)) / sig[i]) for j in range(5)] for i in range(6)]
    qq = [[a / sum(r) for a in r] for r in qq]
    pp = [[math.exp(math.cos(2 * math.pi * (m[j] - i / 6)) / v) for j in range(5)] for i in range(6)]
    col = [sum(pp[i][j] for i in range(6)) for j in range(5)]
    pp = [[pp[i][j] / col[j] for j in range(5)] for i in range(6)]
    s = torch.tensor([2.0, 0, 1, 3, 0, 1], dtype=torch.float64)
    expected = sum(s[i] * qq[i][j] * math.log(pp[i][j] * (1 / 5) / qq[i][j]) for i in range(6) for j in range(5))
    assert float(model.batch_elbo(s).detach()) == pytest.approx(float(expected), rel=1e-10)


def test_unobserved_rows_get_no_gradient_in_a_vae_but_do_in_a_smooth_encoder():
    s = torch.tensor([3.0, 0, 0, 0, 2, 0, 0, 0, 0, 1], dtype=torch.float64)
    vae = DiscreteVAE(nx=10, nz=8, seed=0)
    (-vae.objective(s)).backward()
    unseen = s == 0
    assert (vae.mu.grad[unseen] == 0).all() and (vae.mu.grad[~unseen] != 0).all()
    se = DiscreteVAE(nx=10, nz=8, gamma=10.0, radius=1, seed=0)
    (-se.objective(s)).backward()
    # each observed input (0, 4, 9) couples to one neighbour within radius 1: unobserved 1, 3, 5 or 8 move,
    # rows farther from the data (2, 6, 7) still get nothing
    assert (se.mu.grad[[1, 3, 5, 8]] != 0).sum() >= 1
    assert (se.mu.grad[[2, 6, 7]] == 0).all()


def test_circular_distance():
    a = torch.tensor([0.05, 0.5, 0.9])
    b = torch.tensor([0.95, 0.25, 0.1])
    torch.testing.assert_close(circular_distance(a, b), torch.tensor([0.1, 0.25, 0.2]))


def test_the_smooth_encoder_is_smoother_off_the_data():
    torch.manual_seed(0)
    pi = von_mises_target(20, spread=0.4)
    s = torch.distributions.Multinomial(20, probs=pi).sample().double()
    vae, se = DiscreteVAE(20, 20, seed=0), DiscreteVAE(20, 20, gamma=1.0, radius=2, seed=0)
    vae.fit(s, steps=300, lr=0.02)
    se.fit(s, steps=300, lr=0.02)
    assert se.roughness() < vae.roughness()


@pytest.mark.parametrize("bad", [dict(nx=1), dict(gamma=-1.0), dict(radius=0), dict(gamma=float("nan"))])
def test_bad_toy_settings_are_refused(bad):
    with pytest.raises(rr.errors.UserError):
        DiscreteVAE(**bad)
