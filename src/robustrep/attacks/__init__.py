"""Adversarial attacks. Every attack is built from a classifier (an nn.Module mapping [0, 1] images
to logits) and its settings, and called as `atk(x, y) -> x_adv` (torchattacks' convention)."""

from ..balls import L2Ball, LinfBall
from .apgd import APGD
from .base import Attack, classification_loss, eval_mode, is_success, predict
from .bim import BIM, IterativeLeastLikely
from .cw import CW
from .deepfool import DeepFool
from .ensemble import Ensemble
from .eot import EOT
from .fgsm import FGSM
from .latent import LatentAttack
from .onepixel import OnePixel
from .patch import AdversarialPatch
from .pgd import PGD
from .rp2 import RP2
from .spatial import Spatial
from .square import Square
from .universal import UniversalPerturbation

__all__ = [
    "Attack",
    "APGD",
    "Ensemble",
    "FGSM",
    "BIM",
    "IterativeLeastLikely",
    "PGD",
    "CW",
    "DeepFool",
    "UniversalPerturbation",
    "OnePixel",
    "Spatial",
    "Square",
    "LatentAttack",
    "LinfBall",
    "L2Ball",
    "classification_loss",
    "eval_mode",
    "is_success",
    "predict",
]
__all__ += ["EOT", "RP2", "AdversarialPatch"]
