"""Generative adversarial networks (GAN, DCGAN, WGAN, WGAN-GP): a generator and a critic, one optimiser each.

The GAN (Goodfellow et al. 2014), DCGAN (Radford et al. 2016), WGAN (Arjovsky et al. 2017) and WGAN-GP
(Gulrajani et al. 2017), each a generator and a discriminator (critic) with their own optimisers, trained
by the one loop with a cycled phase schedule.

Images are mapped to [-1, 1] for the networks (tanh output) and back to [0, 1] by `sample`.

    GAN, Algorithm 1 with k discriminator steps per generator step:
        discriminator: max_D  E log D(x) + E log(1 - D(G(z)))
        generator:     min_G  E log(1 - D(G(z)))          (saturating, the minimax game)
                    or max_G  E log D(G(z))                (non-saturating, the paper's practical advice)
    WGAN (Algorithm 1):  critic max_f E f(x) - E f(G(z)), weights clipped to [-c, c]; generator max E f(G(z))
    WGAN-GP (Algorithm 1): critic loss E f(G(z)) - E f(x) + lambda E (||grad f(x_hat)||_2 - 1)^2,
        x_hat = u x + (1 - u) G(z), u ~ U[0, 1] per example, the norm over all pixels of each example.

    robustrep train dcgan --epochs 5 --out runs/dcgan
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from ..training import OptimizerSpec
from .registry import register

GENERATOR_LOSSES = ("non-saturating", "saturating")
ARCHS = ("conv", "mlp")


def _pixels(shape) -> int:
    return math.prod(shape)


def _check_divisible_by_4(shape, name: str):
    if shape[1] % 4 or shape[2] % 4:
        raise UserError(f"{name} needs image sides divisible by 4 (e.g. 28 or 8), got input shape {list(shape)}")


class MLPGenerator(nn.Module):
    """noise -> hidden -> 2 hidden -> pixels, LeakyReLU(0.2) inside and tanh at the output; with `batch_norm`,
    batch norm before the second activation (Radford et al. 2016's rule, never on the input or output layer)."""

    def __init__(self, noise_dim: int, shape, hidden: int, batch_norm: bool = False):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(
            nn.Linear(noise_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden, bias=not batch_norm),
            *([nn.BatchNorm1d(2 * hidden)] if batch_norm else []),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, _pixels(shape)),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z).view(len(z), *self.shape)


def mlp_discriminator(shape, hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """pixels -> 2 hidden -> hidden -> one logit, LeakyReLU(0.2); `dropout` after each hidden layer (Goodfellow
    et al. 2014, Sec. 5: "dropout was applied in training the discriminator net")."""
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(_pixels(shape), 2 * hidden),
        nn.LeakyReLU(0.2),
        *drop,
        nn.Linear(2 * hidden, hidden),
        nn.LeakyReLU(0.2),
        *drop,
        nn.Linear(hidden, 1),
    )


