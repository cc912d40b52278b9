"""Progressive GAN (Karras et al. 2018): generator and critic grow 7 -> 14 -> 28 with fade-in.

Progressive growing of GANs (Karras et al. 2018), adapted to MNIST: the generator and the critic grow
7 -> 14 -> 28 (a quarter, half and all of the image side), each new block faded in: while alpha goes
0 -> 1 the output is alpha * new_block + (1 - alpha) * upsample(previous output), and the critic reads
alpha * new_block(x) + (1 - alpha) * previous_block(downsample(x)). Real images are average-pooled to the
current resolution. Loss: WGAN-GP (lambda 10) with the paper's drift term 0.001 E f(x)^2, one critic step
per generator step, Adam 1e-3 betas (0, 0.99), pixelwise feature normalisation in the generator.

The growth follows the epochs of the run: with S = 3 resolutions the run is cut into 2S - 1 equal parts
(stable 7, fade 14, stable 14, fade 28, stable 28); alpha is constant within an epoch, so a resumed run
grows exactly as the uninterrupted one. A model built outside training samples at full resolution.

    robustrep train progan --epochs 10 --out runs/progan
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from ..training import OptimizerSpec
from .gan import AdversarialPair, gradient_penalty
from .registry import register

STAGES = 3


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


def _conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))


class GrowingGenerator(nn.Module):
    def __init__(self, noise_dim: int, shape, width: int):
        super().__init__()
        c, h, w = shape
        self.base = (width, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(noise_dim, width * self.base[1] * self.base[2]), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(PixelNorm(), _conv(width, width), PixelNorm()),
                *[
                    nn.Sequential(
                        nn.Upsample(scale_factor=2), _conv(width, width), PixelNorm(), _conv(width, width), PixelNorm()
                    )
                    for _ in range(STAGES - 1)
                ],
            ]
        )
        self.to_image = nn.ModuleList([nn.Conv2d(width, c, 1) for _ in range(STAGES)])

    def forward(self, z, stage: int, alpha: float):
        h = self.project(z).view(len(z), *self.base)
        for s in range(stage + 1):
            previous = h
            h = self.blocks[s](h)
        out = self.to_image[stage](h)
        if stage > 0 and alpha < 1:
            old = F.interpolate(self.to_image[stage - 1](previous), scale_factor=2, mode="nearest")
            out = alpha * out + (1 - alpha) * old
        return torch.tanh(out)


class GrowingCritic(nn.Module):
    def __init__(self, shape, width: int):
        super().__init__()
        c, h, w = shape
        self.from_image = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, width, 1), nn.LeakyReLU(0.2)) for _ in range(STAGES)]
        )
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(_conv(width, width), nn.Flatten(), nn.Linear(width * (h // 4) * (w // 4), 1)),
                *[nn.Sequential(_conv(width, width), _conv(width, width), nn.AvgPool2d(2)) for _ in range(STAGES - 1)],
            ]
        )

    def forward(self, x, stage: int, alpha: float):
        h = self.from_image[stage](x)
        h = self.blocks[stage](h)
        if stage > 0:
            if alpha < 1:
                h = alpha * h + (1 - alpha) * self.from_image[stage - 1](F.avg_pool2d(x, 2))
            for s in range(stage - 1, -1, -1):
                h = self.blocks[s](h)
        return h


def growth(epoch: int, epochs: int) -> tuple[int, float]:
    """(stage, alpha) for an epoch: 2S - 1 equal parts of the run, stable and fading in turn; alpha at the
    middle of the epoch's span of its part."""
    parts = 2 * STAGES - 1
    position = (epoch + 0.5) / max(epochs, 1) * parts
    part = min(int(position), parts - 1)
    if part % 2 == 0:
        return part // 2, 1.0
    return (part + 1) // 2, position - part


@register("progan")
class ProGAN(AdversarialPair):
    critic_phase = "critic"
    HPARAM_HELP = {
        "noise_dim": "dimensions of the noise z",
        "width": "channels of every block",
        "penalty": "gradient penalty weight lambda",
        "drift": "weight of E f(x)^2",
        "d_lr": "critic Adam learning rate",
        "g_lr": "generator Adam learning rate",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        noise_dim: int = 64,
        width: int = 32,
        penalty: float = 10.0,
        drift: float = 0.001,
        d_lr: float = 1e-3,
        g_lr: float = 1e-3,
    ):
        shape = validate.image_shape(input_shape, "input_shape")
        if shape[1] % 4 or shape[2] % 4:
            raise UserError(f"progan grows by 2 twice: image sides must be divisible by 4, got {list(shape)}")
        super().__init__(shape, noise_dim, 1)
        width = validate.width(width, "width")
        self.penalty = validate.nonnegative(penalty, "penalty", high=1e6)
        self.drift = validate.nonnegative(drift, "drift", high=1e6)
        self.d_lr, self.g_lr = validate.positive(d_lr, "d_lr", high=10), validate.positive(g_lr, "g_lr", high=10)
        self.generator = GrowingGenerator(self.noise_dim, shape, width)
        self.critic = GrowingCritic(shape, width)
        self.stage, self.alpha = STAGES - 1, 1.0  # full resolution outside training

    def optimizers(self):
        return [
            OptimizerSpec("critic", ("critic",), lr=self.d_lr, betas=(0.0, 0.99)),
            OptimizerSpec("generator", ("generator",), lr=self.g_lr, betas=(0.0, 0.99)),
        ]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.stage, self.alpha = growth(epoch, epochs)

    def real_at_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Real images at the current resolution, faded like the generator's output (Karras et al., App. A)."""
        factor = 2 ** (STAGES - 1 - self.stage)
        real = F.avg_pool2d(x, factor) if factor > 1 else x
        if self.stage > 0 and self.alpha < 1:
            coarse = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = self.alpha * real + (1 - self.alpha) * coarse
        return real

    def generate(self, z):
        out = self.generator(z, self.stage, self.alpha)
        factor = 2 ** (STAGES - 1 - self.stage)  # shown at full size while still small
        return (F.interpolate(out, scale_factor=factor, mode="nearest") + 1) / 2 if factor > 1 else (out + 1) / 2

    def loss(self, x, y=None, phase: str = "critic"):
        z = self.noise(len(x))
        critic = lambda v: self.critic(v, self.stage, self.alpha)  # noqa: E731
        if phase == "generator":
            return {"loss": -critic(self.generator(z, self.stage, self.alpha)).mean()}
        with torch.no_grad():
            fake = self.generator(z, self.stage, self.alpha)
        real = self.real_at_stage(2 * x - 1)
        f_real = critic(real)
        gap = f_real.mean() - critic(fake).mean()
        gp = gradient_penalty(critic, real, fake)
        loss = -gap + self.penalty * gp + self.drift * f_real.pow(2).mean()
        return {
            "loss": loss,
            "wasserstein": gap.detach(),
            "penalty": gp.detach(),
            "stage": torch.tensor(float(self.stage)),
            "alpha": torch.tensor(self.alpha),
        }
