"""The deep autoencoder (Hinton & Salakhutdinov 2006) and the denoising autoencoder (Vincent et al. 2008)
with the score it learns (Alain & Bengio 2014; seed 004).

AE: 784-1000-500-250-d with logistic hidden units, linear code units and a logistic output, trained
without RBM pre-training on the paper's fine-tuning objective for MNIST, the cross-entropy
    L = -1/N sum_n sum_i [x_ni log xhat_ni + (1 - x_ni) log(1 - xhat_ni)],   xhat = g(f(x))
(or the squared error ||x - xhat||^2 with loss=mse). Hinton's reported metric is the squared error.

DAE: corrupt x~ ~ q(x~|x) (Gaussian noise of std sigma, or masking: each pixel set to 0 with probability
nu), reconstruct the clean x (Vincent et al. 2008, eq. 6 with the squared error):
    L = 1/N sum_n E_q ||x_n - r(x~_n)||^2,   r = g o f.
For small Gaussian sigma, r(x) - x ~ sigma^2 grad log p(x) (Alain & Bengio 2014, Theorem 1), so
    score(x) = (r(x) - x) / sigma^2
drives Langevin dynamics x <- x + eps score(x) + sqrt(2 eps) u (MATH.md 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from ..nn import build_decoder, build_encoder
from ..utils import check_images
from .linear import squared_error
from .registry import register

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "elu": nn.ELU}
LOSSES = ("bce", "mse")


def parse_widths(text: str, name: str = "hidden") -> list[int]:
    """'1000,500,250' -> [1000, 500, 250]; every width checked."""
    if not isinstance(text, str):
        raise UserError(f"{name} must be comma-separated layer widths such as '1000,500,250', got {text!r}")
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated layer widths such as '1000,500,250', got {text!r}") from None
    return [validate.width(w, name) for w in widths]


def deterministic_codec(arch: str, input_shape, widths: list[int], activation: str, latent_dim: int):
    """(encoder x -> z with linear code units, decoder z -> xhat in [0, 1] shaped like the data).
    mlp: the given widths and activation, mirrored; conv: the package's conv blocks with widths[-1] units."""
    validate.choice(arch, "arch", ("mlp", "conv"))
    validate.choice(activation, "activation", tuple(ACTIVATIONS))
    c, h, w = input_shape
    if arch == "conv":
        body, width = build_encoder("conv", input_shape, widths[-1] if widths else 200)
        return nn.Sequential(body, nn.Linear(width, latent_dim)), build_decoder(
            "conv", latent_dim, input_shape, widths[-1] if widths else 200
        )
    act = ACTIVATIONS[activation]

    def stack(sizes):
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), act()]
        return layers

    dim = c * h * w
    encoder = nn.Sequential(nn.Flatten(), *stack([dim, *widths]), nn.Linear(widths[-1] if widths else dim, latent_dim))
    back = widths[::-1]
    decoder = nn.Sequential(
        *stack([latent_dim, *back]),
        nn.Linear(back[-1] if back else latent_dim, dim),
        nn.Sigmoid(),
        nn.Unflatten(1, (c, h, w)),
    )
    return encoder, decoder


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, kind: str) -> torch.Tensor:
    """Per example [B]: the cross-entropy of Hinton & Salakhutdinov 2006 or the squared error."""
    if kind == "bce":
        return F.binary_cross_entropy(recon, x, reduction="none").flatten(1).sum(1)
    return squared_error(x, recon)


