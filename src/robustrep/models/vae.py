"""The variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

Gaussian decoder with scalar observation variance v (MATH.md 2):
    -ELBO(x) = E_q[ ||x - g(z)||^2 / (2v) + (D/2) log(2 pi v) ] + beta * KL(q(z|x) || N(0, I))
estimated with one reparametrised sample z = mu + sqrt(var) * u. Sum over data and latent
dimensions per example, mean over the batch. With likelihood="bernoulli" the decoder mean g(z) is the
pixel's Bernoulli parameter and E_q[-log p(x|z)] = E_q[-sum_i x_i log g_i + (1 - x_i) log(1 - g_i)]
(for binary images such as the shapes data; Higgins et al. 2017 use it on dSprites).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..divergences import bernoulli_nll, gaussian_nll, kl_standard_normal
from ..nn import GaussianHead, build_decoder, build_encoder
from ..nn.blocks import ARCHS
from ..utils import check_images
from .registry import register

LIKELIHOODS = ("gaussian", "bernoulli")


@register("beta-vae", beta=4.0)
@register("vae")
class VAE(nn.Module):
    HPARAM_HELP = {
        "latent_dim": "latent dimensions d",
        "arch": "encoder/decoder: mlp (4x200 ReLU), conv (two stride-2 convolutions) or conv4 (four: the "
        "beta-VAE papers' dSprites network)",
        "hidden": "units per hidden layer",
        "obs_var": "decoder observation variance v",
        "beta": "weight of the KL term (beta-VAE)",
        "likelihood": "decoder likelihood p(x|z): gaussian (variance obs_var) or bernoulli",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 32,
        arch: str = "mlp",
        hidden: int = 200,
        obs_var: float = 1.0,
        beta: float = 1.0,
        likelihood: str = "gaussian",
    ):
        super().__init__()
        # every value checked before any layer is built: a NaN obs_var used to fail only after an epoch
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = validate.width(latent_dim, "latent_dim")
        hidden = validate.width(hidden, "hidden")
        validate.choice(arch, "arch", ARCHS)
        self.obs_var = validate.positive(obs_var, "obs_var", high=1e6)
        self.beta = validate.nonnegative(beta, "beta", high=1e6)
        self.likelihood = validate.choice(likelihood, "likelihood", LIKELIHOODS)
        body, width = build_encoder(arch, self.input_shape, hidden)
        self.encoder = nn.Sequential(body, GaussianHead(width, latent_dim))
        self.decoder = build_decoder(arch, latent_dim, self.input_shape, hidden)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, var) of q(z|x), each [B, latent_dim]. `x` is checked (float32 images
        of the model's shape, finite, in [0, 1]); the training loss calls `self.encoder` directly."""
        check_images(x, "x", shape=self.input_shape)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean g(z) in [0, 1], shaped like the data."""
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """g(mu(x)): the decoder at the posterior mean."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images g(z), z ~ N(0, I) from the prior: the decoder mean, in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device if generator else device)
        return self.decode(z.to(device))

    def sample_latent(self, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return mu + var.sqrt() * torch.randn_like(mu)

    def data_fidelity(self, x: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """E_q[-log p(x|z)] with one reparametrised sample, per example [B]."""
        mean = self.decode(self.sample_latent(mu, var))
        if self.likelihood == "bernoulli":
            return bernoulli_nll(x, mean)
        return gaussian_nll(x, mean, self.obs_var)

    def check_input(self, x: torch.Tensor) -> None:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_input(x)
        mu, var = self.encoder(x)
        recon = self.data_fidelity(x, mu, var)
        kl = kl_standard_normal(mu, var)
        return {"loss": (recon + self.beta * kl).mean(), "recon": recon.mean(), "kl": kl.mean()}
