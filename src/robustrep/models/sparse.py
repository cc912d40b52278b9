"""Sparse autoencoders: a penalty on the hidden code (l1 or KL, Ng 2011) and the k-sparse autoencoder
(Makhzani & Frey 2013).

Sparse AE, one hidden layer of logistic units h = sigmoid(W x + b), xhat = sigmoid(V h + c):
    l1:  L = ||x - xhat||^2 + weight * sum_j |h_j|
    kl:  L = ||x - xhat||^2 + weight * sum_j KL(rho || rho_j),   rho_j = mean of h_j over the batch,
         KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r))        (Ng 2011, Sec. 3)

k-sparse AE (Makhzani & Frey 2013, Algorithm 1), tied weights and linear units:
    z = W^T x + b,  h = z on supp_k(z) (its k largest entries) and 0 elsewhere,  xhat = W h + b',
    L = ||x - xhat||^2.
k starts at k_start and falls linearly to k over the first half of the epochs (Sec. 3.2, "scheduling
of the sparsity level"); features for a classifier keep the alpha * k largest entries (Sec. 3.3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from ..utils import check_images
from .linear import squared_error
from .registry import register

PENALTIES = ("kl", "l1")


def bernoulli_kl(rho: float, r: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(rho) || Bernoulli(r)), elementwise; r clamped away from 0 and 1."""
    r = r.clamp(eps, 1 - eps)
    return rho * torch.log(rho / r) + (1 - rho) * torch.log((1 - rho) / (1 - r))


def keep_top_k(z: torch.Tensor, k: int) -> torch.Tensor:
    """z with all but its k largest entries per row set to 0 (ties broken by torch.topk's order)."""
    if k >= z.shape[1]:
        return z
    idx = z.topk(k, dim=1).indices
    return torch.zeros_like(z).scatter(1, idx, z.gather(1, idx))


class _OneLayer(nn.Module):
    def _check(self, input_shape, latent_dim):
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = validate.width(latent_dim, "latent_dim")
        return math.prod(self.input_shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def check_input(self, x: torch.Tensor) -> None:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)


@register("sparse-ae")
class SparseAE(_OneLayer):
    """Sparse autoencoder: one layer of logistic units with an l1 or KL sparsity penalty (Ng 2011)."""

    HPARAM_HELP = {
        "latent_dim": "hidden (code) units",
        "penalty": "kl (target mean activation rho) or l1",
        "weight": "weight of the sparsity penalty",
        "rho": "target mean activation (kl)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 1000,
        penalty: str = "kl",
        weight: float = 1.0,
        rho: float = 0.05,
    ):
        super().__init__()
        dim = self._check(input_shape, latent_dim)
        self.penalty = validate.choice(penalty, "penalty", PENALTIES)
        self.weight = validate.nonnegative(weight, "weight", high=1e6)
        self.rho = validate.probability(rho, "rho", open_low=True, open_high=True)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(dim, self.latent_dim), nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, dim), nn.Sigmoid(), nn.Unflatten(1, self.input_shape))

    def encode(self, x):
        check_images(x, "x", shape=self.input_shape)
        h = self.encoder(x)
        return h, torch.zeros_like(h)

    def decode(self, h):
        return self.decoder(h)

    def sparsity(self, h: torch.Tensor) -> torch.Tensor:
        """The penalty of a batch of codes h [B, m] (a scalar, per example for l1 and per batch for KL)."""
        if self.penalty == "l1":
            return h.abs().sum(1).mean()
        return bernoulli_kl(self.rho, h.mean(0)).sum()

    def loss(self, x, y=None):
        self.check_input(x)
        h = self.encoder(x)
        recon = squared_error(x, self.decoder(h)).mean()
        penalty = self.sparsity(h)
        return {"loss": recon + self.weight * penalty, "recon": recon, "sparsity": penalty}


@register("k-sparse-ae")
class KSparseAE(_OneLayer):
    """k-sparse autoencoder (Makhzani & Frey 2013): keep the k largest hidden units, k annealed from k_start."""

    HPARAM_HELP = {
        "latent_dim": "hidden units (1000 in the paper's MNIST table)",
        "k": "units kept in training (the target sparsity)",
        "k_start": "k at the first epoch, falling linearly to k over the first half of the epochs",
        "alpha": "encoding keeps the alpha * k largest units",
    }

    def __init__(
        self, input_shape=(1, 28, 28), latent_dim: int = 1000, k: int = 25, k_start: int = 100, alpha: float = 3.0
    ):
        super().__init__()
        dim = self._check(input_shape, latent_dim)
        self.k = validate.positive(k, "k", integer=True)
        if self.k > self.latent_dim:
            raise UserError(f"k must be at most the {self.latent_dim} hidden units (latent_dim), got {self.k}")
        self.k_start = validate.positive(k_start, "k_start", integer=True)
        if not self.k <= self.k_start <= self.latent_dim:
            raise UserError(f"k_start must be between k ({self.k}) and latent_dim ({self.latent_dim}), got {k_start}")
        self.alpha = validate.number(alpha, "alpha", low=1, high=1e6)
        self.k_now = self.k_start
        self.flatten = nn.Flatten()
        self.weight = nn.Parameter(torch.randn(dim, self.latent_dim) * 0.01)  # tied: encoder W^T, decoder W
        self.hidden_bias = nn.Parameter(torch.zeros(self.latent_dim))
        self.visible_bias = nn.Parameter(torch.zeros(dim))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        half = max(1, epochs // 2)
        frac = min(1.0, epoch / half)
        self.k_now = round(self.k_start + frac * (self.k - self.k_start))

    def on_fit_start(self, X) -> None:
        self.k_now = self.k_start

    def linear_code(self, x):
        return self.flatten(x) @ self.weight + self.hidden_bias

    def encode(self, x):
        """The alpha * k largest entries of W^T x + b (the paper's features for classification), and zeros."""
        check_images(x, "x", shape=self.input_shape)
        h = keep_top_k(self.linear_code(x), min(self.latent_dim, round(self.alpha * self.k)))
        return h, torch.zeros_like(h)

    def decode(self, h):
        return (h @ self.weight.T + self.visible_bias).view(len(h), *self.input_shape)

    def reconstruct(self, x):
        """W h + b' with h the k largest units, as in training (the alpha * k features are for classifiers:
        the decoder never saw that many units at once)."""
        check_images(x, "x", shape=self.input_shape)
        return self.decode(keep_top_k(self.linear_code(x), self.k))

    def loss(self, x, y=None):
        self.check_input(x)
        h = keep_top_k(self.linear_code(x), self.k_now if self.training else self.k)
        return {"loss": squared_error(x, self.decode(h)).mean()}
