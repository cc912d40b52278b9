"""The smooth encoder (SE) of Cemgil et al., ICLR 2020 (seed 001, Section 3 and its algorithm box).

For each data point x, a selection mechanism picks a fictive point x' near x, and the encoder is
trained to give x and x' nearby posteriors through the entropy-regularised Wasserstein coupling:

    x'     = Select(x; L, eps)                                   # no gradient to the model
    ma, va = f(x);  mb, vb = f(x')
    E1     = ||x - g(ma + sqrt(va) u)||^2 / (2v) + const          # data fidelity (the VAE's)
    E2     = 1/2 sum_k (ma^2 + va + mb^2 + vb)                    # prior fidelity of both codes
    E      = E1 + E2 + WD_{2,gamma}(N(ma, va), N(mb, vb))         # minimised (MATH.md 3)

Select is L steps of projected gradient ascent on W2^2(q(z|x), q(z|x')) in the l_inf ball of radius
`select_eps` (random start, steps of alpha sign(grad), projection onto the ball and [0, 1]), or a
uniform draw from the ball (`select="random"`, the paper's ablation).
"""
from __future__ import annotations

import torch

from ..balls import LinfBall
from ..divergences import entropic_wasserstein, w2_squared
from .. import validate
from .registry import register
from .vae import VAE

SELECTIONS = ("pgd", "random")


@register("se")
class SmoothEncoder(VAE):
    HPARAM_HELP = {**VAE.HPARAM_HELP, "gamma": "coupling strength of the entropic W2 term",
                   "select": "selection of the fictive point: pgd or random",
                   "select_eps": "l_inf radius of the selection ball",
                   "select_steps": "selection iteration budget L", "select_alpha": "selection step (0: 2.5 eps / L)"}

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 32, arch: str = "mlp", hidden: int = 200,
                 obs_var: float = 1.0, gamma: float = 1.0, select: str = "pgd", select_eps: float = 0.1,
                 select_steps: int = 20, select_alpha: float = 0.0):
        # checked before the VAE's layers are built: a NaN gamma or select_eps used to fail after an epoch
        settings = (validate.positive(gamma, "gamma", high=1e12), validate.choice(select, "select", SELECTIONS),
                    validate.nonnegative(select_eps, "select_eps", high=1.0),
                    validate.nonnegative(select_steps, "select_steps", integer=True, high=10**4))
        select_alpha = validate.nonnegative(select_alpha, "select_alpha", high=1.0)
        super().__init__(input_shape, latent_dim, arch, hidden, obs_var)
        self.gamma, self.select_mode, self.select_eps, self.select_steps = settings
        # step size: 2.5 eps / L (Madry et al.) unless given
        self.select_alpha = select_alpha or 2.5 * self.select_eps / max(self.select_steps, 1)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """The fictive point x' = x + argmax_{||d||_inf <= eps} W2^2(q(z|x), q(z|x + d)) (Section 3.1)."""
        delta = ((x + LinfBall.random_start(x, self.select_eps)).clamp(0, 1) - x).detach()
        if self.select_mode == "random" or self.select_steps == 0:
            return x + delta
        with torch.no_grad():
            mu_a, var_a = self.encoder(x)
        for _ in range(self.select_steps):
            delta.requires_grad_(True)
            with torch.enable_grad():                      # selection works inside no_grad callers too
                mu_b, var_b = self.encoder(x + delta)
                grad, = torch.autograd.grad(w2_squared(mu_a, var_a, mu_b, var_b).sum(), delta)
            with torch.no_grad():
                delta = LinfBall.project(delta + self.select_alpha * grad.sign(), self.select_eps)
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_input(x)
        x_sel = self.select(x)
        mu, var = self.encoder(torch.cat([x, x_sel]))      # one forward pass for both codes
        (mu_a, mu_b), (var_a, var_b) = mu.chunk(2), var.chunk(2)
        e1 = self.data_fidelity(x, mu_a, var_a)
        e2 = 0.5 * (mu_a.pow(2) + var_a + mu_b.pow(2) + var_b).sum(-1)
        wd = entropic_wasserstein(mu_a, var_a, mu_b, var_b, self.gamma)
        return {"loss": (e1 + e2 + wd).mean(), "recon": e1.mean(), "prior": e2.mean(), "wd": wd.mean(),
                "w2_sel": w2_squared(mu_a, var_a, mu_b, var_b).mean().detach()}
