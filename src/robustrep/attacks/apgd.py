"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), l_inf or l_2, on the cross-entropy or the DLR loss, untargeted or
targeted (APGD-T: the targeted DLR loss towards each of the top-k other classes in turn).

Distance: ||x_adv - x||_p <= eps, p in {inf, 2}; x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 (target [B] for a given target) -> x_adv [B, ...].

PGD with momentum and a step size that needs no tuning (Algorithm 1 of the paper):

    z^(k+1) = P(x^(k) + eta^(k) step(grad f(x^(k))))
    x^(k+1) = P(x^(k) + a (z^(k+1) - x^(k)) + (1 - a)(x^(k) - x^(k-1)))     a = 0.75 (1 for the first step)

P projects on the ball and on [0, 1]; eta^(0) = 2 eps. At the checkpoints w_j (`checkpoints`) the step
size of an example is halved, and its iterate reset to its best point so far, when either
  Condition 1: the loss rose in at most rho * (w_j - w_{j-1}) of the steps since the last checkpoint;
  Condition 2: its step size was not halved at the last checkpoint and its best loss has not grown since.
(The paper writes "< rho (w_j - w_{j-1})" in Condition 1; the authors' code, and this, uses "<=".)

As in the package's PGD, an example stops as soon as an iterate fools the model (that iterate is the
one returned), restarts attack only the examples not yet broken, and an example never broken returns
its highest-loss iterate.

    >>> atk = APGD(classifier, eps=0.1, loss="ce")                  # APGD-CE
    >>> atk = APGD(classifier, eps=0.1, loss="dlr", targeted=True)  # APGD-T over the top 9 classes
    >>> x_adv = atk(x, y)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..balls import get_ball
