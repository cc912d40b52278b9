"""Evaluation: linear probes on frozen codes, accuracy under attack, robustness reports."""
from . import probe
from .adversarial import adversarial_accuracy, clean_accuracy
from .probe import ProbedEncoder, train_probe
from .report import robustness_report
from .transfer import transfer_matrix

__all__ = ["adversarial_accuracy", "clean_accuracy", "probe", "ProbedEncoder", "train_probe",
           "robustness_report", "transfer_matrix"]
