"""`robustrep reproduce generative` (issue 10): settings refused before work, and a tiny end-to-end run
(with a stand-in feature classifier, so the test need not train the real one)."""

import json

import pytest
import torch
from torch import nn

from robustrep.cli import main
from robustrep.evaluation.feature_classifier import FeatureClassifier
from robustrep.experiments import generative


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture
def fake_classifier(monkeypatch):
    info = {"test_accuracy": 0.5, "sha256": "0" * 64, "settings": {"arch": "tiny"}}
    monkeypatch.setattr(generative, "load_feature_classifier", lambda *a, **k: FeatureClassifier(Tiny(), info))


@pytest.mark.parametrize(
    "flag",
    [
        ["--epochs", "0"],
        ["--n-eval", "5"],
        ["--subset", "-1"],
        ["--width", "0"],
        ["--models", "gan,stylegan"],
        ["--models", ""],
        ["--toy-steps", "-1"],
        ["--toy-steps", "nan"],
        ["--ddim-steps", "0"],
        ["--seed", "-1"],
    ],
)
def test_bad_settings_exit_2_before_any_work(flag, tmp_path, capsys):
    try:
        code = main(["reproduce", "generative", "--quick", "--out", str(tmp_path / "r"), *flag])
    except SystemExit as stop:  # argparse's own refusal of a value that is not a number
        code = stop.code
    assert code == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # about a minute on a loaded CPU
def test_a_tiny_run_writes_results_figures_and_report(tmp_path, fake_classifier):
    out = tmp_path / "r"
    args = [
        "reproduce",
        "generative",
        "--quick",
        "--out",
        str(out),
        "--models",
        "gan,gan-saturating,ddpm",
        "--subset",
        "128",
        "--epochs",
        "2",
        "--n-eval",
        "40",
        "--toy-steps",
        "20",
        "--ddim-steps",
        "3",
        "--unet-width",
        "8",
        "--width",
        "4",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"gan", "gan-saturating", "ddpm"}
    for r in results["models"].values():
        assert {"fid", "kid", "precision", "recall", "density", "coverage", "classes_covered"} <= set(r)
    assert len(results["fid_curves"]["gan"]) == 2 and "ddpm" not in results["fid_curves"]
    assert results["models"]["gan"]["ring_modes"] == results["toys"]["ring"]["gan"]["modes"]
    assert set(results["baselines"]) == {"real-train", "pca-class-gaussian", "pca-gaussian"}
    assert results["classifier"]["sha256"] == "0" * 64
    for f in ("report.html", "fid_vs_time.png", "toys.png", "samples_ddpm.png"):
        assert (out / f).exists()
    # run again: everything is reused, nothing retrained, the same numbers
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["models"] == results["models"]


def test_the_ema_decay_fits_the_run_length():
    """0.999 over the quick budget's 282 steps would leave 75% of the initial weights in the average."""
    from robustrep.experiments.generative import ema_decay

    quick, full = ema_decay(0.999, 282), ema_decay(0.999, 18750)
    assert quick**282 < 0.01 < 0.999**282  # the quick average forgets its initialisation; 0.999 would not
    assert full == 0.999  # a long run keeps the configured decay


def test_toy_steps_0_skips_the_toys(tmp_path, fake_classifier):
    out = tmp_path / "r"
    args = ["reproduce", "generative", "--quick", "--out", str(out), "--models", "gan", "--subset", "128"]
    args += ["--epochs", "1", "--n-eval", "20", "--width", "4", "--toy-steps", "0", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["toys"] == {} and "ring_modes" not in results["models"]["gan"]
    assert not (out / "toys").exists() and not (out / "toys.png").exists()
