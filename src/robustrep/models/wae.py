"""Autoencoders whose aggregate posterior is pushed to the prior p(z) = N(0, I): Wasserstein autoencoders
(Tolstikhin et al. 2018) with an MMD or a GAN penalty, and the adversarial autoencoder (Makhzani et al. 2016).

WAE (Tolstikhin et al. 2018, eq. 4 with c(x, y) = ||x - y||^2 and a deterministic encoder):
    D_WAE = 1/n sum_i ||x_i - G(Q(x_i))||^2 + lambda D_Z(Q_Z, P_Z)
  WAE-MMD (Algorithm 2): D_Z = MMD_k({z_i}, {z~_i}), z_i = Q(x_i), z~_i ~ P_Z; unbiased, IMQ kernel
          summed over scales of C = 2 d sigma_z^2 (Sec. 4); lambda = 10 for MNIST.
  WAE-GAN (Algorithm 1): a discriminator D_gamma on codes ascends
          1/n sum_i [log D(z~_i) + log(1 - D(z_i))] (the paper's factor lambda dropped: Adam is scale-free)
          and the autoencoder descends 1/n sum_i ||x_i - G(z_i)||^2 - lambda log D(z_i); lambda = 1.

AAE (Makhzani et al. 2016, Sec. 2): a Gaussian encoder q(z|x) (reparametrised), the reconstruction
phase on ||x - G(z)||^2 and a regularisation phase in which a discriminator tells prior draws from
codes while the encoder tries to fool it, -log D(z), both on each minibatch (`phases_share_batch`). The
encoder's two updates share one optimiser (a parameter belongs to one optimiser in the trainer), so its
fooling term rides in the reconstruction phase:
    discriminator:  -[log D(z~) + log(1 - D(z))]      autoencoder:  ||x - G(z)||^2 - weight * log D(z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..divergences import mmd_squared
from ..nn import GaussianHead, build_decoder, build_encoder
from ..nn.blocks import ARCHS
from ..utils import check_images
from .info_vae import KERNELS, kernel_settings
from .linear import squared_error
from .registry import register


def code_discriminator(latent_dim: int, hidden: int, layers: int = 4) -> nn.Sequential:
    """An MLP on codes with one logit out (the WAE-GAN paper: 4 layers of 512 ReLU units)."""
    sizes = [latent_dim] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, 1))


class _PriorMatchedAE(nn.Module):
    """Shared parts: checked settings, encoder/decoder from the package's blocks, prior sampling."""

    stochastic = False

    def _build(self, input_shape, latent_dim, arch, hidden):
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = validate.width(latent_dim, "latent_dim")
        hidden = validate.width(hidden, "hidden")
        validate.choice(arch, "arch", ARCHS)
        body, width = build_encoder(arch, self.input_shape, hidden)
        head = GaussianHead(width, self.latent_dim) if self.stochastic else nn.Linear(width, self.latent_dim)
        self.encoder = nn.Sequential(body, head)
        self.decoder = build_decoder(arch, self.latent_dim, self.input_shape, hidden)

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z used in training, the encoder mean)."""
        if self.stochastic:
            mu, var = self.encoder(x)
            return mu + var.sqrt() * torch.randn_like(mu), mu
        z = self.encoder(x)
        return z, z

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of q(z|x); a deterministic encoder has variance 0."""
        check_images(x, "x", shape=self.input_shape)
        if self.stochastic:
            return self.encoder(x)
        z = self.encoder(x)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z), z ~ N(0, I): the decoder on prior draws, in [0, 1]."""
        device = next(self.parameters()).device
        return self.decode(torch.randn(n, self.latent_dim, generator=generator).to(device))

    def check_input(self, x: torch.Tensor) -> None:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)


@register("wae-mmd")
class WAEMMD(_PriorMatchedAE):
    """Wasserstein autoencoder with the MMD penalty (Tolstikhin et al. 2018, Algorithm 2)."""

    HPARAM_HELP = {
        "latent_dim": "code width d (8 for MNIST in the paper)",
        "arch": "mlp (4x200 ReLU), conv (two stride-2 convolutions) or conv4 (four)",
        "hidden": "units per hidden layer",
        "lam": "weight lambda of the MMD penalty",
        "kernel": "imq (summed over 7 scales) or rbf",
        "bandwidth": "sigma_z: base scale C = 2 d sigma_z^2",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 8,
        arch: str = "mlp",
        hidden: int = 200,
        lam: float = 10.0,
        kernel: str = "imq",
        bandwidth: float = 1.0,
    ):
        super().__init__()
        self._build(input_shape, latent_dim, arch, hidden)
        self.lam = validate.nonnegative(lam, "lam", high=1e6)
        self.kernel = validate.choice(kernel, "kernel", KERNELS)
        self.bandwidth = validate.positive(bandwidth, "bandwidth", high=1e6)

    def penalty(self, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        scale, scales = kernel_settings(self.kernel, self.bandwidth, self.latent_dim)
        return mmd_squared(z, prior, self.kernel, scale, scales)

    def loss(self, x, y=None):
        self.check_input(x)
        z = self.encoder(x)
        recon = squared_error(x, self.decoder(z)).mean()
        mmd = self.penalty(z, torch.randn_like(z)) if len(x) > 1 else z.new_zeros(())
        return {"loss": recon + self.lam * mmd, "recon": recon, "mmd": mmd}


class _AdversarialPrior(_PriorMatchedAE):
    """A discriminator on codes in its own phase, before the autoencoder's."""

    monitor = "autoencoder/recon"  # the adversarial terms say little about which epoch is best
    phases = ["discriminator", "autoencoder"]
    phases_share_batch = True  # both updates on each minibatch (Makhzani et al. Sec. 2; Tolstikhin et al. Alg. 1)
    disc_lr = 5e-4

    def optimizers(self):
        from ..training import OptimizerSpec  # training imports runs, which imports the models

        return [
            OptimizerSpec("discriminator", ("discriminator",), lr=self.disc_lr, betas=(0.5, 0.999)),
            OptimizerSpec("autoencoder", ("encoder", "decoder")),
        ]

    def loss(self, x, y=None, phase: str = "autoencoder"):
        self.check_input(x)
        if phase == "discriminator":
            with torch.no_grad():  # the discriminator's step needs no graph through the encoder
                z, _ = self.codes(x)
            # log D(z~) + log(1 - D(z)) ascended: softplus(-l) = -log sigmoid(l), softplus(l) = -log(1 - sigmoid(l));
            # prior draws and codes through the discriminator as one batch (it has no batch norm)
            logits = self.discriminator(torch.cat([torch.randn_like(z), z]))
            disc = F.softplus(-logits[: len(z)]).mean() + F.softplus(logits[len(z) :]).mean()
            return {"loss": disc}
        z, _ = self.codes(x)
        recon = squared_error(x, self.decoder(z)).mean()
        fool = F.softplus(-self.discriminator(z)).mean()  # -log D(z)
        return {"loss": recon + self.weight * fool, "recon": recon, "fool": fool}


