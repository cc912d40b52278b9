"""Evaluation: linear probes on frozen codes, accuracy under attack, robustness reports."""
from .adversarial import adversarial_accuracy, clean_accuracy

__all__ = ["adversarial_accuracy", "clean_accuracy"]
from .report import robustness_report  # noqa: E402
from .transfer import transfer_matrix  # noqa: E402

__all__ += ["robustness_report", "transfer_matrix"]
