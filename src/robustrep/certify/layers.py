"""Per-layer bound objects: each supported layer knows its interval map, its transpose, and its share
of the Wong & Kolter dual objective (convex_adversarial's `dual_layers.py`, auto_LiRPA's per-op
`interval_propagate` / `bound_backward`, in one small class per layer).

`parse(net, x)` turns an `nn.Sequential` of Linear, Conv2d, ReLU, Flatten (Identity, Dropout and
nested Sequentials are looked through) into a `Chain`: affine *groups* separated by ReLUs,

    x = zhat_1 -> group_1 -> z_2 -> ReLU -> zhat_2 -> group_2 -> z_3 -> ... -> group_{k-1} -> z_k,

which is exactly the form `z_{i+1} = W_i zhat_i + b_i` of Wong & Kolter (2018, eq. 2): a group is a
composition of affine maps (possibly empty: the identity), so consecutive Linear/Conv/Flatten layers
need no special case.

Shapes: a dual variable `nu` for a layer of shape S is a tensor [B, K, *S] (K objectives per example);
B may be 1 where the variable is the same for every example (before the first ReLU is met).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class AffineOp:
    """An affine map z_out = A z_in + b, with A available as a forward and a transposed operator."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval image of the box [lo, hi] (MATH.md 6): centre A c + b, radius |A| r."""
        centre = self._apply((hi + lo) / 2, bias=True)
        radius = self._apply_abs((hi - lo) / 2)
        return centre - radius, centre + radius

    def linear(self, z: torch.Tensor) -> torch.Tensor:
        """A z without the bias, z [B, *in_shape] -> [B, *out_shape]."""
        return self._apply(z, bias=False)

    def transpose(self, nu: torch.Tensor) -> torch.Tensor:
        """nu [B, K, *out_shape] -> A^T nu [B, K, *in_shape] (the dual network's backward step)."""
        raise NotImplementedError

    def bias_dot(self, nu: torch.Tensor) -> torch.Tensor | None:
        """nu^T b for nu [B, K, *out_shape] -> [B, K]; None when the map has no bias."""
        raise NotImplementedError

    def _apply(self, z: torch.Tensor, bias: bool) -> torch.Tensor:
        raise NotImplementedError

    def _apply_abs(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LinearOp(AffineOp):
    def __init__(self, layer: nn.Linear, in_shape, out_shape):
        self.layer, self.in_shape, self.out_shape = layer, tuple(in_shape), tuple(out_shape)

    def _apply(self, z, bias):
        return F.linear(z, self.layer.weight, self.layer.bias if bias else None)

    def _apply_abs(self, z):
        return F.linear(z, self.layer.weight.abs())

    def transpose(self, nu):
        return nu.matmul(self.layer.weight)  # [.., out] @ [out, in] = W^T applied to nu

    def bias_dot(self, nu):
        return None if self.layer.bias is None else nu.matmul(self.layer.bias)


class Conv2dOp(AffineOp):
    def __init__(self, layer: nn.Conv2d, in_shape, out_shape):
        if layer.padding_mode != "zeros":
            raise UserError(
                f"certification supports Conv2d with zero padding only, got padding_mode={layer.padding_mode!r}"
            )
        if isinstance(layer.padding, str) and layer.padding != "valid":
            raise UserError("certification needs explicit integer Conv2d padding (not padding='same')")
        self.layer, self.in_shape, self.out_shape = layer, tuple(in_shape), tuple(out_shape)
        self.padding = (0, 0) if isinstance(layer.padding, str) else layer.padding
        # conv_transpose2d's output size is ambiguous for strides > 1: pin it to the real input size.
        self.output_padding = tuple(
            self.in_shape[1 + d]
            - (
                (self.out_shape[1 + d] - 1) * layer.stride[d]
                - 2 * self.padding[d]
                + layer.dilation[d] * (layer.kernel_size[d] - 1)
                + 1
            )
            for d in range(2)
        )

    def _conv(self, z, weight, bias=None):
        return F.conv2d(z, weight, bias, self.layer.stride, self.padding, self.layer.dilation, self.layer.groups)

    def _apply(self, z, bias):
        return self._conv(z, self.layer.weight, self.layer.bias if bias else None)

    def _apply_abs(self, z):
        return self._conv(z, self.layer.weight.abs())

    def transpose(self, nu):
        lead = nu.shape[:2]
        layer = self.layer
        k = layer.kernel_size[0] * layer.kernel_size[1]
        if layer.groups == 1 and layer.in_channels * k <= layer.out_channels:
            # Few input channels (the first convolution of an image net): W^T nu as one matrix product to
            # the patches and a fold (col2im) is ~2.5x faster on CPU than conv_transpose2d here.
            cols = layer.weight.flatten(1).T.matmul(
                nu.reshape(-1, self.out_shape[0], self.out_shape[1] * self.out_shape[2])
            )
            out = F.fold(cols, self.in_shape[1:], layer.kernel_size, layer.dilation, self.padding, layer.stride)
            return out.reshape(*lead, *self.in_shape)
        out = F.conv_transpose2d(
            nu.reshape(-1, *self.out_shape),
            self.layer.weight,
            None,
            self.layer.stride,
            self.padding,
            self.output_padding,
            self.layer.groups,
            self.layer.dilation,
        )
        return out.reshape(*lead, *self.in_shape)

    def bias_dot(self, nu):
        if self.layer.bias is None:
            return None
        return nu.sum((-2, -1)).matmul(self.layer.bias)


class ReshapeOp(AffineOp):
    """Flatten (or any reshape): A is a permutation-free re-indexing, its own inverse is its transpose."""

    def __init__(self, in_shape, out_shape):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def interval(self, lo, hi):
        return lo.reshape(-1, *self.out_shape), hi.reshape(-1, *self.out_shape)

    def linear(self, z):
        return z.reshape(-1, *self.out_shape)

    def transpose(self, nu):
        return nu.reshape(*nu.shape[:2], *self.in_shape)

    def bias_dot(self, nu):
        return None


@dataclass
class ReLUBounds:
    """Pre-activation bounds [l, u] of one ReLU layer and the linear relaxation they define. Upper bound
    zhat <= d (z - l) with d = u / (u - l) on I = {l < 0 < u} (0 on I- = {u <= 0}, 1 on I+ = {l >= 0});
    lower bound zhat >= a z, with a = d (Wong & Kolter 2018, eq. 10: the dual network's fixed slope) or,
    when `adaptive`, a = 1 if u > -l else 0 on I (CROWN, Zhang et al. 2018: the lower line of smaller area).
    """

    lower: torch.Tensor  # [B, *S]
    upper: torch.Tensor  # [B, *S]
    adaptive: bool = False
    d: torch.Tensor = field(init=False)
    slope: torch.Tensor = field(init=False)  # a: the lower bound's slope
    crossing: torch.Tensor = field(init=False)  # the set I, bool [B, *S]

    def __post_init__(self):
        lo, up = self.lower, self.upper
        self.crossing = (lo < 0) & (up > 0)
        # A safe denominator keeps the gradient finite off I (torch.where differentiates both branches).
        den = torch.where(self.crossing, up - lo, torch.ones_like(up))
        self.d = torch.where(self.crossing, up / den, (lo >= 0).to(up.dtype))
        if self.adaptive:
            self.slope = torch.where(self.crossing, (up > -lo).to(up.dtype), self.d).detach()
        else:
            self.slope = self.d

    def backward(self, nuhat: torch.Tensor):
        """nu_i from nuhat_i, and the ReLU's share of the objective, sum_{j in I} l_j [nu_j]_+ for the
        lower bound and sum_{j in I} l_j [-nu_j]_+ for the upper one (both [B, K]).

        With nu = -c (a lower bound on c^T z), nuhat_j > 0 means a negative coefficient on zhat_j, which
        takes the upper line (slope d, intercept -d l: the l [nu]_+ term); nuhat_j <= 0 takes the lower
        line (slope a, no intercept). With a = d both are nu = D nuhat (Wong & Kolter's dual network); the
        upper-bound term [-nu]_+ is only meaningful then (one walk serves +c and -c)."""
        if self.adaptive:
            nu = torch.where(nuhat > 0, self.d.unsqueeze(1) * nuhat, self.slope.unsqueeze(1) * nuhat)
        else:
            nu = self.d.unsqueeze(1) * nuhat
        l_crossing = torch.where(self.crossing, self.lower, torch.zeros_like(self.lower)).flatten(1).unsqueeze(-1)
        # [nu]_+ = (|nu| + nu) / 2 and [-nu]_+ = (|nu| - nu) / 2: two matrix-vector products, and no
        # [B, K, n]-sized temporaries beyond |nu| (these are the largest tensors of the whole bound).
        flat = nu.flatten(2)
        signed = flat.matmul(l_crossing).squeeze(-1)
        absolute = flat.abs().matmul(l_crossing).squeeze(-1)
        return nu, (absolute + signed) / 2, (absolute - signed) / 2


@dataclass
class Chain:
    """A network as affine groups separated by ReLUs: groups[i] maps zhat_{i+1} to z_{i+2} (0-based)."""

    groups: list[list[AffineOp]]
    input_shape: tuple[int, ...]
    shapes: list[tuple[int, ...]]  # shapes[i]: the output shape of groups[i]

    @property
    def num_relus(self) -> int:
        return len(self.groups) - 1


_TRANSPARENT = (nn.Identity, nn.Dropout)


def _flatten_modules(net: nn.Module):
    for layer in net:
        if isinstance(layer, nn.Sequential):
            yield from _flatten_modules(layer)
        elif not isinstance(layer, _TRANSPARENT):
            yield layer


def as_sequential(net: nn.Module) -> nn.Sequential:
    """The nn.Sequential to certify: `net` itself or, for a model wrapping one, its `.net`."""
    if isinstance(net, nn.Sequential):
        return net
    inner = getattr(net, "net", None)
    if isinstance(inner, nn.Sequential):
        return inner
    raise UserError(
        f"certification needs an nn.Sequential of Linear, Conv2d, ReLU and Flatten layers "
        f"(or a model whose .net is one), got {type(net).__name__}"
    )


def parse(net: nn.Module, x: torch.Tensor) -> Chain:
    """Read the layers of `net` and their shapes (from one forward pass on x[:1])."""
    seq = as_sequential(net)
    groups: list[list[AffineOp]] = [[]]
    shapes: list[tuple[int, ...]] = []
    z = x[:1].detach()
    with torch.no_grad():
        for layer in _flatten_modules(seq):
            in_shape = tuple(z.shape[1:])
            try:
                z = layer(z)
            except RuntimeError as err:
                raise UserError(
                    f"the network does not accept inputs of shape {tuple(x.shape)} (layer {layer}: {err})"
                ) from None
            out_shape = tuple(z.shape[1:])
            if isinstance(layer, nn.ReLU):
                shapes.append(out_shape)
                groups.append([])
            elif isinstance(layer, nn.Linear):
                groups[-1].append(LinearOp(layer, in_shape, out_shape))
            elif isinstance(layer, nn.Conv2d):
                groups[-1].append(Conv2dOp(layer, in_shape, out_shape))
            elif isinstance(layer, (nn.Flatten, nn.Unflatten)):
                groups[-1].append(ReshapeOp(in_shape, out_shape))
            else:
                raise UserError(
                    f"certification does not support layer {type(layer).__name__}: use Linear, Conv2d, ReLU and Flatten"
                )
    shapes.append(tuple(z.shape[1:]))
    return Chain(groups=groups, input_shape=tuple(x.shape[1:]), shapes=shapes)


def group_interval(group: list[AffineOp], lo: torch.Tensor, hi: torch.Tensor):
    for op in group:
        lo, hi = op.interval(lo, hi)
    return lo, hi


def group_backward(group: list[AffineOp], nu: torch.Tensor, acc: torch.Tensor):
    """Walk one affine group backwards: returns (A^T nu, acc + nu^T b) with the bias of every op
    seen at the dual variable of its own output."""
    for op in reversed(group):
        bias = op.bias_dot(nu)
        if bias is not None:
            acc = acc + bias
        nu = op.transpose(nu)
    return nu, acc
