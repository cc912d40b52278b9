"""rr.certify beyond the paper's bound: the [0, 1] box (input_bounds), CROWN's adaptive slopes and random
Cauchy projections. Soundness against the exhaustive LP and against attacks, an independent numpy CROWN,
convex_adversarial's bounded-input dual network as an oracle, convergence of the projected estimate, and
a model trained with projections certified with the exact bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.certify import certified, layer_bounds, margin_bounds, robust_loss
from robustrep.errors import UserError
from test_certify import convnet, exact_min_margins, margins, mlp

BOX = (0.0, 1.0)


# ---------------------------------------------------------------- soundness: exhaustive LP, attacks


@pytest.mark.parametrize("seed", range(5))
def test_box_and_crown_sound_against_exhaustive_lp(seed):
    net = mlp([3, 4, 3, 3], seed)
    g = torch.Generator().manual_seed(50 + seed)
    x = torch.rand(2, 3, generator=g, dtype=torch.float64)
    x[0, 0] = 0.01  # near the box edge, where clipping bites
    y = net(x).argmax(1)
    for eps in (0.05, 0.3):
        box = {m: margin_bounds(net, x, y, eps, m, input_bounds=BOX) for m in ("dual", "crown", "ibp")}
        crown = margin_bounds(net, x, y, eps, "crown")
        for i in range(2):
            exact_box = exact_min_margins(net, x[i].numpy(), int(y[i]), eps, box=BOX)
            exact_ball = exact_min_margins(net, x[i].numpy(), int(y[i]), eps)
            assert np.all(exact_ball <= exact_box + 1e-7)  # the box is a subset of the ball
            for m, b in box.items():
                assert np.all(b[i].detach().numpy() <= exact_box + 1e-7), m
            assert np.all(crown[i].detach().numpy() <= exact_ball + 1e-7)


def test_no_box_or_crown_certificate_is_broken_by_pgd_or_sampling():
    from robustrep.attacks import PGD

    eps = 0.05
    for seed in range(3):
        net = convnet(seed, torch.float32, odd=seed == 2)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(16, 1, 12, 12, generator=g)
        x[:, :, :4] = 0.0  # black rows, as in MNIST: the box clips
        y = net(x).argmax(1)
        with torch.no_grad():
            bounds = {
                "crown": margin_bounds(net, x, y, eps, "crown"),
                "dual-box": margin_bounds(net, x, y, eps, "dual", input_bounds=BOX),
                "crown-box": margin_bounds(net, x, y, eps, "crown", input_bounds=BOX),
            }
            for trial in range(30):  # inside the box: PGD and samples clamp
                delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
                if trial % 2:
                    delta = delta.sign() * eps
                xs = (x + delta).clamp(0, 1)
                for b in bounds.values():
                    assert (margins(net, xs, y) >= b - 1e-5).all()
        x_adv = PGD(net, eps=eps, steps=40, restarts=2, loss="margin", early_stop=False)(x, y)
        with torch.no_grad():
            broken = net(x_adv).argmax(1) != y
            for b in bounds.values():
                assert (margins(net, x_adv, y) >= b - 1e-5).all()
                assert not (certified(b, y) & broken).any()


@pytest.mark.parametrize("method", ["crown", "dual", "ibp"])
def test_exact_at_zero_radius_with_box(method):
    net = convnet(1, odd=True)
    x, y = torch.rand(5, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (5,))
    assert torch.allclose(margin_bounds(net, x, y, 0.0, method, input_bounds=BOX), margins(net, x, y), atol=1e-10)


def test_ibp_with_box_is_never_looser_than_without():
    # interval arithmetic is monotone in the input box (the dual's fixed slopes are not: no such claim there)
    for seed in range(4):
        net = mlp([10, 20, 20, 5], seed)
        x = torch.rand(6, 10, dtype=torch.float64)
        x[:, :4] = 0.0
        y = net(x).argmax(1)
        assert (
            margin_bounds(net, x, y, 0.1, "ibp", input_bounds=BOX) >= margin_bounds(net, x, y, 0.1, "ibp") - 1e-12
        ).all()


# ---------------------------------------------------------------- oracles


def test_box_dual_equals_convex_adversarial_bounded_input():
    ca = pytest.importorskip("convex_adversarial")
    for kind in ("mlp", "conv"):
        net = mlp([12, 20, 16, 6], 3) if kind == "mlp" else convnet(2)
        x = torch.rand(5, *((12,) if kind == "mlp" else (1, 12, 12)), dtype=torch.float64)
        x[x < 0.3] = 0.0
        y = net(x).argmax(1)
        k = net[-1].out_features
        eye = torch.eye(k, dtype=x.dtype)
        ref = ca.DualNetwork(net, x, 0.1, bounded_input=True)(eye[y].unsqueeze(1) - eye.unsqueeze(0))
        ours = margin_bounds(net, x, y, 0.1, "dual", input_bounds=BOX)
        assert torch.allclose(ours, ref, atol=1e-8, rtol=0), kind
        assert not torch.allclose(ours, margin_bounds(net, x, y, 0.1, "dual"), atol=1e-3)  # the box mattered


def crown_by_hand(net, x, y, eps, box=None):
    """CROWN (Zhang et al. 2018) on an MLP in plain numpy, one unit at a time: backward linear bounds with
    the upper line d (z - l) for a negative coefficient and the lower line a z (a = 1 if u > -l else 0) for
    a positive one; pre-activation bounds layer by layer the same way."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    W = [m.weight.detach().numpy() for m in linears]
    b = [m.bias.detach().numpy() for m in linears]
    out = np.zeros((len(x), W[-1].shape[0]))
    for n, (xi, yi) in enumerate(zip(x.numpy(), y.numpy())):
        lo, hi = xi - eps, xi + eps
        if box is not None:
            lo, hi = np.maximum(lo, box[0]), np.minimum(hi, box[1])
        L, U = [], []

        def lower(c, m, L=L, U=U, lo=lo, hi=hi):  # lower bound on c^T z_{m+1}, z_{m+1} = W[m] h_m + b[m]
            lam, const = np.array(c, dtype=float), 0.0
            for i in reversed(range(m + 1)):
                const += lam @ b[i]
                lam = W[i].T @ lam  # coefficient on h_i
                if i == 0:
                    break
                new = np.zeros_like(lam)
                for j in range(len(lam)):
                    l, u = L[i - 1][j], U[i - 1][j]
                    if l >= 0:
                        new[j] = lam[j]
                    elif u > 0:
                        d = u / (u - l)
                        if lam[j] < 0:  # lam h >= lam d (z - l)
                            new[j], const = lam[j] * d, const - lam[j] * d * l
                        else:  # lam h >= lam a z
                            new[j] = lam[j] * (1.0 if u > -l else 0.0)
                lam = new
            return const + np.minimum(lam * lo, lam * hi).sum()

        for m in range(len(W) - 1):
            width = W[m].shape[0]
            eye = np.eye(width)
            L.append(np.array([lower(eye[j], m) for j in range(width)]))
            U.append(np.array([-lower(-eye[j], m) for j in range(width)]))
        k = W[-1].shape[0]
        for j in range(k):
            out[n, j] = 0.0 if j == yi else lower(np.eye(k)[yi] - np.eye(k)[j], len(W) - 1)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_crown_equals_crown_by_hand(seed):
    net = mlp([6, 9, 8, 7, 4], seed)
    x = torch.rand(3, 6, dtype=torch.float64)
    y = net(x).argmax(1)
    for box in (None, BOX):
        ours = margin_bounds(net, x, y, 0.15, "crown", input_bounds=box).detach().numpy()
        assert np.allclose(ours, crown_by_hand(net, x, y, 0.15, box), atol=1e-10)
    # and not the dual network: the slopes differ on this net
    assert not np.allclose(ours, margin_bounds(net, x, y, 0.15, "dual", input_bounds=BOX).detach().numpy(), atol=1e-6)


