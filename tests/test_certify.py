"""rr.certify: agreement with convex_adversarial (oracle), interval arithmetic done by hand, exact LP
enumeration on tiny nets, attacks that must never beat a certificate, the robust loss, and user errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.certify import certified, layer_bounds, margin_bounds, robust_loss
from robustrep.errors import UserError


def mlp(sizes, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def convnet(seed, dtype=torch.float64, odd=False):
    """A small Wong-Kolter-shaped conv net on 12x12 inputs. `odd`: a 3x3 stride-2 second convolution,
    whose transpose needs an output padding (convex_adversarial cannot transpose it)."""
    torch.manual_seed(seed)
    second = nn.Conv2d(4, 8, 3, stride=2, padding=1) if odd else nn.Conv2d(4, 8, 4, stride=2, padding=1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1),
        nn.ReLU(),
        second,
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).to(dtype)


def margins(net, x, y):
    z = net(x)
    return z.gather(1, y[:, None]) - z


# ---------------------------------------------------------------- agreement with convex_adversarial


def oracle(net, x, y, eps):
    ca = pytest.importorskip("convex_adversarial")
    dual = ca.DualNetwork(net, x, eps)  # bounded_input=False: no [0, 1] box, as in the paper
    k = net[-1].out_features
    eye = torch.eye(k, dtype=x.dtype)
    return dual, dual(eye[y].unsqueeze(1) - eye.unsqueeze(0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_dual_equals_convex_adversarial(kind, seed):
    net = mlp([12, 20, 16, 10, 6], seed) if kind == "mlp" else convnet(seed)
    shape = (12,) if kind == "mlp" else (1, 12, 12)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(6, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, net[-1].out_features, (6,), generator=g)
    eps = [0.02, 0.05, 0.1, 0.3][seed]
    dual, ref = oracle(net, x, y, eps)
    ours = margin_bounds(net, x, y, eps, "dual")
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0)
    assert (ours.gather(1, y[:, None]) == 0).all()
    # the layer-wise bounds of Algorithm 1 too
    relus = [layer for layer in dual.dual_net if type(layer).__name__ == "DualReLU"]
    ours_layers = layer_bounds(net, x, eps, "dual")
    assert len(relus) == len(ours_layers) == 3
    for (lo, up), ref_layer in zip(ours_layers, relus):
        assert torch.allclose(lo, ref_layer.zl, atol=1e-4, rtol=0) and torch.allclose(
            up, ref_layer.zu, atol=1e-4, rtol=0
        )


def test_dual_equals_convex_adversarial_on_wong_kolter_mnist_net_float32():
    from robustrep.models.classifier import wk_conv

    torch.manual_seed(0)
    net = wk_conv((1, 28, 28), 10)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 3, 7])
    _, ref = oracle(net, x, y, 0.1)
    assert torch.allclose(margin_bounds(net, x, y, 0.1, "dual"), ref, atol=1e-4, rtol=0)


def test_per_example_eps_matches_separate_calls():
    net = mlp([8, 12, 12, 4], 3)
    x, y = torch.rand(3, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    eps = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    batch = margin_bounds(net, x, y, eps, "dual")
    for i in range(3):
        one = margin_bounds(net, x[i : i + 1], y[i : i + 1], float(eps[i]), "dual")
        assert torch.allclose(batch[i], one[0], atol=1e-10)


# ---------------------------------------------------------------- IBP by hand


def ibp_by_hand(net, x, y, eps):
    """Plain numpy interval arithmetic, one unit at a time, with the last layer folded into c."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    W = [m.weight.detach().numpy() for m in linears]
    b = [m.bias.detach().numpy() for m in linears]
    out = np.zeros((len(x), W[-1].shape[0]))
    for n, (xi, yi) in enumerate(zip(x.numpy(), y.numpy())):
        lo, hi = xi - eps, xi + eps
        for Wl, bl in zip(W[:-1], b[:-1]):
            new_lo, new_hi = np.empty(len(bl)), np.empty(len(bl))
            for j in range(len(bl)):
                terms_lo = [min(w * l, w * h) for w, l, h in zip(Wl[j], lo, hi)]
                terms_hi = [max(w * l, w * h) for w, l, h in zip(Wl[j], lo, hi)]
                new_lo[j], new_hi[j] = bl[j] + sum(terms_lo), bl[j] + sum(terms_hi)
            lo, hi = np.maximum(new_lo, 0), np.maximum(new_hi, 0)
        for j in range(W[-1].shape[0]):
            row = W[-1][yi] - W[-1][j]
            out[n, j] = b[-1][yi] - b[-1][j] + sum(min(w * l, w * h) for w, l, h in zip(row, lo, hi))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_ibp_equals_interval_arithmetic_by_hand(seed):
    net = mlp([5, 7, 6, 4], seed)
    x, y = torch.rand(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    ours = margin_bounds(net, x, y, 0.07, "ibp")
    assert np.allclose(ours.detach().numpy(), ibp_by_hand(net, x, y, 0.07), atol=1e-10)
    # folding the last layer into c is never looser than subtracting the logits' intervals
    ((lo, hi),) = [layer_bounds(net, x, 0.07, "ibp")[-1]]
    last = net[-1]
    zl = (
        torch.nn.functional.linear(lo.clamp(min=0), last.weight.clamp(min=0))
        + torch.nn.functional.linear(hi.clamp(min=0), last.weight.clamp(max=0))
        + last.bias
    )
    zu = (
        torch.nn.functional.linear(hi.clamp(min=0), last.weight.clamp(min=0))
        + torch.nn.functional.linear(lo.clamp(min=0), last.weight.clamp(max=0))
        + last.bias
    )
    naive = zl.gather(1, y[:, None]) - zu
    off = torch.ones_like(ours, dtype=torch.bool).scatter(1, y[:, None], False)
    assert (ours[off] >= naive[off] - 1e-12).all()


def test_dual_never_looser_than_ibp_on_first_layer_and_tighter_on_average():
    gaps = []
    for seed in range(10):
        net = mlp([10, 30, 30, 30, 5], seed)
        x, y = torch.rand(8, 10, dtype=torch.float64), torch.randint(0, 5, (8,))
        (dl, du), *_ = layer_bounds(net, x, 0.05, "dual")
        (il, iu), *_ = layer_bounds(net, x, 0.05, "ibp")
        assert (dl >= il - 1e-10).all() and (du <= iu + 1e-10).all()
        gaps.append((margin_bounds(net, x, y, 0.05, "dual") - margin_bounds(net, x, y, 0.05, "ibp")).mean().item())
    assert np.mean(gaps) > 0 and sum(g > 0 for g in gaps) >= 8


@pytest.mark.parametrize("method", ["dual", "ibp"])
def test_exact_at_zero_radius(method):
    net = convnet(1, odd=True)
    x, y = torch.rand(5, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (5,))
    assert torch.allclose(margin_bounds(net, x, y, 0.0, method), margins(net, x, y), atol=1e-10)


# ---------------------------------------------------------------- soundness against exact answers


def exact_min_margins(net, x, y, eps, box=None):
    """min over the l_inf ball (clipped to `box` = (lo, hi) if given) of z_y - z_j for each j, by
    enumerating every activation pattern of the hidden units and solving one LP in x per pattern
    (scipy HiGHS)."""
    from scipy.optimize import linprog

    linears = [m for m in net if isinstance(m, nn.Linear)]
    W = [m.weight.detach().numpy() for m in linears]
    b = [m.bias.detach().numpy() for m in linears]
    widths = [w.shape[0] for w in W[:-1]]
    n0, k = W[0].shape[1], W[-1].shape[0]
    lo, hi = (x - eps, x + eps) if box is None else (np.maximum(x - eps, box[0]), np.minimum(x + eps, box[1]))
    bounds = list(zip(lo, hi))
    best = np.full(k, np.inf)
    for pattern in itertools.product([0, 1], repeat=sum(widths)):
        A_ub, b_ub = [], []
        M, c0 = np.eye(n0), np.zeros(n0)  # current layer = M x + c0
        start = 0
        for Wl, bl, width in zip(W[:-1], b[:-1], widths):
            M, c0 = Wl @ M, Wl @ c0 + bl  # pre-activation
            s = np.array(pattern[start : start + width], dtype=float)
            start += width
            sign = np.where(s > 0, -1.0, 1.0)  # active: z >= 0 -> -z <= 0; inactive: z <= 0
            A_ub.append(sign[:, None] * M)
            b_ub.append(-sign * c0)
            M, c0 = s[:, None] * M, s * c0
        A, c = W[-1] @ M, W[-1] @ c0 + b[-1]
        A_ub, b_ub = np.vstack(A_ub), np.concatenate(b_ub)
        for j in range(k):
            if j == y:
                continue
            obj = A[y] - A[j]
            res = linprog(obj, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
            if res.status == 0:
                best[j] = min(best[j], res.fun + c[y] - c[j])
    best[y] = 0.0
    return best


@pytest.mark.parametrize("seed", range(6))
def test_sound_against_exhaustive_lp_enumeration(seed):
    net = mlp([3, 4, 3, 3], seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, generator=g, dtype=torch.float64)
    y = net(x).argmax(1)
    for eps in (0.05, 0.2):
        dual, ibp = margin_bounds(net, x, y, eps, "dual"), margin_bounds(net, x, y, eps, "ibp")
        for i in range(2):
            exact = exact_min_margins(net, x[i].numpy(), int(y[i]), eps)
            # the enumeration itself: its minimum is attained in the ball, so below the margin at x
            assert np.all(exact <= margins(net, x[i : i + 1], y[i : i + 1])[0].detach().numpy() + 1e-7)
            assert np.all(dual[i].detach().numpy() <= exact + 1e-7)
            assert np.all(ibp[i].detach().numpy() <= exact + 1e-7)


def test_no_certified_point_is_broken_by_sampling_or_pgd():
    from robustrep.attacks import PGD

    eps = 0.04
    for seed in range(3):
        net = convnet(seed, torch.float32, odd=seed == 2)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(16, 1, 12, 12, generator=g)
        y = net(x).argmax(1)
        with torch.no_grad():
            bound = margin_bounds(net, x, y, eps, "dual")
            # dense sampling of the ball, corners included (ReLU nets are extreme at vertices more often)
            for trial in range(40):
                delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
                if trial % 2:
                    delta = delta.sign() * eps
                assert (margins(net, x + delta, y) >= bound - 1e-5).all()
        x_adv = PGD(net, eps=eps, steps=40, restarts=2, loss="margin", early_stop=False)(x.clamp(0, 1), y)
        with torch.no_grad():
            assert (margins(net, x_adv, y) >= bound - 1e-5).all()
            broken = net(x_adv).argmax(1) != y
        assert not (certified(bound, y) & broken).any()


# ---------------------------------------------------------------- robust loss


def test_robust_loss_is_differentiable_and_upper_bounds_clean_cross_entropy():
    net = convnet(0, torch.float32)
    x, y = torch.rand(8, 1, 12, 12), torch.randint(0, 10, (8,))
    clean = nn.functional.cross_entropy(net(x), y)
    for method in ("dual", "ibp"):
        net.zero_grad()
        loss = robust_loss(net, x, y, 0.05, method)
        loss.backward()
        grads = [p.grad for p in net.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert sum(gr.abs().sum() for gr in grads) > 0
        assert loss.item() >= clean.item() - 1e-6
    assert torch.allclose(robust_loss(net, x, y, 0.0, "dual"), clean, atol=1e-5)


def test_robust_loss_gradient_matches_convex_adversarial():
    ca = pytest.importorskip("convex_adversarial")
    net = mlp([10, 16, 16, 4], 2, torch.float64)
    x, y = torch.rand(5, 10, dtype=torch.float64), torch.randint(0, 4, (5,))
    ours = robust_loss(net, x, y, 0.1)
    g_ours = torch.autograd.grad(ours, list(net.parameters()))
    ref, _ = ca.robust_loss(net, 0.1, x, y)
    g_ref = torch.autograd.grad(ref, list(net.parameters()))
    assert abs(ours.item() - ref.item()) < 1e-8
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-8)


def test_epsilon_schedule_is_wong_kolters_linspace():
    s = rr.certify.EpsilonSchedule(eps=0.1, start=0.05, length=10)
    assert np.allclose([s(t) for t in range(12)], list(np.linspace(0.05, 0.1, 10)) + [0.1, 0.1])
    assert rr.certify.EpsilonSchedule(eps=0.3)(0) == 0.3


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "bad",
    [
        dict(net=nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))),
        dict(method="lp"),
        dict(eps=-0.1),
        dict(eps=float("nan")),
        dict(x=torch.full((2, 4), float("nan"))),
        dict(y=torch.tensor([0, 5])),
        dict(y=torch.tensor([0.0, 1.0])),
        dict(x=torch.rand(2, 5)),
        dict(net=nn.Linear(4, 2)),
    ],
)
def test_bad_input_is_a_user_error(bad):
    args = dict(
        net=nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
        x=torch.rand(2, 4),
        y=torch.tensor([0, 1]),
        eps=0.1,
        method="dual",
    )
    args.update(bad)
    with pytest.raises(UserError):
        margin_bounds(args["net"], args["x"], args["y"], args["eps"], args["method"])


