"""The robustness curve draws every attack a results file holds (issue 11: PGD, then the ensemble)."""

import json
from pathlib import Path

import pytest

from robustrep import plots

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_each_later_attack_is_its_own_line_with_the_files_numbers(tmp_path):
    results = {
        "models": {
            "vae": {
                "nominal": 0.9,
                "adversarial": {"0.2": 0.0, "0.1": 0.09},
                "by_attack": {"pgd": {"0.1": 0.09, "0.2": 0.0}, "ensemble": {"0.1": 0.07, "0.2": 0.0}},
            },
            "se": {"nominal": 0.8, "adversarial": {"0.1": 0.5}},  # one attack only: one line
        }
    }
    series = plots.robustness_series(results)
    assert [(name, label) for name, label, _, _ in series] == [
        ("vae", "VAE"),
        ("vae", "VAE, then ensemble"),
        ("se", "SE"),
    ]
    assert series[0][2:] == ([0.1, 0.2], [9.0, 0.0])  # sorted by radius, in percent
    assert series[1][2] == [0.1, 0.2] and series[1][3] == pytest.approx([7.0, 0.0])
    assert plots.robustness_curve(results, tmp_path / "r.png").stat().st_size > 0


def test_the_full_runs_file_gives_both_attacks_for_both_models():
    results = json.loads((RESULTS / "smooth-encoders-full.json").read_text())
    labels = [label for _, label, _, _ in plots.robustness_series(results)]
    assert labels == ["VAE", "VAE, then ensemble", "SE", "SE, then ensemble"]