from ..errors import UserError
from .base import Attack, input_gradient

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j <= steps at which APGD may halve its step size (Section 3.2):
    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j steps)."""
    # p in hundredths, so that the arithmetic is exact (0.22 * 100 is 22.000000000000004 in floats)
    p = [0, 22]
    while p[-1] <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    w = sorted({-(-q * steps // 100) for q in p[1:]})  # ceil(q steps / 100), distinct
    return [k for k in w if 1 <= k <= steps]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (eq. 5), ascended: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3),
    pi the classes sorted by decreasing logit. Invariant to shifting and scaling the logits. [B]."""
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (eq. 6), ascended: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). [B]."""
    z_sorted = logits.sort(dim=1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, t[:, None]).squeeze(1)
    return -gap / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


class APGD(Attack):
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.1,
        loss: str = "ce",
        targeted: bool = False,
        steps: int = 100,
        restarts: int = 1,
        norm: str = "linf",
        targets: int = 9,
        rho: float = 0.75,
        early_stop: bool = True,
    ):
        super().__init__(model)
        self.eps = validate.nonnegative(eps, "eps")
        self.loss = validate.choice(loss, "loss", LOSSES)
        if not isinstance(targeted, bool):
            raise UserError(f"targeted must be True or False, got {targeted!r}")
        self.targeted = targeted
        self.steps = validate.positive(steps, "steps", integer=True)
        self.restarts = validate.positive(restarts, "restarts", integer=True)
        self.norm = norm
        self.ball = get_ball(norm)
        self.targets = validate.positive(targets, "targets", integer=True)
        self.rho = validate.number(rho, "rho", low=0, high=1, low_open=True)
        if not isinstance(early_stop, bool):
            raise UserError(f"early_stop must be True or False, got {early_stop!r}")
        self.early_stop = early_stop
        self._checkpoints = checkpoints(self.steps)

    def _loss(self, logits, y, t):
        """The per-example loss to ascend; t is None (untargeted) or the target of each example."""
        if self.loss == "ce":
            if t is None:
                return F.cross_entropy(logits, y, reduction="none")
            return -F.cross_entropy(logits, t, reduction="none")
        return dlr_loss(logits, y) if t is None else targeted_dlr_loss(logits, y, t)

    def _check_classes(self, num_classes: int, targeted: bool) -> None:
        # the DLR denominators read the 3rd (untargeted) or 4th (targeted) largest logit
        need = 4 if targeted else 3
        if self.loss == "dlr" and num_classes < need:
            kind = "targeted DLR" if targeted else "DLR"
            raise UserError(
                f"the {kind} loss needs at least {need} classes, the model has {num_classes}: use loss='ce'"
            )
        if self.targeted and num_classes < 2:
            raise UserError("a targeted attack needs at least 2 classes")

    def run(self, x, y, target=None):
        with torch.no_grad():
            clean = self.model(x)
        self._check_classes(clean.shape[1], self.targeted or target is not None)
        # given targets: success is reaching them; APGD-T's own targets only steer, success is any wrong label
        reach = target is not None
        if reach:
            plans = [target]
        elif self.targeted:
            ranked = clean.argsort(dim=1, descending=True)  # targets: the 2nd, 3rd, ... most likely classes
            plans = [ranked[:, k] for k in range(1, min(self.targets, clean.shape[1] - 1) + 1)]
        else:
            plans = [None]
        goal = target if reach else y
        pred = clean.argmax(1)
        done = (pred == goal if reach else pred != goal) if self.early_stop else torch.zeros_like(y, dtype=torch.bool)
        x_adv = x.clone()
        best = torch.full((len(x),), float("-inf"), device=x.device)
        broken = torch.zeros_like(done)  # fooled by an earlier run: its first success stays
        for t in plans:
            for _ in range(self.restarts):
                todo = (~done).nonzero().squeeze(1)
                if todo.numel() == 0:
                    return x_adv
                x0 = (x[todo] + self.ball.random_start(x[todo], self.eps)).clamp(0, 1)
                x_r, success, loss = self.single_run(x[todo], y[todo], None if t is None else t[todo], x0, reach)
                # until a success, the highest loss (of different targets' losses: a fair guess)
                new = ~broken[todo]
                better = new & (success | (loss > best[todo]))
                x_adv[todo[better]] = x_r[better]
                best[todo[better]] = loss[better]
                broken[todo[new & success]] = True
                if self.early_stop:
                    done[todo[success]] = True
        return x_adv

    def single_run(self, x, y, t, x0, reach: bool = False, trace: list | None = None):
        """One APGD run from the start x0 (in the ball, in [0, 1]) on a batch: (x_out, success, best loss).

        Success is the label t (`reach`) or any label but y. x_out is an example's first successful
        iterate, else its highest-loss one. All state is per example; an example that succeeds leaves
        the live batch at once (with `early_stop`), which changes nothing for the others.
        `trace`, a list, receives per iteration k = 0..steps a dict of the live examples' indices, loss
        f(x^(k)) and the step size eta^(k) that leads from x^(k) (for tests and plots)."""
        ball, eps, rho = self.ball, self.eps, self.rho
        n = len(x)
        x_out, f_out = x0.clone(), torch.full((n,), float("-inf"), device=x.device)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        alive = torch.arange(n, device=x.device)
        goal = t if reach else y

        def project(v, xa):  # P: onto the ball around xa, then into [0, 1]
            return (xa + ball.project(v - xa, eps)).clamp_(0, 1)

        def evaluate(xi, ya, ta, ga):  # loss [B], gradient, fooled [B] at the iterate xi
            xi = xi.detach().requires_grad_(True)
            logits = self.model(xi)
            loss = self._loss(logits, ya, ta)
            pred = logits.detach().argmax(1)
            return loss.detach(), input_gradient(loss, xi).detach(), (pred == ga if reach else pred != ga)

        xa, ya, ta, ga = x, y, t, goal
        cur = x0.clone()
        loss, grad, won = evaluate(cur, ya, ta, ga)
        state = {
            "cur": cur,
            "prev": cur.clone(),
            "grad": grad,
            "step": torch.full((n,), 2.0 * eps, device=x.device),  # eta^(0) = 2 eps
            "x_max": cur.clone(),
            "grad_max": grad.clone(),
            "f_max": loss.clone(),
            "f_prev": loss.clone(),
            "rises": torch.zeros(n, device=x.device),  # loss rises since the last checkpoint
            "f_max_last": loss.clone(),  # f_max at the last checkpoint
            "halved_last": torch.ones(n, dtype=torch.bool, device=x.device),  # Condition 2 is off at w_1
        }
        f_out.copy_(loss)
        w_prev, marks = 0, set(self._checkpoints)
        shape = (-1,) + (1,) * (x.dim() - 1)
        for i in range(self.steps + 1):
            if won.any():  # record first successes; they leave the batch
                idx = alive[won]
                x_out[idx], f_out[idx], success[idx] = state["cur"][won], state["f_prev"][won], True
                if self.early_stop:
                    keep = ~won
                    alive, xa, ya, ga = alive[keep], xa[keep], ya[keep], ga[keep]
                    ta = ta[keep] if ta is not None else None
                    state = {k: v[keep] for k, v in state.items()}
                    if alive.numel() == 0:
                        break
                    won = won[keep]
            if trace is not None:
                trace.append({"alive": alive.clone(), "loss": state["f_prev"].clone(), "step": state["step"].clone()})
            if i == self.steps:
                break
            with torch.no_grad():
                s = state
                a = 1.0 if i == 0 else 0.75
                z = project(s["cur"] + s["step"].view(shape) * ball.step(s["grad"]), xa)
                new = project(s["cur"] + a * (z - s["cur"]) + (1 - a) * (s["cur"] - s["prev"]), xa)
                s["prev"] = s["cur"]
            loss, grad, now = evaluate(new, ya, ta, ga)
            with torch.no_grad():
                s["cur"], s["grad"] = new, grad
                s["rises"] += (loss > s["f_prev"]).float()
                s["f_prev"] = loss
                up = loss > s["f_max"]
                s["x_max"][up], s["grad_max"][up], s["f_max"][up] = new[up], grad[up], loss[up]
                if self.early_stop:
                    won = now
                else:  # keep only first successes
                    won = now & ~success[alive]
                if i + 1 in marks:
                    w = i + 1
                    cond1 = s["rises"] <= rho * (w - w_prev)
                    cond2 = ~s["halved_last"] & (s["f_max_last"] >= s["f_max"])
                    halve = cond1 | cond2
                    s["step"][halve] /= 2
                    s["cur"][halve], s["grad"][halve] = s["x_max"][halve], s["grad_max"][halve]
                    s["halved_last"], s["f_max_last"] = halve, s["f_max"].clone()
                    s["rises"].zero_()
                    w_prev = w
        # examples that never succeeded: their highest-loss iterate
        lost = alive[~success[alive]]
        keep = ~success[alive]
        x_out[lost], f_out[lost] = state["x_max"][keep], state["f_max"][keep]
        return x_out, success, f_out