def test_classifier_with_front_end_is_not_certified_behind_its_back():
    model = rr.models.build("classifier", input_shape=(1, 8, 8), arch="mlp", front_end="dct", front_k=10)
    with pytest.raises(UserError):
        margin_bounds(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.1)
    with pytest.raises(UserError):
        rr.models.build("classifier", input_shape=(1, 8, 8), arch="mlp", front_end="dct", front_k=10, robust="dual")


def test_grouped_dilated_convolutions_are_transposed_exactly():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 2, stride=1, groups=4, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(3),
    ).double()
    x = torch.rand(4, 2, 9, 9, dtype=torch.float64)
    net(x)
    y = net(x).argmax(1)
    assert torch.allclose(margin_bounds(net, x, y, 0.0, "dual"), margins(net, x, y), atol=1e-10)
    bound = margin_bounds(net, x, y, 0.05, "dual")
    assert (bound <= margin_bounds(net, x, y, 0.0, "dual") + 1e-12).all()
    with torch.no_grad():
        for _ in range(30):
            assert (margins(net, x + 0.05 * torch.sign(torch.randn_like(x)), y) >= bound - 1e-9).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["dual", "ibp"])
def test_same_bounds_on_cuda(method):
    net = convnet(0, torch.float64)
    x, y = torch.rand(4, 1, 12, 12, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    cpu = margin_bounds(net, x, y, 0.05, method)
    gpu = margin_bounds(net.cuda(), x.cuda(), y.cuda(), 0.05, method)
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-8)


