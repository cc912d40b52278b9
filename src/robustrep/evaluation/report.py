"""`robustness_report`: the sanity checks that expose gradient masking (Athalye et al. 2018;
Carlini et al. 2019, "On evaluating adversarial robustness"), run together.

Checks, each reported as passed or failed with the numbers behind it:
- `monotone`: accuracy under PGD does not rise as eps grows;
- `pgd_vs_fgsm`: PGD is never weaker than FGSM (its first step *is* FGSM);
- `unbounded`: PGD with eps = 1 (l_inf: the whole image box) breaks every point;
- `blackbox_vs_whitebox`: the score-based Square attack is never much stronger than PGD;
- `deterministic`: PGD at eps = 0 (it cannot move a point) keeps the clean accuracy; a model whose
  answers change without any perturbation is randomised, and its robustness needs an attack that
  averages over the randomness (EOT, Athalye et al. 2018). (Accuracy under attack <= clean accuracy is
  no check: only clean-correct points are counted, so it holds by construction.)
A failure does not prove masking, but a defence that fails one has an evaluation to redo.

    >>> report = robustness_report(classifier, x, y, eps_list=[0.05, 0.1, 0.2])
    >>> report["passed"], report["failed"]
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import FGSM, PGD, Square
from ..errors import UserError
from .adversarial import adversarial_accuracy, clean_accuracy


def robustness_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list,
    steps: int = 40,
    restarts: int = 1,
    queries: int = 500,
    loss: str = "margin",
    tolerance: float = 0.02,
    batch_size: int = 1000,
) -> dict:
    """Runs FGSM, PGD and Square (l_inf) at every eps in `eps_list` and the checks above.

    Returns {"clean", "eps", "fgsm", "pgd", "square", "unbounded", "zero_radius", "checks": [{"name", "passed",
    "detail"}], "failed": [names], "passed": bool}; accuracies are strict (clean and robust).
    `loss` is the white-box attacks' loss: the CW margin by default, which, unlike cross-entropy, does
    not saturate on confident points. `tolerance` is the slack allowed in each comparison (in accuracy)."""
    eps_list = sorted(float(e) for e in eps_list)
    if not eps_list or eps_list[0] < 0:
        raise UserError("robustness_report needs at least one eps >= 0")

    def acc(atk):
        return adversarial_accuracy(model, x, y, atk, batch_size=batch_size)

    out = {"clean": clean_accuracy(model, x, y), "eps": eps_list, "fgsm": [], "pgd": [], "square": []}
    for eps in eps_list:
        out["fgsm"].append(acc(FGSM(model, eps=eps, loss=loss)))
        out["pgd"].append(acc(PGD(model, eps=eps, steps=steps, restarts=restarts, loss=loss)))
        out["square"].append(acc(Square(model, eps=eps, queries=queries)))
    out["unbounded"] = acc(PGD(model, eps=1.0, steps=max(steps, 20), alpha=0.1, loss=loss))
    out["zero_radius"] = acc(PGD(model, eps=0.0, steps=1, loss=loss))

    checks = []

    def check(name, passed, detail):
        checks.append({"name": name, "passed": bool(passed), "detail": detail})

    rises = [(a, b, e) for a, b, e in zip(out["pgd"], out["pgd"][1:], eps_list[1:]) if b > a + tolerance]
    check(
        "monotone",
        not rises,
        "accuracy falls as eps grows"
        if not rises
        else f"PGD accuracy rises to {rises[0][1]:.3f} at eps {rises[0][2]:g} from {rises[0][0]:.3f}",
    )
    weak = [(e, p, f) for e, p, f in zip(eps_list, out["pgd"], out["fgsm"]) if p > f + tolerance]
    check(
        "pgd_vs_fgsm",
        not weak,
        "PGD at least as strong as FGSM"
        if not weak
        else f"PGD accuracy {weak[0][1]:.3f} above FGSM's {weak[0][2]:.3f} at eps {weak[0][0]:g}",
    )
    check(
        "unbounded",
        out["unbounded"] <= tolerance,
        f"PGD with eps = 1 leaves accuracy {out['unbounded']:.3f} (should be 0)",
    )
    strong = [(e, s, p) for e, s, p in zip(eps_list, out["square"], out["pgd"]) if s < p - tolerance]
    check(
        "blackbox_vs_whitebox",
        not strong,
        "black-box not stronger than white-box"
        if not strong
        else f"Square accuracy {strong[0][1]:.3f} below PGD's {strong[0][2]:.3f} at eps {strong[0][0]:g}",
    )
    check(
        "deterministic",
        out["zero_radius"] == out["clean"],
        f"PGD at eps = 0 gives accuracy {out['zero_radius']:.3f}, clean accuracy is {out['clean']:.3f}",
    )
    out["checks"] = checks
    out["failed"] = [c["name"] for c in checks if not c["passed"]]
    out["passed"] = not out["failed"]
    return out
