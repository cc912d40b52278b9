"""The table of attacks that the command line offers: name -> how to build it from a classifier and the
flag values, one line of help, and whether it takes an eps budget (`robustrep evaluate` sweeps eps).

    atk = make_attack("pgd", classifier, eps=0.1, steps=100, restarts=10)

Settings not given take the defaults of `DEFAULTS` (the flags' defaults of `robustrep attack`); a new
attack is one entry here and is picked up by `robustrep attack` and, if it has an eps, by `evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..transforms import physical
from .apgd import APGD
from .base import Attack
from .bim import BIM, IterativeLeastLikely
from .cw import CW
from .deepfool import DeepFool
from .ensemble import Ensemble
from .eot import EOT
from .fgsm import FGSM
from .onepixel import OnePixel
from .pgd import PGD
from .rp2 import RP2
from .spatial import Spatial
from .square import Square
from .universal import UniversalPerturbation


@dataclass(frozen=True)
class AttackEntry:
    build: Callable[[nn.Module, dict], Attack]  # (classifier, settings) -> attack
    help: str
    has_eps: bool  # takes an l_p radius `eps` and attacks each batch on its own (swept by `robustrep evaluate`)
    default_steps: int | None = None  # iterations when --steps is not given


# the defaults of the settings an attack may read (the flags of `robustrep attack`)
DEFAULTS = dict(
    eps=0.1,
    norm="linf",
    steps=None,
    restarts=1,
    loss="ce",
    c=1.0,
    kappa=0.0,
    search_steps=5,
    overshoot=0.02,
    pixels=1,
    popsize=400,
    queries=None,  # the attack's own: 1000 for square, 5000 for the ensemble's Square (AutoAttack's)
    targets=9,
    max_angle=30.0,
    max_shift=0.1,
)

ATTACKS: dict[str, AttackEntry] = {
    "fgsm": AttackEntry(
        lambda m, s: FGSM(m, eps=s["eps"], norm=s["norm"]),
        "one gradient-sign step (l_inf) or gradient step (l_2)",
        has_eps=True,
    ),
    "bim": AttackEntry(
        lambda m, s: BIM(m, eps=s["eps"], steps=s["steps"], norm=s["norm"]),
        "iterative FGSM, clipped to the ball",
        has_eps=True,
        default_steps=10,
    ),
    "ll": AttackEntry(
        lambda m, s: IterativeLeastLikely(m, eps=s["eps"], steps=s["steps"], norm=s["norm"]),
        "iterative steps towards the least likely class",
        has_eps=True,
        default_steps=10,
    ),
    "pgd": AttackEntry(
        lambda m, s: PGD(m, eps=s["eps"], steps=s["steps"], restarts=s["restarts"], norm=s["norm"], loss=s["loss"]),
        "projected gradient descent with random restarts",
        has_eps=True,
        default_steps=40,
    ),
    "cw": AttackEntry(
        lambda m, s: CW(m, c=s["c"], kappa=s["kappa"], steps=s["steps"], binary_search_steps=s["search_steps"]),
        "Carlini-Wagner L2 (minimal perturbation, no eps)",
        has_eps=False,
        default_steps=100,
    ),
    "deepfool": AttackEntry(
        lambda m, s: DeepFool(m, steps=s["steps"], overshoot=s["overshoot"], norm=s["norm"]),
        "minimal perturbation to the nearest boundary (no eps); reports rho_adv",
        has_eps=False,
        default_steps=50,
    ),
    "universal": AttackEntry(
        lambda m, s: UniversalPerturbation(m, eps=s["eps"], norm=s["norm"]),
        "one perturbation for all images, fitted on training images",
        has_eps=False,  # has an eps, but must be fitted on training images first: not swept by evaluate
    ),
    "onepixel": AttackEntry(
        lambda m, s: OnePixel(m, pixels=s["pixels"], steps=s["steps"], popsize=s["popsize"]),
        "black-box differential evolution on --pixels pixels",
        has_eps=False,
        default_steps=75,
    ),
    "spatial": AttackEntry(
        lambda m, s: Spatial(m, max_angle=s["max_angle"], max_shift=s["max_shift"]),
        "worst rotation (<= 30 deg) and translation (<= 10%) on a grid",
        has_eps=False,
    ),
    "square": AttackEntry(
        lambda m, s: Square(m, eps=s["eps"], queries=_given(s["queries"], 1000)),
        "score-based black-box, l_inf",
        has_eps=True,
    ),
    "apgd": AttackEntry(
        lambda m, s: APGD(m, eps=s["eps"], loss=s["loss"], steps=s["steps"], restarts=s["restarts"], norm=s["norm"]),
        "Auto-PGD (Croce & Hein 2020): PGD with momentum and its own step sizes; --loss ce or dlr",
        has_eps=True,
        default_steps=100,
    ),
    "apgd-t": AttackEntry(
        lambda m, s: APGD(
            m,
            eps=s["eps"],
            loss="dlr",
            targeted=True,
            targets=s["targets"],
            steps=s["steps"],
            restarts=s["restarts"],
            norm=s["norm"],
        ),
        "APGD-T: targeted DLR loss towards each of the --targets most likely other classes",
        has_eps=True,
        default_steps=100,
    ),
    "ensemble": AttackEntry(
        lambda m, s: Ensemble(
            m,
            eps=s["eps"],
            norm=s["norm"],
            steps=s["steps"],
            restarts=s["restarts"],
            targets=s["targets"],
            queries=_given(s["queries"], 5000),
        ),
        "APGD-CE, then APGD-T on the points left, then Square (l_inf) on the points left (AutoAttack's way)",
        has_eps=True,
        default_steps=100,
    ),
    "eot-pgd": AttackEntry(
        lambda m, s: EOT(
            PGD(m, eps=s["eps"], steps=s["steps"], restarts=s["restarts"], norm=s["norm"], loss=s["loss"]),
            physical(seed=torch.initial_seed() % 2**63),
            samples=16,
        ),
        "PGD on the mean over 16 draws of rotation +-30, scale 0.8-1.2, shift +-3 px, light, blur, noise (EOT)",
        has_eps=True,
        default_steps=40,
    ),
    "rp2": AttackEntry(
        lambda m, s: RP2(m, physical(seed=torch.initial_seed() % 2**63), steps=s["steps"]),
        "RP2 stickers on 15% of the pixels that survive the physical distribution (untargeted here)",
        has_eps=False,
        default_steps=300,
    ),
}


def _given(value, default):
    return default if value is None else value


def attack_names(with_eps: bool = False) -> list[str]:
    return [name for name, entry in ATTACKS.items() if entry.has_eps or not with_eps]


def make_attack(name: str, classifier: nn.Module, **settings) -> Attack:
    """Build attack `name` for `classifier`; settings not given take `DEFAULTS` (steps: the attack's own)."""
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}")
    entry = ATTACKS[name]
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise UserError(f"attack settings {', '.join(sorted(unknown))} are not known: use {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if s["steps"] is None:
        s["steps"] = entry.default_steps or 40
    return entry.build(classifier, s)
