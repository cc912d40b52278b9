"""Transformations: closed forms (rotations by 90 degrees, whole-pixel shifts), gradients against finite
differences (torch.autograd.gradcheck, float64), JPEG against Pillow's libjpeg, seeding and bad input."""

import io

import numpy as np
import pytest
import torch

import robustrep as rr
from robustrep import transforms as T

PARAMS = {  # one fixed parameter row per image (2 images), inside the ranges
    "rotation": (T.Rotation(30), torch.tensor([17.0, -23.0])),
    "scale": (T.Scale((0.8, 1.2)), torch.tensor([0.85, 1.15])),
    "translate": (T.Translate(3), torch.tensor([[1.3, -2.2], [-0.4, 0.7]])),
    "perspective": (T.Perspective(0.2), 0.15 * torch.tensor([[[1, -1], [0.5, 0.2], [-0.3, 1], [0.8, -0.6]]] * 2)),
    "brightness": (T.Brightness(0.1), torch.tensor([0.05, -0.08])),
    "contrast": (T.Contrast((0.8, 1.2)), torch.tensor([0.9, 1.1])),
    "blur": (T.GaussianBlur(1.0), torch.tensor([0.4, 0.9])),
    "noise": (T.GaussianNoise(0.02), 0.02 * torch.randn(2, 1, 9, 9)),
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_gradient_matches_finite_differences(name):
    transform, params = PARAMS[name]
    x = (0.2 + 0.6 * torch.rand(2, 1, 9, 9, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: transform.apply(v, params), (x,), eps=1e-6, atol=1e-5)


def test_print_photograph_gradient_is_straight_through_jpeg():
    """Everything but JPEG matches finite differences; JPEG passes the gradient on unchanged (BPDA)."""
    pp = T.PrintPhotograph(quality=(70, 70))
    params = pp.sample(2, (1, 9, 9), torch.Generator().manual_seed(0)).double()
    x = (0.2 + 0.6 * torch.rand(2, 1, 9, 9, dtype=torch.float64)).requires_grad_(True)
    w = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    (g,) = torch.autograd.grad((pp.apply(x, params) * w).sum(), x)

    def without_jpeg(v):
        gain, gamma, noise = params[:, :1], params[:, 1], params[:, 3:].view_as(v)
        y = gain.view(2, 1, 1, 1) * v.clamp(1e-4, 1) ** gamma.view(2, 1, 1, 1)
        return T.gaussian_blur(y, torch.full((2,), pp.sigma), 2) + noise

    assert torch.autograd.gradcheck(without_jpeg, (x,), eps=1e-6, atol=1e-5)
    (g_ref,) = torch.autograd.grad((without_jpeg(x) * w).sum(), x)
    assert torch.allclose(g, g_ref)
    # and the forward pass really is JPEG'd: values on the 8-bit grid
    out = pp.apply(x, params).detach()
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-6)


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_matches_pillow(quality):
    from PIL import Image

    X, _ = rr.data.load("digits", "test")
    x = torch.nn.functional.interpolate(X[:6], size=(24, 24), mode="bilinear").clamp(0, 1)
    x = (x * 255).round() / 255
    ours = T.jpeg(x, torch.full((6,), float(quality)))
    theirs = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray((img[0] * 255).round().byte().numpy(), "L").save(buf, "JPEG", quality=quality)
        theirs.append(torch.from_numpy(np.array(Image.open(buf))).float() / 255)
    theirs = torch.stack(theirs)[:, None]
    diff = (ours - theirs).abs() * 255
    loss = (x - theirs).abs() * 255
    # libjpeg's integer DCT differs from ours by rounding only: well below the compression error itself
    assert diff.mean() < 0.3 and diff.mean() < 0.5 * loss.mean() and diff.max() <= 10


def test_rotation_by_90_degrees_is_a_pixel_permutation():
    x = torch.rand(3, 2, 7, 7)
    # positive angles turn the content clockwise on screen (y points down)
    assert torch.allclose(T.viewpoint(90, 1.0)(x), torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(T.viewpoint(-90, 1.0)(x), torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5)


def test_whole_pixel_translation_is_a_shift_with_black_fill():
    x = torch.rand(1, 1, 6, 8)
    d = T.Draw([(T.Translate(3), torch.tensor([[2.0, -1.0]]))])
    expected = torch.zeros_like(x)
    expected[..., :-1, 2:] = x[..., 1:, :-2]
    assert torch.allclose(d(x), expected, atol=1e-6)


def test_scale_two_doubles_distances_from_the_centre():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 3:5, 3:5] = 1.0  # a 2x2 block at the centre: magnified 2x its mass is 4x, still centred
    out = T.Draw([(T.Scale((2, 2)), torch.tensor([2.0]))])(x)
    assert torch.allclose(out.sum(), torch.tensor(16.0), atol=1e-4)
    assert torch.equal(out[..., 3:5, 3:5], x[..., 3:5, 3:5])
    assert torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.flip(-2))
    # bilinear: the pixel centre 1.5 px from the block's middle reads the source 0.75 px away
    assert torch.allclose(out[0, 0, 2, 3], torch.tensor(0.75))


def test_homography_maps_the_four_points():
    src = torch.tensor([[[-1.0, -1], [1, -1], [1, 1], [-1, 1]]], dtype=torch.float64) * 5
    dst = src + torch.tensor([[[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.2, 0.1]]], dtype=torch.float64)
    h = T.homography(src, dst)
    p = torch.cat([src, torch.ones(1, 4, 1, dtype=torch.float64)], -1) @ h.transpose(1, 2)
    assert torch.allclose(p[..., :2] / p[..., 2:], dst, atol=1e-10)


def test_identity_distribution_returns_x_exactly():
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(T.Distribution()(x), x)
    zero = T.Distribution(rotation=(0, 0), scale=(1, 1), translate=0, brightness=0, contrast=(1, 1), blur=0, noise=0)
    assert torch.equal(zero(x), x)


def test_same_seed_same_draws_and_fresh_differs():
    x = torch.rand(4, 1, 28, 28)
    kw = dict(rotation=30, scale=(0.8, 1.2), translate=3, brightness=0.1, blur=1.0, noise=0.02)
    a, b = T.Distribution(**kw, seed=3), T.Distribution(**kw, seed=3)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))
    assert not torch.equal(a.fresh(4)(x), T.Distribution(**kw, seed=3)(x))
    out = a(x)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(rotation=(30, -30)), "inverted"),
        (dict(blur=-1.0), "sigma"),
        (dict(blur=(-0.5, 1.0)), "sigma"),
        (dict(scale=(0.0, 1.2)), "scale"),
        (dict(rotation=float("nan")), "rotation"),
        (dict(translate=float("inf")), "translate"),
        (dict(noise=-0.1), "noise"),
        (dict(rotation="30"), "rotation"),
        (dict(perspective=1.5), "perspective"),
        (dict(seed=-1), "seed"),
        (dict(seed=True), "seed"),
    ],
)
def test_bad_distributions_are_refused(kwargs, words):
    with pytest.raises(rr.UserError, match=words):
        T.Distribution(**kwargs)