@register("wae-gan")
class WAEGAN(_AdversarialPrior):
    """Wasserstein autoencoder with a GAN penalty on codes (Tolstikhin et al. 2018, Algorithm 1)."""

    HPARAM_HELP = {
        "latent_dim": "code width d",
        "arch": "mlp (4x200 ReLU), conv (two stride-2 convolutions) or conv4 (four)",
        "hidden": "units per hidden layer",
        "weight": "lambda: weight of the adversarial penalty",
        "disc_hidden": "discriminator units per layer",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 8,
        arch: str = "mlp",
        hidden: int = 200,
        weight: float = 1.0,
        disc_hidden: int = 512,
    ):
        super().__init__()
        self._build(input_shape, latent_dim, arch, hidden)
        self.weight = validate.nonnegative(weight, "weight", high=1e6)
        self.discriminator = code_discriminator(self.latent_dim, validate.width(disc_hidden, "disc_hidden"))


@register("aae")
class AdversarialAE(_AdversarialPrior):
    """Adversarial autoencoder (Makhzani et al. 2016): a Gaussian encoder and a discriminator on its codes."""

    HPARAM_HELP = WAEGAN.HPARAM_HELP
    stochastic = True

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 8,
        arch: str = "mlp",
        hidden: int = 200,
        weight: float = 1.0,
        disc_hidden: int = 512,
    ):
        super().__init__()
        self._build(input_shape, latent_dim, arch, hidden)
        self.weight = validate.nonnegative(weight, "weight", high=1e6)
        self.discriminator = code_discriminator(self.latent_dim, validate.width(disc_hidden, "disc_hidden"))
