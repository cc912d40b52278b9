"""Evaluation: linear probes on frozen codes, accuracy under attack, robustness reports."""
from .adversarial import adversarial_accuracy, clean_accuracy

__all__ = ["adversarial_accuracy", "clean_accuracy"]
