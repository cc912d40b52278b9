"""The discrete toy of Cemgil et al. 2020, Section 2.2 (MATH.md 3): why a VAE's encoder is fragile.

X in {0..Nx-1}, Z in {0..Nz-1}, a uniform prior p(Z) and von-Mises-like tables (omega(u) = cos(2 pi u))

    p(X = i | Z = j) ∝ exp(omega(m_j - i / Nx) / v)          (decoder: a mode m_j per latent, spread v)
    q(Z = j | X = i) ∝ exp(omega(mu_i - j / Nz) / sigma_i)   (encoder: a mode mu_i and spread sigma_i per input)

fitted on counts s ~ Multinomial(N, pi) by maximising the batch ELBO (the paper's eq. 2)

    B = sum_i s_i sum_j q(j|i) log( p(i|j) p(j) / q(j|i) ).

Row i of q enters B only through s_i, so where s_i = 0 its parameters get no gradient and stay where
they were initialised: neighbouring inputs can map to distant posteriors. The smooth encoder adds, for
each observed i, a selected neighbour i' within `radius` (the one of largest divergence: adversarial
selection) and the coupling -gamma/2 D(q(.|i), q(.|i')), with D the squared 2-Wasserstein distance of the
Gaussian analogue on the circle, d(mu_i, mu_i')^2 + (sqrt(sigma_i) - sqrt(sigma_i'))^2 (MATH.md 3:
W2^2 reduces to the squared distance of the means for equal spreads), d the circular distance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import validate


def circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance on the unit circle [0, 1): min(|a - b| mod 1, 1 - |a - b| mod 1)."""
    d = torch.remainder(a - b, 1.0)
    return torch.minimum(d, 1.0 - d)


def von_mises_target(nx: int, modes=(0.25, 0.7), spread: float = 0.05) -> torch.Tensor:
    """pi(X): a mixture of two von-Mises-like bumps on the circle of nx points."""
    i = torch.arange(nx, dtype=torch.float64) / nx
    p = sum(torch.exp(torch.cos(2 * math.pi * (i - m)) / spread) for m in modes)
    return p / p.sum()


class DiscreteVAE(nn.Module):
    """The tabular encoder/decoder pair; `gamma` > 0 makes it a smooth encoder (0: the plain VAE)."""

    def __init__(self, nx: int = 60, nz: int = 60, gamma: float = 0.0, radius: int = 1, seed: int = 0):
        super().__init__()
        self.nx = validate.number(nx, "nx", low=2, high=10**5, integer=True)
        self.nz = validate.number(nz, "nz", low=2, high=10**5, integer=True)
        self.gamma = validate.nonnegative(gamma, "gamma", high=1e8)
        self.radius = validate.positive(radius, "radius", integer=True, high=self.nx // 2)
        g = torch.Generator().manual_seed(validate.seed(seed, "seed"))
        # random initial encoder (modes anywhere, spreads from 0.05 to 0.5); decoder modes spread evenly
        self.mu = nn.Parameter(torch.rand(self.nx, generator=g, dtype=torch.float64))
        self.log_sigma = nn.Parameter(torch.log(0.05 + 0.45 * torch.rand(self.nx, generator=g, dtype=torch.float64)))
        self.m = nn.Parameter(torch.rand(self.nz, generator=g, dtype=torch.float64))
        self.log_v = nn.Parameter(torch.tensor(math.log(0.3), dtype=torch.float64))

    def encoder(self) -> torch.Tensor:
        """q(Z = j | X = i) as an [nx, nz] table (rows sum to 1)."""
        j = torch.arange(self.nz, dtype=torch.float64) / self.nz
        logits = torch.cos(2 * math.pi * (self.mu[:, None] - j[None])) / self.log_sigma.exp()[:, None]
        return torch.softmax(logits, 1)

    def decoder(self) -> torch.Tensor:
        """p(X = i | Z = j) as an [nx, nz] table (columns sum to 1)."""
        i = torch.arange(self.nx, dtype=torch.float64) / self.nx
        logits = torch.cos(2 * math.pi * (self.m[None] - i[:, None])) / self.log_v.exp()
        return torch.softmax(logits, 0)

    def marginal(self) -> torch.Tensor:
        """The model p(X = i) = sum_j p(i|j) p(j) with p(j) = 1/nz."""
        return self.decoder().mean(1)

    def batch_elbo(self, s: torch.Tensor) -> torch.Tensor:
        """sum_i s_i sum_j q(j|i) log(p(i|j) p(j) / q(j|i)) (eq. 2)."""
        q, p = self.encoder(), self.decoder()
        log_q = torch.log(q.clamp_min(1e-300))
        per_row = (q * (torch.log(p.clamp_min(1e-300)) - math.log(self.nz) - log_q)).sum(1)
        return (s * per_row).sum()

    def divergence(self, i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """d(mu_i, mu_k)^2 + (sqrt(sigma_i) - sqrt(sigma_k))^2 for index tensors i, k."""
        sa, sb = (0.5 * self.log_sigma[i]).exp(), (0.5 * self.log_sigma[k]).exp()
        return circular_distance(self.mu[i], self.mu[k]).pow(2) + (sa - sb).pow(2)

    def coupling(self, s: torch.Tensor) -> torch.Tensor:
        """sum_i s_i D(q(.|i), q(.|i')) with i' the neighbour within `radius` of largest D (selection)."""
        seen = torch.nonzero(s > 0).flatten()
        offsets = torch.tensor([o for o in range(-self.radius, self.radius + 1) if o != 0])
        neighbours = torch.remainder(seen[:, None] + offsets[None], self.nx)
        d = self.divergence(seen[:, None].expand_as(neighbours), neighbours)
        return (s[seen] * d.max(1).values).sum()

    def objective(self, s: torch.Tensor) -> torch.Tensor:
        """What training maximises: the batch ELBO, minus gamma/2 times the coupling for a smooth encoder."""
        value = self.batch_elbo(s)
        return value - 0.5 * self.gamma * self.coupling(s) if self.gamma > 0 else value

    def fit(self, s: torch.Tensor, steps: int = 2000, lr: float = 0.01) -> list[float]:
        """Adam on -objective / N, full batch; returns the objective per 100 steps."""
        validate.positive(steps, "steps", integer=True, high=10**7)
        validate.positive(lr, "lr", high=10.0)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        n = float(s.sum())
        trace = []
        for t in range(steps):
            opt.zero_grad()
            loss = -self.objective(s) / n
            loss.backward()
            opt.step()
            if t % 100 == 0:
                trace.append(-float(loss.detach()))
        return trace

    @torch.no_grad()
    def roughness(self, rows: torch.Tensor | None = None) -> float:
        """Mean circular jump |mu_i - mu_{i+1}| of the encoder mode between neighbouring inputs (all i, or
        those where `rows` is True); a smooth encoder moves little from one input to the next."""
        jumps = circular_distance(self.mu, torch.roll(self.mu, -1))
        return float(jumps.mean() if rows is None else jumps[rows].mean())