class DeterministicAutoencoder(nn.Module):
    """Shared parts of the deterministic autoencoders: checked input, encode/decode/reconstruct."""

    def _build(self, input_shape, latent_dim, hidden, activation, arch, loss_kind):
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.latent_dim = validate.width(latent_dim, "latent_dim")  # overcomplete codes are fine (a DAE's often are)
        self.loss_kind = validate.choice(loss_kind, "loss", LOSSES)
        widths = parse_widths(hidden)
        self.encoder, self.decoder = deterministic_codec(arch, self.input_shape, widths, activation, self.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, zeros): a deterministic encoder is a posterior of variance 0 (ProbedEncoder reads [0])."""
        check_images(x, "x", shape=self.input_shape)
        z = self.encoder(x)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def check_input(self, x: torch.Tensor) -> None:
        check_images(x, "x", shape=self.input_shape, allow_empty=False)


@register("ae")
class Autoencoder(DeterministicAutoencoder):
    """Deep autoencoder (Hinton & Salakhutdinov 2006): 784-1000-500-250-d, logistic units, linear code."""

    HPARAM_HELP = {
        "latent_dim": "code width d (30 or 2 in the paper)",
        "hidden": "encoder layer widths, mirrored in the decoder",
        "activation": "hidden units: sigmoid (the paper's logistic units), relu or elu",
        "arch": "mlp (the widths above) or conv (two stride-2 convolutions; H, W divisible by 4)",
        "loss": "bce (the paper's cross-entropy) or mse (squared error)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 30,
        hidden: str = "1000,500,250",
        activation: str = "sigmoid",
        arch: str = "mlp",
        loss: str = "bce",
    ):
        super().__init__()
        self._build(input_shape, latent_dim, hidden, activation, arch, loss)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_input(x)
        recon = self.decoder(self.encoder(x))
        loss = reconstruction_loss(x, recon, self.loss_kind)
        return {"loss": loss.mean(), "squared_error": squared_error(x, recon).detach().mean()}


NOISES = ("gaussian", "masking")


@register("dae")
class DenoisingAutoencoder(DeterministicAutoencoder):
    """Denoising autoencoder (Vincent et al. 2008); score (r(x) - x) / sigma^2 for Langevin sampling."""

    HPARAM_HELP = {
        **Autoencoder.HPARAM_HELP,
        "noise": "corruption: gaussian (std sigma) or masking (drop prob. sigma)",
        "sigma": "Gaussian noise std, or the masking probability",
        "loss": "mse (default) or bce",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 64,
        hidden: str = "1000,500,250",
        activation: str = "relu",
        arch: str = "mlp",
        loss: str = "mse",
        noise: str = "gaussian",
        sigma: float = 0.3,
    ):
        super().__init__()
        self._build(input_shape, latent_dim, hidden, activation, arch, loss)
        self.noise = validate.choice(noise, "noise", NOISES)
        if noise == "masking":
            self.sigma = validate.probability(sigma, "sigma", open_high=True)
        else:
            self.sigma = validate.positive(sigma, "sigma", high=1e3)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x~ ~ q(x~|x). Gaussian noise is not clamped: the score identity needs x + sigma u exactly."""
        if self.noise == "gaussian":
            return x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device)
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.sigma
        return x * keep

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(r(x) - x) / sigma^2 ~ grad_x log p(x) (Alain & Bengio 2014), for Gaussian corruption only.
        Takes any real x of the data's shape (Langevin chains leave [0, 1])."""
        if self.noise != "gaussian":
            raise UserError("the DAE score (r(x) - x) / sigma^2 needs Gaussian corruption: train with --noise gaussian")
        return (self.decoder(self.encoder(x)) - x) / self.sigma**2

    def langevin_score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """score(x, sigma) for rr.sampling.annealed_langevin: this DAE knows one noise level, its own."""
        if abs(float(sigma) - self.sigma) > 1e-6 * self.sigma:
            raise UserError(f"this DAE was trained at noise sigma {self.sigma}; it has no score at sigma {sigma}")
        return self.score(x)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, steps: int = 200, eps: float | None = None
    ) -> torch.Tensor:
        """Langevin dynamics on the DAE's score from uniform noise (rr.sampling.annealed_langevin with the
        one level sigma; step eps, default sigma^2 / 20), ending with Tweedie's step x + sigma^2 score(x) =
        r(x), clamped to [0, 1]. Gaussian corruption only."""
        from ..sampling import annealed_langevin

        if self.noise != "gaussian":
            raise UserError(
                "sampling a DAE by Langevin dynamics needs Gaussian corruption: train with --noise gaussian"
            )
        device = next(self.parameters()).device
        x0 = torch.rand(n, *self.input_shape, generator=generator).to(device)
        gen = generator if generator is None or generator.device == x0.device else None
        return annealed_langevin(
            self.langevin_score,
            x0,
            [self.sigma],
            steps=steps,
            eps=eps if eps is not None else self.sigma**2 / 20,
            denoise=True,
            clamp=True,
            generator=gen,
        )

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_input(x)
        recon = self.decoder(self.encoder(self.corrupt(x)))
        return {"loss": reconstruction_loss(x, recon, self.loss_kind).mean()}
