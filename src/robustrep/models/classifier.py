"""A ReLU classifier (MLP or Wong & Kolter's MNIST conv net), trained normally or provably robustly.

`robust="dual"` minimises Wong & Kolter's robust cross-entropy (2018, eq. 14) at the epoch's eps of
the warm-up schedule (linear from `eps_start` to `eps` over `warmup_epochs`, then `eps`);
`robust="ibp"` the same loss with interval bounds. `projections=k > 0` (with `robust="dual"`) estimates
the dual network's layer bounds with k random Cauchy projections during training (Wong, Schmidt,
Metzen & Kolter 2018), much cheaper on wide layers; certify the result with the exact bounds.
`l1_gamma > 0` constrains every weight row to the l1 ball of that radius (Gopalakrishnan et al.,
Theorem 2); `front_end="dct"|"haar"` puts a sparsifying front end keeping `front_k` coefficients
before the network (an attack defense, not certifiable).

    robustrep train classifier --dataset mnist --robust dual --eps 0.1 --out runs/wk
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..certify import EpsilonSchedule, SparsifyingFrontEnd, constrain_l1_, robust_loss
from ..errors import UserError
from .registry import register

ARCHS = ("mlp", "wk-conv", "cnn")
ROBUST = ("none", "dual", "ibp")


def cnn(input_shape, num_classes: int) -> nn.Sequential:
    """A small standard CNN (LeNet-like; >= 99% on MNIST in a few epochs): two 5x5 convolutions (16 and
    32 channels) each with 2x2 max-pooling, a 100-unit layer and the logits. Not certifiable (max-pool)."""
    c, h, w = input_shape
    convs = nn.Sequential(
        nn.Conv2d(c, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = convs(torch.zeros(1, c, h, w)).shape[1]
    return nn.Sequential(*convs, nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, num_classes))


def wk_conv(input_shape, num_classes: int) -> nn.Sequential:
    """Wong & Kolter's MNIST model (their code's `mnist_model`): two stride-2 4x4 convolutions (16 and 32
    channels), a 100-unit layer and the logits."""
    c, h, w = input_shape
    convs = nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = convs(torch.zeros(1, c, h, w)).shape[1]
    return nn.Sequential(*convs, nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, num_classes))


def mlp(input_shape, num_classes: int, hidden: list[int]) -> nn.Sequential:
    n = 1
    for s in input_shape:
        n *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(n, width), nn.ReLU()]
        n = width
    return nn.Sequential(*layers, nn.Linear(n, num_classes))


@register("classifier")
class Classifier(nn.Module):
    def __init__(
        self,
        input_shape=(1, 28, 28),
        num_classes: int = 10,
        arch: str = "wk-conv",
        hidden: str = "100,100",
        robust: str = "none",
        eps: float = 0.1,
        eps_start: float = 0.05,
        warmup_epochs: int = 10,
        l1_gamma: float = 0.0,
        front_end: str = "none",
        front_k: int = 0,
        projections: int = 0,
    ):
        super().__init__()
        # finite and in range before anything is built (the checks below assume numbers)
        for value, name in ((eps, "eps"), (eps_start, "eps_start"), (l1_gamma, "l1_gamma")):
            validate.nonnegative(value, name, high=1e6)
        validate.nonnegative(warmup_epochs, "warmup_epochs", integer=True, high=10**6)
        validate.positive(num_classes, "num_classes", integer=True, high=10**6)
        validate.nonnegative(front_k, "front_k", integer=True, high=10**7)
        if arch not in ARCHS:
            raise UserError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
        if robust not in ROBUST:
            raise UserError(f"unknown robust training {robust!r}: choose one of {', '.join(ROBUST)}")
        if eps < 0 or eps_start < 0 or warmup_epochs < 0 or l1_gamma < 0:
            raise UserError("eps, eps_start, warmup_epochs and l1_gamma must be >= 0")
        if isinstance(projections, bool) or not isinstance(projections, int) or projections < 0:
            raise UserError(f"projections must be a whole number >= 0 (0: exact bounds), got {projections!r}")
        if projections and robust != "dual":
            raise UserError("projections estimate the dual network's bounds: use them with --robust dual")
        if front_end != "none" and robust != "none":
            raise UserError("the sparsifying front end cannot be certified: use it with --robust none")
        input_shape = validate.image_shape(input_shape, "input_shape")
        try:
            widths = [int(h) for h in str(hidden).split(",") if h.strip()]
        except ValueError:
            raise UserError(f"--hidden takes comma-separated widths, got {hidden!r}") from None
        for w in widths:
            validate.width(w, "hidden (each width)")
        if arch == "wk-conv" and len(input_shape) != 3:
            raise UserError(f"arch wk-conv needs images [C, H, W], got input shape {input_shape}")
        if arch == "cnn" and len(input_shape) != 3:
            raise UserError(f"arch cnn needs images [C, H, W], got input shape {input_shape}")
        body = {"wk-conv": wk_conv, "cnn": cnn}.get(arch, lambda *a: mlp(*a, widths))(input_shape, num_classes)
        if l1_gamma > 0:
            constrain_l1_(body, l1_gamma)
        # The front end sits inside `net`, so certification refuses the model instead of certifying the
        # network behind the front end only.
        self.net = nn.Sequential(SparsifyingFrontEnd(front_k, front_end), *body) if front_end != "none" else body
        self.robust = robust
        self.projections = projections or None
        start = eps_start if robust != "none" and warmup_epochs > 0 else None
        self.schedule = EpsilonSchedule(eps=eps, start=start, length=warmup_epochs)
        self.current_eps = self.schedule(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.current_eps = self.schedule(epoch)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if y is None:
            raise UserError("the classifier needs labels: train it on a labelled data set")
        if self.robust == "none":
            logits = self(x)
            ce = F.cross_entropy(logits, y)
            return {"loss": ce, "error": (logits.argmax(1) != y).float().mean()}
        rl = robust_loss(self.net, x, y, self.current_eps, self.robust, projections=self.projections)
        return {"loss": rl, "eps": torch.tensor(self.current_eps)}
