"""Adversarial attacks. Every attack is built from a classifier (an nn.Module mapping [0, 1] images
to logits) and its settings, and called as `atk(x, y) -> x_adv` (torchattacks' convention)."""
from .base import Attack, classification_loss, eval_mode, is_success, predict
from .norms import L2Ball, LinfBall
from .pgd import PGD

__all__ = ["Attack", "PGD", "LinfBall", "L2Ball", "classification_loss", "eval_mode", "is_success", "predict"]