class ConvGenerator(nn.Module):
    """DCGAN generator for sides divisible by 4: project and reshape to [4w, H/4, W/4], then two fractionally
    strided 4x4 convolutions; batch norm and ReLU inside, tanh at the output (Radford et al. 2016, Sec. 3)."""

    def __init__(self, noise_dim: int, shape, width: int):
        super().__init__()
        c, h, w = shape
        self.base = (4 * width, h // 4, w // 4)
        self.project = nn.Sequential(
            nn.Linear(noise_dim, _pixels(self.base), bias=False), nn.BatchNorm1d(_pixels(self.base)), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, c, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.blocks(self.project(z).view(len(z), *self.base))


def conv_discriminator(shape, width: int, norm: bool) -> nn.Sequential:
    """DCGAN discriminator: strided 4x4 convolutions, LeakyReLU(0.2), batch norm on all but the first layer
    (`norm`; WGAN-GP's critic has none, since its penalty is per example), a linear output."""
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, 2 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1, bias=not norm),
        *([nn.BatchNorm2d(4 * width)] if norm else []),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * width * (h // 4) * (w // 4), 1),
    )


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """E (||grad_x f(x_hat)||_2 - 1)^2 at x_hat = u x + (1 - u) x_fake (Gulrajani et al. 2017, Alg. 1 line 7),
    the gradient norm taken per example over all its pixels; u ~ U[0, 1] per example unless given."""
    if u is None:
        u = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class AdversarialPair(nn.Module):
    """A generator and a discriminator (critic) with one optimiser each; subclasses give the networks
    (`_networks`), the losses and the optimiser settings."""

    monitor = None  # the losses of a two-player game say nothing about which epoch is best
    critic_phase = "discriminator"

    def __init__(self, input_shape, noise_dim: int, n_disc: int):
        super().__init__()
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        self.noise_dim = validate.width(noise_dim, "noise_dim")
        n_disc = validate.positive(n_disc, f"{self.critic_phase} steps per generator step", integer=True, high=1000)
        self.phases = [self.critic_phase] * n_disc + ["generator"]

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.noise_dim, generator=generator, device=device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from noise."""
        return (self.generator(z) + 1) / 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        validate.positive(n, "n", integer=True)
        return self.generate(self.noise(n, generator)).clamp(0, 1)

    def _fake(self, n: int, phase: str) -> torch.Tensor:
        z = self.noise(n)
        if phase == "generator":
            return self.generator(z)
        with torch.no_grad():  # the critic's step needs no graph through the generator
            return self.generator(z)


@register("gan")
class GAN(AdversarialPair):
    HPARAM_HELP = {
        "noise_dim": "dimensions of the noise z",
        "hidden": "units of the MLPs' narrow layers",
        "k": "discriminator steps per generator step (Algorithm 1)",
        "generator_loss": "non-saturating (max log D(G(z))) or saturating (min log(1 - D(G(z))))",
        "d_lr": "discriminator Adam learning rate",
        "g_lr": "generator Adam learning rate",
        "batch_norm": "batch norm in the MLP generator's hidden layer (false: the plain MLP)",
        "dropout": "dropout rate after each hidden layer of the MLP discriminator (0: none)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        noise_dim: int = 64,
        hidden: int = 256,
        k: int = 1,
        generator_loss: str = "non-saturating",
        d_lr: float = 2e-4,
        g_lr: float = 2e-4,
        batch_norm: bool = True,
        dropout: float = 0.3,
    ):
        super().__init__(input_shape, noise_dim, k)
        self.generator_loss = validate.choice(generator_loss, "generator_loss", GENERATOR_LOSSES)
        hidden = validate.width(hidden, "hidden")
        self.d_lr, self.g_lr = validate.positive(d_lr, "d_lr", high=10), validate.positive(g_lr, "g_lr", high=10)
        if not isinstance(batch_norm, bool):
            raise UserError(f"batch_norm must be true or false, got {batch_norm!r}")
        self.batch_norm = batch_norm
        self.dropout = validate.number(dropout, "dropout", low=0.0, high=0.9)
        self._networks(hidden)

    def _networks(self, hidden: int) -> None:
        self.generator = MLPGenerator(self.noise_dim, self.input_shape, hidden, batch_norm=self.batch_norm)
        self.discriminator = mlp_discriminator(self.input_shape, hidden, dropout=self.dropout)

    def optimizers(self):
        return [
            OptimizerSpec("discriminator", ("discriminator",), lr=self.d_lr, betas=(0.5, 0.999)),
            OptimizerSpec("generator", ("generator",), lr=self.g_lr, betas=(0.5, 0.999)),
        ]

    def loss(self, x, y=None, phase: str = "discriminator"):
        real = 2 * x - 1
        fake = self._fake(len(x), phase)
        if phase == "discriminator":
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)
            # -[log D(x) + log(1 - D(G(z)))] with D = sigmoid(logit): log sigmoid(l) = -softplus(-l)
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            accuracy = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
            return {"loss": loss, "accuracy": accuracy}
        d_fake = self.discriminator(fake)
        if self.generator_loss == "saturating":
            loss = -F.softplus(d_fake).mean()  # min log(1 - D(G(z))) = min -softplus(l)
        else:
            loss = F.softplus(-d_fake).mean()  # min -log D(G(z))
        return {"loss": loss, "d_fake": torch.sigmoid(d_fake).mean()}


INITS = ("dcgan", "pytorch")


def dcgan_init_(module: nn.Module) -> nn.Module:
    """Radford et al. 2016, Sec. 4: "All weights were initialized from a zero-centered Normal distribution
    with standard deviation 0.02"; batch norm's scales from N(1, 0.02) and every bias at 0, as the authors'
    code does."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


@register("dcgan")
class DCGAN(GAN):
    HPARAM_HELP = {
        **{k: v for k, v in GAN.HPARAM_HELP.items() if k not in ("hidden", "batch_norm", "dropout")},
        "width": "channels of the first conv layer (the others 2x and 4x)",
        "init": "dcgan (weights from N(0, 0.02), the paper's) or pytorch (torch's default initialisation)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        noise_dim: int = 64,
        width: int = 32,
        k: int = 1,
        generator_loss: str = "non-saturating",
        d_lr: float = 2e-4,
        g_lr: float = 2e-4,
        init: str = "dcgan",
    ):
        _check_divisible_by_4(validate.image_shape(input_shape, "input_shape"), "dcgan")
        init = validate.choice(init, "init", INITS)
        super().__init__(input_shape, noise_dim, width, k, generator_loss, d_lr, g_lr)
        self.init = init
        if init == "dcgan":
            dcgan_init_(self)

    def _networks(self, width: int) -> None:
        self.generator = ConvGenerator(self.noise_dim, self.input_shape, width)
        self.discriminator = conv_discriminator(self.input_shape, width, norm=True)


@register("wgan")
class WGAN(AdversarialPair):
    """WGAN with weight clipping and RMSProp, on the DCGAN networks."""

    critic_phase = "critic"
    HPARAM_HELP = {
        "noise_dim": "dimensions of the noise z",
        "width": "channels of the first conv layer (arch mlp: 8 * width hidden units)",
        "n_critic": "critic steps per generator step",
        "clip": "critic weights clipped to [-clip, clip]",
        "d_lr": "critic learning rate",
        "g_lr": "generator learning rate",
        "arch": "conv (DCGAN networks) or mlp (for points, e.g. the 2-D toys)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        noise_dim: int = 64,
        width: int = 32,
        n_critic: int = 5,
        clip: float = 0.01,
        d_lr: float = 5e-5,
        g_lr: float = 5e-5,
        arch: str = "conv",
    ):
        shape = validate.image_shape(input_shape, "input_shape")
        self.arch = validate.choice(arch, "arch", ARCHS)
        if arch == "conv":
            _check_divisible_by_4(shape, type(self).__name__.lower())
        super().__init__(shape, noise_dim, n_critic)
        width = validate.width(width, "width")
        self.clip = validate.positive(clip, "clip", high=1e3)
        self.d_lr, self.g_lr = validate.positive(d_lr, "d_lr", high=10), validate.positive(g_lr, "g_lr", high=10)
        self._networks(width, norm=True)

    def _networks(self, width: int, norm: bool) -> None:
        if self.arch == "mlp":  # the 2-D toys: MLPs of 8 * width units
            self.generator = MLPGenerator(self.noise_dim, self.input_shape, 8 * width)
            self.critic = mlp_discriminator(self.input_shape, 8 * width)
        else:
            self.generator = ConvGenerator(self.noise_dim, self.input_shape, width)
            self.critic = conv_discriminator(self.input_shape, width, norm=norm)

    def optimizers(self):
        return [
            OptimizerSpec("critic", ("critic",), kind="rmsprop", lr=self.d_lr),
            OptimizerSpec("generator", ("generator",), kind="rmsprop", lr=self.g_lr),
        ]

    def loss(self, x, y=None, phase: str = "critic"):
        fake = self._fake(len(x), phase)
        if phase == "critic":
            gap = self.critic(2 * x - 1).mean() - self.critic(fake).mean()  # the Wasserstein-1 estimate
            return {"loss": -gap, "wasserstein": gap.detach()}
        return {"loss": -self.critic(fake).mean()}

    def after_step(self, phase: str) -> None:
        if phase == "critic":
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.clip, self.clip)


