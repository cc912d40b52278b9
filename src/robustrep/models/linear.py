"""PCA as an autoencoder (closed form) and the trained linear autoencoder whose optimum spans the same
subspace (Baldi & Hornik 1989; lecture 12).

PCA: with the data mean m and the top-d eigenvectors W [D, d] of the covariance
    C = 1/N sum_n (x_n - m)(x_n - m)^T,   encode(x) = W^T (x - m),   decode(z) = W z + m,
the mean squared reconstruction error on the fitted data is the sum of the discarded eigenvalues
sum_{k > d} lambda_k (Eckart-Young). Fitted once in `on_fit_start`; no parameter is trained.

Linear AE: encode(x) = A (x - m) + a, decode(z) = B z + b + m, trained on the same squared error
    L = 1/N sum_n ||x_n - m - B (A (x_n - m) + a) - b||^2,
every local minimum of which has B's column space equal to PCA's top-d subspace (Baldi & Hornik 1989).
m is the data mean, set once before training (`on_fit_start`), as PCA's is; it changes no function the
model can represent (A, a, B, b absorb any shift) but the gradient steps: on raw pixels the mean
direction (||m||^2 = 35 on MNIST against a top eigenvalue of 5.1) dominates the curvature and slows the
turn of the trailing directions, whose eigen-gaps are small (0.017 between MNIST's 30th and 31st).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from ..utils import check_images
from .registry import register


def _latent_dim(latent_dim, input_shape) -> int:
    d = validate.width(latent_dim, "latent_dim")
    pixels = math.prod(input_shape)
    if d > pixels:
        raise UserError(f"latent_dim must be at most the {pixels} pixels of an image, got {d}")
    return d


def squared_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """||x - recon||^2 summed over pixels, per example [B] (Hinton & Salakhutdinov 2006's MNIST metric
    is its mean over the test set)."""
    return (x - recon).pow(2).flatten(1).sum(1)


@register("pca")
class PCA(nn.Module):
    """PCA by an eigendecomposition of the covariance in float64; `fit(X)` or `robustrep train pca --epochs 1`."""

    HPARAM_HELP = {"latent_dim": "principal components kept d"}
    monitor = None  # nothing is trained: the closed form is set before the first epoch

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 30):
        super().__init__()
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = _latent_dim(latent_dim, self.input_shape)
        dim = math.prod(self.input_shape)
        # an unfitted PCA is the PCA of a point mass at 0: the canonical basis with zero eigenvalues
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim, self.latent_dim))
        self.register_buffer("eigenvalues", torch.zeros(self.latent_dim))
        self.register_buffer("discarded", torch.zeros(()))  # sum of the eigenvalues not kept

    @torch.no_grad()
    def fit(self, X, batch_size: int = 8192) -> PCA:
        """Set mean, components and eigenvalues from images X [N, C, H, W] (a tensor or a lazy view)."""
        if len(X) < 2:
            raise UserError("PCA needs at least two images to fit")
        check_images(X[:batch_size], "X", shape=self.input_shape)
        n, dim = len(X), math.prod(self.input_shape)
        total = torch.zeros(dim, dtype=torch.float64)
        for i in range(0, n, batch_size):
            total += X[i : i + batch_size].flatten(1).to("cpu", torch.float64).sum(0)
        mean = total / n
        cov = torch.zeros(dim, dim, dtype=torch.float64)
        for i in range(0, n, batch_size):  # centred before the product: no cancellation in float64
            xc = X[i : i + batch_size].flatten(1).to("cpu", torch.float64) - mean
            cov += xc.T @ xc
        evals, evecs = torch.linalg.eigh(cov / n)  # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        d = self.latent_dim
        self.mean.copy_(mean)
        self.components.copy_(evecs[:, :d])
        self.eigenvalues.copy_(evals[:d])
        self.discarded.copy_(evals[d:].sum())
        return self

    def on_fit_start(self, X) -> None:
        self.fit(X)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W^T (x - m), zeros): the code and the variance of a deterministic encoder."""
        check_images(x, "x", shape=self.input_shape)
        z = (x.flatten(1) - self.mean) @ self.components
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """W z + m, shaped like the data. Not clamped to [0, 1]: the projection is what PCA's error measures."""
        return (z @ self.components.T + self.mean).view(len(z), *self.input_shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Probabilistic-PCA-style draws: z ~ N(0, diag(eigenvalues)), decoded and clamped to [0, 1]."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.mean.device)
        return self.decode(z * self.eigenvalues.sqrt()).clamp(0, 1)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)
        return {"loss": squared_error(x, self.reconstruct(x)).mean()}


@register("linear-ae")
class LinearAE(nn.Module):
    """A linear autoencoder trained on the squared error; its decoder spans PCA's subspace (Baldi & Hornik 1989)."""

    HPARAM_HELP = {"latent_dim": "code width d"}

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 30):
        super().__init__()
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = _latent_dim(latent_dim, self.input_shape)
        dim = math.prod(self.input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(dim, self.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, dim), nn.Unflatten(1, self.input_shape))
        self.register_buffer("mean", torch.zeros(self.input_shape))  # the data mean m; 0 until fitted

    @torch.no_grad()
    def on_fit_start(self, X, batch_size: int = 8192) -> None:
        """m = the mean image of X (summed in float64 in batches, as PCA's)."""
        total = torch.zeros(self.input_shape, dtype=torch.float64, device=self.mean.device)
        for i in range(0, len(X), batch_size):
            total += X[i : i + batch_size].to(self.mean.device, torch.float64).sum(0)
        self.mean.copy_(total / len(X))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x, "x", shape=self.input_shape)
        z = self.encoder(x - self.mean)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + self.mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def subspace(self) -> torch.Tensor:
        """An orthonormal basis [D, d] of the decoder's column space (the subspace reconstructions lie in, less b)."""
        return torch.linalg.qr(self.decoder[0].weight.detach().double()).Q

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)
        xc = x - self.mean
        return {"loss": squared_error(xc, self.decoder(self.encoder(xc))).mean()}


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of a [D, d] and b [D, d]
    (Bjorck & Golub 1973: arccos of the singular values of Qa^T Qb)."""
    qa, qb = torch.linalg.qr(a.double()).Q, torch.linalg.qr(b.double()).Q
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1, 1)
    return torch.arccos(s)  # singular values descend, so the angles ascend