def test_crown_layer_bounds_contain_sampled_pre_activations():
    net = convnet(4, odd=True)
    x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    bounds = layer_bounds(net, x, 0.05, "crown", input_bounds=BOX)
    relu_inputs = [i - 1 for i, m in enumerate(net) if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        for _ in range(20):
            z = (x + 0.05 * torch.sign(torch.randn_like(x))).clamp(0, 1)
            for i, layer in enumerate(net):
                z = layer(z)
                if i in relu_inputs:
                    lo, up = bounds[relu_inputs.index(i)]
                    assert (z >= lo - 1e-10).all() and (z <= up + 1e-10).all()


# ---------------------------------------------------------------- random projections


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("box", [None, BOX])
def test_projections_are_exact_when_k_covers_every_layer(kind, box):
    # with k >= a layer's width its identity is pushed forwards: the forward (projection) formulation of
    # the layer bounds must then equal the backward exact one, term for term
    net = mlp([12, 20, 16, 6], 1) if kind == "mlp" else convnet(1)
    x = torch.rand(4, *((12,) if kind == "mlp" else (1, 12, 12)), dtype=torch.float64)
    y = torch.randint(0, 6, (4,))
    eps = torch.tensor([0.02, 0.05, 0.1, 0.0], dtype=torch.float64)
    ex = margin_bounds(net, x, y, eps, "dual", input_bounds=box)
    pr = margin_bounds(net, x, y, eps, "dual", input_bounds=box, projections=10_000)
    assert torch.allclose(ex, pr, atol=1e-12)
    for (a, b), (c, d) in zip(layer_bounds(net, x, eps, "dual", box), layer_bounds(net, x, eps, "dual", box, 10_000)):
        assert torch.allclose(a, c, atol=1e-12) and torch.allclose(b, d, atol=1e-12)


def test_projected_bounds_converge_to_the_exact_ones():
    # median estimator of k Cauchy draws: relative error ~ 1/sqrt(k). Tolerance shrinks with k.
    net = mlp([300, 400, 400, 10], 0)
    x = torch.rand(8, 300, dtype=torch.float64)
    y = net(x).argmax(1)
    exact = layer_bounds(net, x, 0.01, "dual")
    ex_margin = margin_bounds(net, x, y, 0.01, "dual")
    errors, margin_errors = [], []
    for k in (16, 64, 256):
        g = torch.Generator().manual_seed(k)
        est = layer_bounds(net, x, 0.01, "dual", projections=k, generator=g)
        lo, up = est[-1]
        width = (exact[-1][1] - exact[-1][0]).abs()
        rel = ((lo - exact[-1][0]).abs() / width).median().item()
        errors.append(rel)
        g = torch.Generator().manual_seed(k)
        pm = margin_bounds(net, x, y, 0.01, "dual", projections=k, generator=g)
        margin_errors.append((pm - ex_margin).abs().mean().item())
        assert rel < 1.0 / math.sqrt(k), (k, rel)  # measured 0.31-0.46 / sqrt(k) for k = 16 .. 256
    assert errors[0] > errors[1] > errors[2]
    assert margin_errors[2] < 0.5 * margin_errors[0]


def test_projected_robust_loss_is_seeded_differentiable_and_close_to_exact():
    net = convnet(0, torch.float32)
    x, y = torch.rand(6, 1, 12, 12), torch.randint(0, 10, (6,))
    a = robust_loss(net, x, y, 0.05, projections=32, generator=torch.Generator().manual_seed(0))
    b = robust_loss(net, x, y, 0.05, projections=32, generator=torch.Generator().manual_seed(0))
    c = robust_loss(net, x, y, 0.05, projections=32, generator=torch.Generator().manual_seed(1))
    assert a.item() == b.item() and a.item() != c.item()
    a.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    exact = robust_loss(net, x, y, 0.05).item()
    assert abs(a.item() - exact) < 0.2 * exact


def test_model_trained_with_projections_is_certified_with_the_exact_bound():
    # sklearn's 8x8 digits, an MLP 64-128-128-10 (every layer wider than k = 16): robust training with the
    # projected estimate, then the exact certificate, and a normally trained twin for contrast.
    X, y = rr.data.load("digits", "train")
    Xt, yt = rr.data.load("digits", "test")
    eps = 0.1
    accs = {}
    for robust in ("dual", "none"):
        torch.manual_seed(0)
        net = rr.models.build("classifier", input_shape=list(X.shape[1:]), arch="mlp", hidden="128,128").net
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            for idx in torch.randperm(len(X), generator=g).split(50):
                opt.zero_grad()
                if robust == "dual":
                    loss = robust_loss(net, X[idx], y[idx], eps, projections=16, generator=g)
                else:
                    loss = nn.functional.cross_entropy(net(X[idx]), y[idx])
                loss.backward()
                opt.step()
        accs[robust] = rr.certify.certified_accuracy(net, Xt, yt, eps, "dual")
    assert accs["dual"] >= 0.35 and accs["none"] < 0.05, accs


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "bad",
    [
        dict(projections=0),
        dict(projections=-3),
        dict(projections=2.5),
        dict(projections=True),
        dict(projections=float("nan")),
        dict(projections="50"),
        dict(projections=8, method="crown"),
        dict(projections=8, method="ibp"),
        dict(input_bounds=(1.0, 0.0)),
        dict(input_bounds=(0.0, float("inf"))),
        dict(input_bounds=(float("nan"), 1.0)),
        dict(input_bounds=0.5),
        dict(input_bounds=(0, 1, 2)),
        dict(input_bounds=("0", "1")),
        dict(input_bounds=(0.2, 1.0)),
    ],
)
def test_bad_projections_and_input_bounds_are_user_errors(bad):
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.rand(2, 4) * 0.1, torch.tensor([0, 1])
    kwargs = dict(method="dual")
    kwargs.update(bad)
    method = kwargs.pop("method")
    with pytest.raises(UserError):
        margin_bounds(net, x, y, 0.1, method, **kwargs)
    with pytest.raises(UserError):
        robust_loss(net, x, y, 0.1, method, **kwargs)


@pytest.mark.parametrize("bad", [dict(projections=-1), dict(projections=1.5), dict(projections=4, robust="ibp")])
def test_classifier_refuses_bad_projections(bad):
    with pytest.raises(UserError):
        rr.models.build("classifier", input_shape=(1, 8, 8), arch="mlp", **{"robust": "dual", **bad})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_projections_and_crown_on_cuda():
    net = convnet(0, torch.float64)
    x, y = torch.rand(4, 1, 12, 12, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    for kwargs in (
        dict(method="crown"),
        dict(method="dual", input_bounds=BOX),
        dict(method="dual", projections=10_000),
    ):
        cpu = margin_bounds(net, x, y, 0.05, **kwargs)
        gpu = margin_bounds(net.cuda(), x.cuda(), y.cuda(), 0.05, **kwargs)
        net.cpu()
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-8)