@register("wgan-gp")
class WGANGP(WGAN):
    """WGAN-GP: the gradient penalty instead of clipping, Adam (0, 0.9), no batch norm in the critic."""

    HPARAM_HELP = {**WGAN.HPARAM_HELP, "penalty": "gradient penalty weight lambda"}

    def __init__(
        self,
        input_shape=(1, 28, 28),
        noise_dim: int = 64,
        width: int = 32,
        n_critic: int = 5,
        penalty: float = 10.0,
        d_lr: float = 1e-4,
        g_lr: float = 1e-4,
        arch: str = "conv",
    ):
        super().__init__(input_shape, noise_dim, width, n_critic, 1.0, d_lr, g_lr, arch)
        self.penalty = validate.nonnegative(penalty, "penalty", high=1e6)
        del self.clip

    def _networks(self, width: int, norm: bool) -> None:
        super()._networks(width, norm=False)  # no batch norm: the penalty is per example

    def optimizers(self):
        return [
            OptimizerSpec("critic", ("critic",), lr=self.d_lr, betas=(0.0, 0.9)),
            OptimizerSpec("generator", ("generator",), lr=self.g_lr, betas=(0.0, 0.9)),
        ]

    def loss(self, x, y=None, phase: str = "critic"):
        if phase != "critic":
            return super().loss(x, y, phase)
        real, fake = 2 * x - 1, self._fake(len(x), phase)
        gap = self.critic(real).mean() - self.critic(fake).mean()
        gp = gradient_penalty(self.critic, real, fake)
        return {"loss": -gap + self.penalty * gp, "wasserstein": gap.detach(), "penalty": gp.detach()}

    def after_step(self, phase: str) -> None:
        pass  # no clipping
