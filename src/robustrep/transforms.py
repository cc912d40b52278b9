"""Differentiable image transformations for physical-world attacks (Athalye et al. 2018, "Synthesizing
robust adversarial examples"; Eykholt et al. 2018, RP2) and the `Distribution` they are drawn from.

A transformation is a small object with `sample(n, shape, generator) -> params` (one row per image)
and `apply(x, params) -> x'`, differentiable in x. Geometric ones (rotation, scale, translation,
perspective) also give their 3x3 matrix in pixel coordinates centred on the image, so that a draw
composes them into ONE homography and resamples the image once (bilinear, black outside, Engstrom
et al.'s canvas); photometric ones (brightness, contrast, blur, noise, print-and-photograph) follow in
that order, and the result is clamped to [0, 1] once, at the end.

    >>> dist = Distribution(rotation=(-30, 30), scale=(0.8, 1.2), translate=3, seed=0)
    >>> draw = dist.sample(len(x), x.shape[1:])       # parameters for len(x) images
    >>> x_t = draw(x)                                 # differentiable in x
    >>> viewpoint(15, 0.9)(x)                         # one fixed transformation for every image

Plain `affine_grid`/`grid_sample` rather than kornia: the warp is the same call inside kornia, and
kornia with kornia_rs adds 31 MB for it (measured in docs/physical.md).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .errors import UserError


def _range(value, name: str, *, symmetric: bool, low=None, low_open: bool = False, high=None) -> tuple[float, float]:
    """(lo, hi) from a number (symmetric: (-v, v); else (v, v)) or a pair; finite, lo <= hi, inside bounds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        pair = (-float(value), float(value)) if symmetric else (float(value), float(value))
        if symmetric and value < 0:
            raise UserError(f"{name} must be >= 0 (a range -{name}..{name}), got {value!r}")
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        pair = (float(value[0]), float(value[1]))
    else:
        raise UserError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    if not all(math.isfinite(v) for v in pair):
        raise UserError(f"{name} must be finite, got {value!r}")
    if pair[0] > pair[1]:
        raise UserError(f"{name} range is inverted ({pair[0]:g} > {pair[1]:g}): give (low, high)")
    if low is not None and (pair[0] <= low if low_open else pair[0] < low):
        raise UserError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and pair[1] > high:
        raise UserError(f"{name} must be <= {high:g}, got {value!r}")
    return pair


def _uniform(n: int, pair, generator) -> torch.Tensor:
    lo, hi = pair
    return lo + (hi - lo) * torch.rand(n, generator=generator)


# ----------------------------------------------------------------------------------------- geometric


