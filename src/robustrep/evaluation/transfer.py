"""Transferability of adversarial examples between models (Liu et al. 2017; seed 003's table).

`transfer_matrix(models, x, y, make_attack)`: for every source model i, craft adversarial examples
with `make_attack(model_i)` and measure the accuracy of every model j on them. Row i, column j is the
accuracy of model j on examples built against model i; the diagonal is the white-box accuracy.
Examples are crafted from every point (not only those the source gets right), as in the paper's table.

    >>> m = transfer_matrix({"mlp": mlp, "cnn": cnn}, x, y, lambda f: rr.attacks.PGD(f, eps=0.1))
    >>> m["accuracy"]       # [[acc of mlp on mlp's examples, acc of cnn on mlp's], [...]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..attacks.base import Attack, predict
from ..errors import UserError
from ..utils import check_images, check_labels


def transfer_matrix(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    make_attack: Callable[[nn.Module], Attack],
    batch_size: int = 1000,
) -> dict:
    """Returns a dict: `names` [M]; `clean` [M] (accuracy on x); `accuracy` [M][M] (row: source,
    column: target); `l2`, `linf` [M] (mean perturbation norms of each source's examples) and
    `rmsd` [M] (root mean squared pixel change, the paper's first column)."""
    if not isinstance(models, Mapping) or len(models) == 0:
        raise UserError("transfer_matrix needs a non-empty mapping name -> classifier")
    check_images(x, "x")
    check_labels(y, len(x), "y")
    names = list(models)
    result = {
        "names": names,
        "n": len(x),
        "accuracy": [],
        "l2": [],
        "linf": [],
        "rmsd": [],
        "clean": [float((predict(models[n], x) == y).float().mean()) for n in names],
    }
    for source in names:
        atk = make_attack(models[source])
        x_adv = torch.cat([atk(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        delta = (x_adv - x).flatten(1)
        result["l2"].append(float(delta.norm(dim=1).mean()))
        result["linf"].append(float(delta.abs().amax(1).mean()))
        result["rmsd"].append(float(delta.pow(2).mean(1).sqrt().mean()))
        result["accuracy"].append([float((predict(models[t], x_adv) == y).float().mean()) for t in names])
    return result
