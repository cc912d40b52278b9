"""InfoVAE (Zhao, Song & Ermon 2019): the VAE with a divergence between the aggregate posterior
q(z) = E_pD q(z|x) and the prior, here the MMD (their "MMD-VAE" family). Eq. (7), as a loss:

    L = E_pD E_q(z|x)[-log p(x|z)] + (1 - alpha) E_pD KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD(q(z), p(z))

The MMD is estimated on the batch: the reparametrised codes z_n ~ q(z|x_n) against as many prior draws
(unbiased U-statistic, divergences.mmd_squared). alpha = 1 drops the KL term; alpha = 0, lambda = 1 is
the plain VAE. The Gaussian decoder and encoder are the VAE's (models/vae.py).
"""

from __future__ import annotations

import torch

from .. import validate
from ..divergences import KERNEL_SCALES, gaussian_nll, kl_standard_normal, mmd_squared
from ..errors import UserError
from .registry import register
from .vae import VAE

KERNELS = ("imq", "rbf")


def kernel_settings(kernel: str, bandwidth: float, latent_dim: int) -> tuple[float, tuple[float, ...]]:
    """Base scale C = 2 d bandwidth^2 (Tolstikhin et al. 2018, Sec. 4, sigma_z = bandwidth) and the
    multipliers summed over: the several scales of WAE for imq, one for rbf."""
    return 2.0 * latent_dim * bandwidth**2, (KERNEL_SCALES if kernel == "imq" else (1.0,))


@register("info-vae")
class InfoVAE(VAE):
    HPARAM_HELP = {
        **VAE.HPARAM_HELP,
        "alpha": "InfoVAE alpha: the KL term is weighted 1 - alpha",
        "lam": "InfoVAE lambda: the MMD term is weighted alpha + lambda - 1",
        "kernel": "MMD kernel: imq (several scales) or rbf",
        "bandwidth": "kernel bandwidth sigma: base scale C = 2 d sigma^2",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 32,
        arch: str = "mlp",
        hidden: int = 200,
        obs_var: float = 1.0,
        alpha: float = 0.0,
        lam: float = 1000.0,
        kernel: str = "imq",
        bandwidth: float = 1.0,
    ):
        super().__init__(input_shape=input_shape, latent_dim=latent_dim, arch=arch, hidden=hidden, obs_var=obs_var)
        self.alpha = validate.number(alpha, "alpha", low=-1e6, high=1e6)
        self.lam = validate.number(lam, "lam", low=-1e6, high=1e6)
        if self.alpha + self.lam - 1 < 0 or self.alpha > 1:
            raise UserError(
                f"InfoVAE needs alpha <= 1 and alpha + lam >= 1 (both terms weighted >= 0), "
                f"got alpha {alpha}, lam {lam}"
            )
        self.kernel = validate.choice(kernel, "kernel", KERNELS)
        self.bandwidth = validate.positive(bandwidth, "bandwidth", high=1e6)

    def mmd(self, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        scale, scales = kernel_settings(self.kernel, self.bandwidth, self.latent_dim)
        return mmd_squared(z, prior, self.kernel, scale, scales)

    def loss(self, x, y=None):
        self.check_input(x)
        mu, var = self.encoder(x)
        z = self.sample_latent(mu, var)
        recon = gaussian_nll(x, self.decode(z), self.obs_var).mean()
        kl = kl_standard_normal(mu, var).mean()
        mmd = self.mmd(z, torch.randn_like(z)) if len(x) > 1 else z.new_zeros(())
        loss = recon + (1 - self.alpha) * kl + (self.alpha + self.lam - 1) * mmd
        return {"loss": loss, "recon": recon, "kl": kl, "mmd": mmd}