@pytest.mark.parametrize("dilation", [1, 2])
def test_fold_transpose_of_a_first_convolution_equals_conv_transpose(dilation):
    from robustrep.certify.layers import Conv2dOp

    torch.manual_seed(5)
    conv = nn.Conv2d(1, 12, 3, stride=2, padding=1, dilation=dilation).double()  # 1*9 <= 12: the fold path
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    op = Conv2dOp(conv, (1, 12, 12), tuple(conv(x).shape[1:]))
    nu = torch.randn(3, 5, *op.out_shape, dtype=torch.float64)
    ref = torch.nn.functional.conv_transpose2d(
        nu.flatten(0, 1), conv.weight, None, conv.stride, conv.padding, op.output_padding, 1, conv.dilation
    ).view(3, 5, 1, 12, 12)
    assert torch.allclose(op.transpose(nu), ref, atol=1e-12)
    # and it is the adjoint: <nu, W x> = <W^T nu, x>
    lhs = (nu * conv(x).sub(conv.bias.view(1, -1, 1, 1)).unsqueeze(1)).flatten(2).sum(2)
    rhs = (op.transpose(nu) * x.unsqueeze(1)).flatten(2).sum(2)
    assert torch.allclose(lhs, rhs, atol=1e-10)


def test_blockwise_layer_bounds_without_gradients_equal_the_one_shot_ones(monkeypatch):
    from robustrep.certify import dual

    net = convnet(3, odd=True)
    x, y = torch.rand(5, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (5,))
    with_grad = margin_bounds(net, x, y, 0.05, "dual")  # graph kept: one block
    monkeypatch.setattr(dual, "MAX_ELEMENTS", 5 * 144 * 7)  # blocks of 7 units
    with torch.no_grad():
        blocks = margin_bounds(net, x, y, 0.05, "dual")
    assert torch.allclose(with_grad, blocks, atol=1e-12)


def test_consecutive_affine_layers_before_the_first_relu():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)).double()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    y = net(x).argmax(1)
    with torch.no_grad():
        assert torch.allclose(margin_bounds(net, x, y, 0.0, "dual"), margins(net, x, y), atol=1e-10)
        bound = margin_bounds(net, x, y, 0.1, "dual")
        for _ in range(30):
            assert (margins(net, x + 0.1 * torch.sign(torch.randn_like(x)), y) >= bound - 1e-9).all()
    flat = nn.Sequential(nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3)).double()
    with torch.no_grad():  # the folded product W2 W1 gives the same exact first layer
        flat[0].weight.copy_(net[2].weight @ net[1].weight)
        flat[0].bias.copy_(net[2].weight @ net[1].bias + net[2].bias)
        flat[2].load_state_dict(net[4].state_dict())
    assert torch.allclose(bound, margin_bounds(flat, x.flatten(1), y, 0.1, "dual"), atol=1e-10)
