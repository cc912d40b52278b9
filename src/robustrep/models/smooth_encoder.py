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

Collapse watch: a large gamma can win by making mu constant in x (WD is then 0 for any x'), a code that
carries nothing and so is trivially "robust". Each step logs `code_nats`, the information the batch's
means carry under a Gaussian estimate, sum_k 1/2 log(1 + Var_x[mu_k] / E_x[var_k]); at the start of each
epoch after a warm-up of `collapse_warmup` steps (every encoder starts nearly constant: a deep ReLU stack
at its initialisation shrinks the input's variation, and training takes some steps to escape it: the MNIST
MLP SE of `reproduce smooth-encoders` is still under 0.5 nats at step 200, far above it after epoch 1), the mean
over the previous epoch's last steps is compared with `collapse_nats` (0.5 nats, less than a bit, by
default), and a collapse warns (CollapseWarning) or, with on_collapse="stop", stops the fit.
"""

from __future__ import annotations

import warnings
from collections import deque

import torch

from .. import validate
from ..balls import LinfBall
from ..divergences import entropic_wasserstein, w2_squared
from ..errors import UserError
from .registry import register
from .vae import VAE

SELECTIONS = ("pgd", "random")
ON_COLLAPSE = ("warn", "stop")
COLLAPSE_WINDOW = 20  # the last steps of an epoch that the check averages (early steps are still escaping the init)


class CollapseWarning(UserWarning):
    """The encoder's mean stopped depending on its input during training."""


def code_nats(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Information the means of a batch carry about x, as if mu(x) were Gaussian over the batch:
    sum_k 1/2 log(1 + Var_x[mu_k] / E_x[var_k]) nats (the capacity of a Gaussian channel; 0 for a constant
    encoder). A batch of one carries no estimate: 0."""
    if len(mu) < 2:
        return mu.new_zeros(())
    return 0.5 * torch.log1p(mu.var(0) / var.mean(0)).sum()


@register("se")
class SmoothEncoder(VAE):
    HPARAM_HELP = {
        **VAE.HPARAM_HELP,
        "gamma": "coupling strength of the entropic W2 term",
        "select": "selection of the fictive point: pgd or random",
        "select_eps": "l_inf radius of the selection ball",
        "select_steps": "selection iteration budget L",
        "select_alpha": "selection step (0: 2.5 eps / L)",
        "collapse_nats": "warn when the code carries less information than this at an epoch's end (0: off)",
        "collapse_warmup": "training steps before the collapse check starts",
        "on_collapse": "what a collapse does: warn or stop",
        "gamma_warmup": "epochs over which gamma rises linearly to its value (0: off)",
    }

    def __init__(
        self,
        input_shape=(1, 28, 28),
        latent_dim: int = 32,
        arch: str = "mlp",
        hidden: int = 200,
        obs_var: float = 1.0,
        gamma: float = 1.0,
        select: str = "pgd",
        select_eps: float = 0.1,
        select_steps: int = 20,
        select_alpha: float = 0.0,
        collapse_nats: float = 0.5,
        collapse_warmup: int = 500,
        on_collapse: str = "warn",
        gamma_warmup: int = 0,
    ):
        # checked before the VAE's layers are built: a NaN gamma or select_eps used to fail after an epoch
        settings = (
            validate.positive(gamma, "gamma", high=1e12),
            validate.choice(select, "select", SELECTIONS),
            validate.nonnegative(select_eps, "select_eps", high=1.0),
            validate.nonnegative(select_steps, "select_steps", integer=True, high=10**4),
        )
        select_alpha = validate.nonnegative(select_alpha, "select_alpha", high=1.0)
        self.collapse_nats = validate.nonnegative(collapse_nats, "collapse_nats", high=1e6)
        self.collapse_warmup = validate.nonnegative(collapse_warmup, "collapse_warmup", integer=True, high=10**9)
        self.on_collapse = validate.choice(on_collapse, "on_collapse", ON_COLLAPSE)
        self.gamma_warmup = validate.nonnegative(gamma_warmup, "gamma_warmup", integer=True, high=10**6)
        self._steps = 0  # training steps seen by this process (a resumed fit warms up again)
        self._recent_nats: deque = deque(maxlen=COLLAPSE_WINDOW)  # detached tensors: no device sync per step
        super().__init__(input_shape, latent_dim, arch, hidden, obs_var)
        self.gamma, self.select_mode, self.select_eps, self.select_steps = settings
        self.gamma_now = self.gamma  # the coupling strength in use: below gamma during a warm-up (gamma_schedule)
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
            with torch.enable_grad():  # selection works inside no_grad callers too
                mu_b, var_b = self.encoder(x + delta)
                (grad,) = torch.autograd.grad(w2_squared(mu_a, var_a, mu_b, var_b).sum(), delta)
            with torch.no_grad():
                delta = LinfBall.project(delta + self.select_alpha * grad.sign(), self.select_eps)
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_input(x)
        x_sel = self.select(x)
        mu, var = self.encoder(torch.cat([x, x_sel]))  # one forward pass for both codes
        (mu_a, mu_b), (var_a, var_b) = mu.chunk(2), var.chunk(2)
        e1 = self.data_fidelity(x, mu_a, var_a)
        e2 = 0.5 * (mu_a.pow(2) + var_a + mu_b.pow(2) + var_b).sum(-1)
        wd = entropic_wasserstein(mu_a, var_a, mu_b, var_b, self.gamma_now)
        nats = code_nats(mu_a.detach(), var_a.detach())
        if self.training:
            self._recent_nats.append(nats)
            self._steps += 1
        return {
            "loss": (e1 + e2 + wd).mean(),
            "recon": e1.mean(),
            "prior": e2.mean(),
            "wd": wd.mean(),
            "w2_sel": w2_squared(mu_a, var_a, mu_b, var_b).mean().detach(),
            "code_nats": nats,
            **({"gamma": mu.new_tensor(self.gamma_now)} if self.gamma_warmup else {}),
        }

    def gamma_schedule(self, epoch: int) -> float:
        """gamma in (0-based) `epoch`: with a warm-up of W epochs, gamma (epoch + 1) / (W + 1) while
        epoch < W, then gamma (issue 11's lever: the code forms before the smoothness term weighs in
        fully). A function of the epoch alone, so a resumed fit follows the same schedule."""
        if epoch >= self.gamma_warmup:
            return self.gamma
        return self.gamma * (epoch + 1) / (self.gamma_warmup + 1)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Sets this epoch's gamma, then the collapse check on the last steps of the epoch just finished (none
        before the collapse warm-up ends)."""
        self.gamma_now = self.gamma_schedule(epoch)
        if not self._recent_nats:
            return
        nats = float(torch.stack(list(self._recent_nats)).mean())
        steps = len(self._recent_nats)
        self._recent_nats.clear()
        if self._steps < self.collapse_warmup or nats >= self.collapse_nats:
            return
        message = (
            f"the smooth encoder collapsed by the end of epoch {epoch}: over its last {steps} steps the code "
            f"carried {nats:.3g} nats < collapse_nats {self.collapse_nats:g} (mu nearly constant in x, so a "
            "probe on it is at chance and its robustness says nothing); lower gamma, select_eps or the "
            "learning rate"
        )
        if self.on_collapse == "stop":
            raise UserError(message)
        warnings.warn(message, CollapseWarning, stacklevel=2)
