"""Certified defenses: interval bounds, Wong & Kolter's dual network, sparsification (MATH.md 6).

>>> import robustrep as rr
>>> b = rr.certify.margin_bounds(net, x, y, eps=0.1, method="dual")   # [B, C]
>>> rr.certify.certified_accuracy(net, x, y, eps=0.1, method="dual")
>>> rr.certify.robust_loss(net, x, y, eps=0.1, method="dual").backward()
"""

from .bounds import (
    METHODS,
    certified,
    certified_accuracy,
    layer_bounds,
    margin_bounds,
    margin_objectives,
    robust_error_bound,
    robust_loss,
)
from .schedule import EpsilonSchedule
from .sparsify import (
    L1Rows,
    SparsifyingFrontEnd,
    constrain_l1_,
    dct_matrix,
    haar_matrix,
    project_l1_ball,
    project_weights_l1_,
    row_l1_norms,
    theorem2_bounds,
)

__all__ = [
    "METHODS",
    "EpsilonSchedule",
    "L1Rows",
    "SparsifyingFrontEnd",
    "certified",
    "certified_accuracy",
    "constrain_l1_",
    "dct_matrix",
    "haar_matrix",
    "layer_bounds",
    "margin_bounds",
    "margin_objectives",
    "project_l1_ball",
    "project_weights_l1_",
    "robust_error_bound",
    "robust_loss",
    "row_l1_norms",
    "theorem2_bounds",
]
