"""Sparsification defenses: orthonormal bases, the top-K front end, l1-ball projection (Duchi et al.),
and Theorem 2's per-layer bound against random and PGD-found perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustrep.certify import (
    SparsifyingFrontEnd,
    constrain_l1_,
    dct_matrix,
    haar_matrix,
    margin_bounds,
    project_l1_ball,
    project_weights_l1_,
    row_l1_norms,
    theorem2_bounds,
)
from robustrep.errors import UserError


@pytest.mark.parametrize("make", [dct_matrix, haar_matrix])
@pytest.mark.parametrize("n", [8, 28, 7])
def test_bases_are_orthonormal(make, n):
    m = make(n, torch.float64)
    assert torch.allclose(m @ m.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_dct_is_scipys_orthonormal_dct_ii():
    from scipy.fft import dct

    v = np.random.default_rng(0).normal(size=12)
    assert np.allclose(dct_matrix(12, torch.float64).numpy() @ v, dct(v, norm="ortho"))


def test_haar_first_level_is_pairwise_average_and_difference():
    m = haar_matrix(4, torch.float64)
    v = torch.tensor([1.0, 3.0, 5.0, 9.0], dtype=torch.float64)
    # two levels on 4 points: overall average, one coarse detail, two fine details
    assert torch.allclose(m @ v, torch.tensor([9.0, -5.0, -2 / 2**0.5, -4 / 2**0.5], dtype=torch.float64))


@pytest.mark.parametrize("basis", ["dct", "haar"])
def test_front_end_keeps_k_coefficients_and_is_a_projection(basis):
    x = torch.rand(5, 2, 28, 28, dtype=torch.float64)
    front = SparsifyingFrontEnd(k=40, basis=basis)
    out = front(x)
    bh, bw = front.matrices(28, 28, x.dtype, x.device)
    coef = (bh @ out @ bw.T).flatten(-2)
    assert ((coef.abs() > 1e-9).sum(-1) <= 40).all()
    assert torch.allclose(front(out), out, atol=1e-9)  # idempotent
    # the kept coefficients are the K largest of x's: their energy is maximal among K-subsets
    full = (bh @ x @ bw.T).flatten(-2)
    top = full.abs().topk(40, -1).values.pow(2).sum(-1)
    assert torch.allclose(coef.pow(2).sum(-1), top, atol=1e-9)
    assert torch.allclose(SparsifyingFrontEnd(k=28 * 28, basis=basis)(x), x, atol=1e-9)


def test_front_end_attenuates_random_sign_perturbations():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 10:18] = 1.0  # a sparse-ish image
    e = torch.sign(torch.randn_like(x)) * 0.1
    front = SparsifyingFrontEnd(k=50, basis="dct")
    moved = (front(x + e) - front(x)).pow(2).sum((1, 2, 3)).sqrt()
    assert moved.mean() < 0.5 * e.pow(2).sum((1, 2, 3)).sqrt().mean()


def test_front_end_first_called_in_inference_mode_still_differentiates():
    front = SparsifyingFrontEnd(k=10, basis="haar")
    with torch.inference_mode():
        front(torch.rand(2, 1, 8, 8))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    front(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_front_end_rejects_bad_settings():
    with pytest.raises(UserError):
        SparsifyingFrontEnd(k=5, basis="fourier")
    with pytest.raises(UserError):
        SparsifyingFrontEnd(k=0)
    with pytest.raises(UserError):
        SparsifyingFrontEnd(k=100)(torch.rand(1, 1, 8, 8))


def test_l1_projection_matches_bisection_on_the_threshold():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(50, 30, generator=g, dtype=torch.float64) * torch.rand(50, 1, generator=g, dtype=torch.float64) * 3
    radius = 2.0
    w = project_l1_ball(v, radius)
    for vi, wi in zip(v.numpy(), w.numpy()):
        if np.abs(vi).sum() <= radius:
            assert np.array_equal(vi, wi)
            continue
        lo, hi = 0.0, np.abs(vi).max()
        for _ in range(200):  # soft threshold theta with sum(|v| - theta)_+ = radius
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.maximum(np.abs(vi) - mid, 0).sum() > radius else (lo, mid)
        assert np.allclose(wi, np.sign(vi) * np.maximum(np.abs(vi) - lo, 0), atol=1e-9)
        assert abs(np.abs(wi).sum() - radius) < 1e-9


def test_projection_and_parametrization_bound_every_row():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    project_weights_l1_(net, [0.5, 1.5])
    assert np.allclose(row_l1_norms(net), [0.5, 1.5], atol=1e-6)
    other = constrain_l1_(nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3)), 0.7)
    opt = torch.optim.Adam(other.parameters(), lr=0.5)
    for _ in range(5):  # big steps: the constraint must hold whatever they do
        opt.zero_grad()
        other(torch.randn(8, 20)).pow(2).sum().neg().backward()
        opt.step()
        assert max(row_l1_norms(other)) <= 0.7 + 1e-6
    with pytest.raises(UserError):
        project_weights_l1_(net, [1.0])


def _layer_outputs(net, x):
    outs = []
    for layer in net:
        x = layer(x)
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            outs.append(x)
    return outs


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_theorem2_bound_holds_against_random_and_pgd_perturbations(gamma):
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 20), nn.ReLU(), nn.Linear(20, 5)
    )
    project_weights_l1_(net, gamma)
    eps = 0.1
    bounds = theorem2_bounds(net, eps)
    assert np.allclose(bounds, [eps * gamma ** (j + 1) for j in range(3)], rtol=1e-5)
    x = torch.rand(16, 1, 11, 11)
    clean = _layer_outputs(net, x)
    # random corners of the ball
    for _ in range(20):
        moved = _layer_outputs(net, x + eps * torch.sign(torch.randn_like(x)))
        for a, b, bound in zip(moved, clean, bounds):
            assert (a - b).abs().max() <= bound * (1 + 1e-5)
    # PGD on each layer's l_inf change, signed gradient ascent projected onto the ball
    worst = []
    for j, bound in enumerate(bounds):
        delta = (torch.rand_like(x) * 2 - 1) * eps
        for _ in range(30):
            delta.requires_grad_(True)
            change = (_layer_outputs(net, x + delta)[j] - clean[j].detach()).abs().flatten(1).amax(1).sum()
            (grad,) = torch.autograd.grad(change, delta)
            delta = (delta + eps / 4 * grad.sign()).clamp(-eps, eps).detach()
        got = (_layer_outputs(net, x + delta)[j] - clean[j]).abs().max().item()
        assert got <= bound * (1 + 1e-5)
        worst.append(got / bound)
    assert worst[0] > 0.5  # the attack is not idle: on the first layer it gets near the bound


def test_theorem2_margin_certificate_is_sound():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    project_weights_l1_(net, 1.0)
    x = torch.rand(32, 1, 4, 4)
    y = net(x).argmax(1)
    b = margin_bounds(net, x, y, 0.05, "theorem2")
    assert (b.gather(1, y[:, None]) == 0).all()
    for _ in range(50):
        z = net(x + 0.05 * torch.sign(torch.randn_like(x)))
        assert ((z.gather(1, y[:, None]) - z) >= b - 1e-5).all()
