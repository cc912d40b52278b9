"""Evaluation: linear probes on frozen codes, accuracy under attack, robustness reports."""

from . import latent_diagnostics, probe
from .adversarial import adversarial_accuracy, clean_accuracy
from .physical import transformation_robustness, viewpoint_table
from .probe import ProbedEncoder, load_classifier, train_probe
from .report import robustness_report
from .sample_metrics import density_coverage, frechet_distance, kernel_inception_distance, precision_recall
from .transfer import transfer_matrix

__all__ = [
    "adversarial_accuracy",
    "clean_accuracy",
    "probe",
    "latent_diagnostics",
    "ProbedEncoder",
    "load_classifier",
    "train_probe",
    "robustness_report",
    "transfer_matrix",
    "frechet_distance",
    "kernel_inception_distance",
    "precision_recall",
    "density_coverage",
    "transformation_robustness",
    "viewpoint_table",
]