class Transform:
    """Base: a family of transformations with a parameter row per image."""

    geometric = False

    def sample(self, n: int, shape, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Geometric transforms apply through their matrix (a warp of their own)."""
        return warp(x, self.matrix(params.to(x.device), x.shape[-2:]))

    def is_identity(self, params: torch.Tensor) -> bool:
        raise NotImplementedError

    def describe(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3).expand(n, 3, 3).clone()


class Rotation(Transform):
    """Rotation by an angle in degrees, uniform in `degrees` (low, high), about the image centre."""

    geometric = True

    def __init__(self, degrees=(-30.0, 30.0)):
        self.degrees = _range(degrees, "rotation", symmetric=True)

    def sample(self, n, shape, generator):
        return _uniform(n, self.degrees, generator)

    def matrix(self, params, size):
        a = params.double() * math.pi / 180
        m = _eye(len(a)).double().to(a.device)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
        return m

    def is_identity(self, params):
        return bool((params == 0).all())


class Scale(Transform):
    """Isotropic scaling about the centre by a factor uniform in `factors` (low, high), > 0."""

    geometric = True

    def __init__(self, factors=(0.8, 1.2)):
        self.factors = _range(factors, "scale", symmetric=False, low=0, low_open=True)

    def sample(self, n, shape, generator):
        return _uniform(n, self.factors, generator)

    def matrix(self, params, size):
        m = _eye(len(params)).double().to(params.device)
        m[:, 0, 0] = m[:, 1, 1] = params.double()
        return m

    def is_identity(self, params):
        return bool((params == 1).all())


class Translate(Transform):
    """Shift by (dx, dy) pixels, each uniform in `pixels` (a number t: -t..t)."""

    geometric = True

    def __init__(self, pixels=3.0):
        self.pixels = _range(pixels, "translate", symmetric=True)

    def sample(self, n, shape, generator):
        return torch.stack([_uniform(n, self.pixels, generator), _uniform(n, self.pixels, generator)], 1)

    def matrix(self, params, size):
        m = _eye(len(params)).double().to(params.device)
        m[:, 0, 2], m[:, 1, 2] = params[:, 0].double(), params[:, 1].double()
        return m

    def is_identity(self, params):
        return bool((params == 0).all())


class Perspective(Transform):
    """A random homography: each corner moves by up to `distortion` of the half-width/height in x and
    y (uniformly), the view of a plane seen slightly from the side (kornia's RandomPerspective)."""

    geometric = True

    def __init__(self, distortion=0.2):
        self.distortion = _range(distortion, "perspective", symmetric=False, low=0, high=0.99)[1]

    def sample(self, n, shape, generator):
        return (2 * torch.rand(n, 4, 2, generator=generator) - 1) * self.distortion

    def matrix(self, params, size):
        h, w = size
        half = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=params.device)
        src = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64, device=params.device) * half
        dst = src + params.double() * half
        return homography(src.expand_as(dst), dst)

    def is_identity(self, params):
        return bool((params == 0).all())


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3x3 matrices [n, 3, 3] mapping 4 points src [n, 4, 2] onto dst [n, 4, 2] (h33 = 1)."""
    n = len(src)
    a = src.new_zeros(n, 8, 8)
    b = dst.reshape(n, 8)
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    a[:, 0::2] = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    a[:, 1::2] = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=h.device)], 1).view(n, 3, 3)


def warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample x [n, C, H, W] so that the content moves by `matrix` [n, 3, 3] (pixel coordinates,
    origin at the image centre, y down): output(p) = x(matrix^-1 p), bilinear, zeros outside."""
    n, _, h, w = x.shape
    # grid_sample's normalised coordinates are pixel coordinates divided by the half-size
    norm = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64, device=matrix.device))
    inv = norm @ torch.linalg.inv(matrix.double()) @ torch.linalg.inv(norm)
    if bool((inv[:, 2, :2] == 0).all()):  # affine: affine_grid's fast path
        grid = F.affine_grid((inv[:, :2] / inv[:, 2:, 2:]).to(x.dtype), [n, 1, h, w], align_corners=False)
    else:
        ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pix = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, h * w, 3)
        src = pix @ inv.to(x.dtype).transpose(1, 2)
        grid = (src[..., :2] / src[..., 2:3]).view(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------- photometric


class Brightness(Transform):
    """x + b, b uniform in `delta` (a number d: -d..d)."""

    def __init__(self, delta=0.1):
        self.delta = _range(delta, "brightness", symmetric=True)

    def sample(self, n, shape, generator):
        return _uniform(n, self.delta, generator)

    def apply(self, x, params):
        return x + params.to(x).view(-1, *[1] * (x.dim() - 1))

    def is_identity(self, params):
        return bool((params == 0).all())


class Contrast(Transform):
    """(x - m) c + m about each image's mean m, c uniform in `factors` (torchvision's adjust_contrast
    blends with the mean grey the same way)."""

    def __init__(self, factors=(0.8, 1.2)):
        self.factors = _range(factors, "contrast", symmetric=False, low=0)

    def sample(self, n, shape, generator):
        return _uniform(n, self.factors, generator)

    def apply(self, x, params):
        c = params.to(x).view(-1, *[1] * (x.dim() - 1))
        m = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return (x - m) * c + m

    def is_identity(self, params):
        return bool((params == 1).all())


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image ([n]), kernel 2 radius + 1, edges replicated."""
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x).clamp_min(1e-3).view(-1, 1)  # sigma 0 -> a delta kernel
    k = torch.exp(-(t**2) / (2 * s**2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n C, 2r+1]
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


class GaussianBlur(Transform):
    """Gaussian blur, sigma (pixels) uniform in `sigma` (a number s: 0..s)."""

    def __init__(self, sigma=1.0):
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            if sigma < 0:
                raise UserError(f"blur sigma must be >= 0, got {sigma!r}")
            sigma = (0.0, sigma)
        self.sigma = _range(sigma, "blur sigma", symmetric=False, low=0)

    def sample(self, n, shape, generator):
        return _uniform(n, self.sigma, generator)

    def apply(self, x, params):
        return gaussian_blur(x, params, max(1, math.ceil(3 * self.sigma[1])))

    def is_identity(self, params):
        return bool((params == 0).all())


class GaussianNoise(Transform):
    """x + std * N(0, 1) per pixel; the noise itself is the drawn parameter, so a draw is replayable."""

    def __init__(self, std=0.02):
        self.std = _range(std, "noise std", symmetric=False, low=0)[1]

    def sample(self, n, shape, generator):
        return self.std * torch.randn(n, *shape, generator=generator)

    def apply(self, x, params):
        return x + params.to(x)

    def is_identity(self, params):
        return self.std == 0


# The IJG tables (JPEG standard, Annex K) and its quality scaling.
_LUMA = [
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
]
_CHROMA = [
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
] + [99] * 32


def _quant_table(base: list[int], quality: torch.Tensor) -> torch.Tensor:
    q = quality.double().clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    t = torch.tensor(base, dtype=torch.float64, device=q.device).view(1, 8, 8)
    return ((t * scale.view(-1, 1, 1) + 50) / 100).floor().clamp(1, 255)


def _dct_matrix(device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64, device=device)
    d = torch.cos((2 * k.view(1, 8) + 1) * k.view(8, 1) * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG compression and decompression of x [n, C, H, W] (C = 1 or 3; 3 goes through JFIF
    YCbCr, no chroma subsampling) at one quality in 1..100 per image: 8x8 DCT, rounding to the IJG
    tables, inverse DCT, rounding to 8 bits. Not differentiable (rounding); see `PrintPhotograph`."""
    n, c, h, w = x.shape
    y = x.double() * 255
    if c == 3:
        r, g, b = y.unbind(1)
        y = torch.stack(
            [
                0.299 * r + 0.587 * g + 0.114 * b,
                128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
            ],
            1,
        )
    elif c != 1:
        raise UserError(f"jpeg needs 1 or 3 channels, got {c}")
    ph, pw = (-h) % 8, (-w) % 8
    y = F.pad(y - 128, (0, pw, 0, ph), mode="replicate")
    hh, ww = y.shape[-2:]
    blocks = y.view(n, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # [n, c, bh, bw, 8, 8]
    d = _dct_matrix(x.device)
    coef = d @ blocks @ d.T
    tables = [_quant_table(_LUMA if i == 0 else _CHROMA, quality.to(x.device)) for i in range(c)]
    q = torch.stack(tables, 1).view(n, c, 1, 1, 8, 8)
    blocks = d.T @ (torch.round(coef / q) * q) @ d
    y = blocks.transpose(3, 4).reshape(n, c, hh, ww)[..., :h, :w] + 128
    if c == 3:
        yy, cb, cr = y.unbind(1)
        y = torch.stack(
            [yy + 1.402 * (cr - 128), yy - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), yy + 1.772 * (cb - 128)], 1
        )
    return (torch.round(y.clamp(0, 255)) / 255).to(x.dtype)


class PrintPhotograph(Transform):
    """A printer and a camera (Athalye et al. 2018, section 4.1; Eykholt et al.'s fabrication error):
    a per-channel gain and a gamma, a Gaussian blur, Gaussian noise and JPEG compression. JPEG's
    rounding has no useful gradient, so it passes the gradient straight through (BPDA, Athalye,
    Carlini & Wagner 2018): forward jpeg(x), backward the identity."""

    def __init__(self, gain=(0.9, 1.1), gamma=(0.8, 1.25), sigma=0.5, noise=0.02, quality=(50, 95)):
        self.gain = _range(gain, "print gain", symmetric=False, low=0, low_open=True)
        self.gamma = _range(gamma, "print gamma", symmetric=False, low=0, low_open=True)
        self.sigma = _range(sigma, "print blur sigma", symmetric=False, low=0)[1]
        self.noise = _range(noise, "print noise", symmetric=False, low=0)[1]
        self.quality = _range(quality, "jpeg quality", symmetric=False, low=1, high=100)

    def sample(self, n, shape, generator):
        c = shape[0]
        gain = self.gain[0] + (self.gain[1] - self.gain[0]) * torch.rand(n, c, generator=generator)
        gamma = _uniform(n, self.gamma, generator).view(n, 1)
        quality = _uniform(n, self.quality, generator).round().view(n, 1)
        noise = self.noise * torch.randn(n, math.prod(shape), generator=generator)
        return torch.cat([gain, gamma, quality, noise], 1)

    def apply(self, x, params):
        n, c = x.shape[:2]
        params = params.to(x)
        gain, gamma, quality = params[:, :c], params[:, c], params[:, c + 1]
        noise = params[:, c + 2 :].view_as(x)
        # x^gamma has an infinite slope at 0 for gamma < 1: a small floor keeps the gradient finite
        y = gain.view(n, c, 1, 1) * x.clamp(1e-4, 1.0) ** gamma.view(n, 1, 1, 1)
        radius = max(1, math.ceil(3 * self.sigma))
        y = gaussian_blur(y, torch.full((n,), self.sigma), radius) if self.sigma > 0 else y
        y = y + noise
        return y + (jpeg(y.clamp(0, 1), quality) - y).detach()

    def is_identity(self, params):
        return False


# --------------------------------------------------------------------------------------------- draws


class Draw:
    """Parameters for n images: `draw(x)` applies them (geometry as one warp, then the rest, then a
    clamp to [0, 1]). Differentiable in x."""

    def __init__(self, steps: list[tuple[Transform, torch.Tensor]]):
        self.steps = steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        geo = [(t, p) for t, p in self.steps if t.geometric and not t.is_identity(p)]
        rest = [(t, p) for t, p in self.steps if not t.geometric and not t.is_identity(p)]
        if geo:
            m = None
            for t, p in geo:  # listed order: scale, rotation, perspective, translation (translation last)
                mt = t.matrix(p.to(x.device), x.shape[-2:])
                m = mt if m is None else mt @ m
            x = warp(x, m)
        for t, p in rest:
            x = t.apply(x, p)
        return x.clamp(0.0, 1.0) if geo or rest else x


ORDER = ("scale", "rotation", "perspective", "translate", "brightness", "contrast", "blur", "noise", "print_photo")


class Distribution:
    """A distribution of transformations, seeded: every `sample` continues one private generator, so
    the same seed gives the same sequence of draws, and `fresh(seed)` is an independent copy for
    evaluation (Athalye et al. judge on draws the attack never saw).

    Arguments (all optional; none at all is the identity): rotation (degrees, a number a for -a..a or
    a pair), scale (a pair of factors), translate (pixels), perspective (corner shift, a share of the
    half-size), brightness (additive), contrast (a pair of factors), blur (sigma in pixels: 0..s or a
    pair), noise (std), print_photo (True or a `PrintPhotograph`), extra (more `Transform` objects,
    applied after the rest)."""

    def __init__(
        self,
        rotation=None,
        scale=None,
        translate=None,
        perspective=None,
        brightness=None,
        contrast=None,
        blur=None,
        noise=None,
        print_photo=None,
        extra=(),
        seed: int = 0,
    ):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise UserError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.settings = {}
        self.transforms: list[Transform] = []
        makers = {
            "scale": Scale,
            "rotation": Rotation,
            "perspective": Perspective,
            "translate": Translate,
            "brightness": Brightness,
            "contrast": Contrast,
            "blur": GaussianBlur,
            "noise": GaussianNoise,
        }
        given = dict(
            rotation=rotation,
            scale=scale,
            translate=translate,
            perspective=perspective,
            brightness=brightness,
            contrast=contrast,
            blur=blur,
            noise=noise,
        )
        for name in ORDER[:-1]:
            if given[name] is not None:
                t = makers[name](given[name])
                self.transforms.append(t)
                self.settings[name] = next(iter(t.describe().values()))
        if print_photo is not None and print_photo is not False:
            t = PrintPhotograph() if print_photo is True else print_photo
            if not isinstance(t, PrintPhotograph):
                raise UserError(f"print_photo must be True or a PrintPhotograph, got {print_photo!r}")
            self.transforms.append(t)
            self.settings["print_photo"] = t.describe()
        for t in extra:
            if not isinstance(t, Transform):
                raise UserError(f"extra transformations must be Transform objects, got {type(t).__name__}")
            self.transforms.append(t)
            self.settings.setdefault("extra", []).append({type(t).__name__: t.describe()})
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._kwargs = {**given, "print_photo": print_photo, "extra": tuple(extra)}

    @property
    def is_identity(self) -> bool:
        return not self.transforms

    def sample(self, n: int, shape) -> Draw:
        """Parameters for n images of shape [C, H, W]."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise UserError(f"transformations need images [C, H, W], got shape {shape}")
        return Draw([(t, t.sample(n, shape, self.generator)) for t in self.transforms])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One fresh draw per image of x [n, C, H, W]."""
        return self.sample(len(x), x.shape[1:])(x)

    def fresh(self, seed: int) -> Distribution:
        """The same distribution with its own generator seeded `seed`."""
        return Distribution(**self._kwargs, seed=seed)

    def describe(self) -> dict:
        return dict(self.settings)

    def __repr__(self) -> str:
        return f"Distribution({', '.join(f'{k}={v}' for k, v in self.settings.items())}, seed={self.seed})"


# The default physical-world distribution (issue 14, seed 003's setting at MNIST's scale): used by
# `robustrep reproduce physical` and the attack table's eot-pgd and rp2.
PHYSICAL = dict(
    rotation=(-30.0, 30.0),
    scale=(0.8, 1.2),
    translate=3.0,
    brightness=0.1,
    contrast=(0.8, 1.2),
    blur=(0.0, 1.0),
    noise=0.02,
)


def physical(seed: int = 0) -> Distribution:
    """`Distribution(**PHYSICAL, seed=seed)`: rotation +-30 deg, scale 0.8-1.2, translation +-3 px,
    brightness +-0.1, contrast 0.8-1.2, blur sigma 0-1, noise std 0.02."""
    return Distribution(**PHYSICAL, seed=seed)


def viewpoint(angle: float, scale: float = 1.0) -> Draw:
    """A fixed view (seed 003's turtle and stop sign): every image rotated by `angle` degrees and scaled
    by `scale`. Returns a callable; its batch size is taken from the input."""
    return _Viewpoint(angle, scale)


class _Viewpoint:
    def __init__(self, angle, scale):
        self.angle = _range(angle, "viewpoint angle", symmetric=False)[0]
        self.scale = _range(scale, "viewpoint scale", symmetric=False, low=0, low_open=True)[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        return Draw(
            [
                (Scale(self.scale), torch.full((n,), self.scale)),
                (Rotation((self.angle, self.angle)), torch.full((n,), self.angle)),
            ]
        )(x)
