"""The smooth-encoder figures (Cemgil et al. 2020, Figures 4, 5, 7a, 7b) end to end on sklearn's digits
with a tiny budget: results schema, the variants each figure promises, accuracies that the saved run
folders reproduce, figures and report, resume without retraining, and bad flags refused before work."""

from __future__ import annotations

import json

import pytest
import torch

from robustrep import data
from robustrep.cli import main
from robustrep.evaluation import clean_accuracy
from robustrep.evaluation.probe import ProbedEncoder, load_probe
from robustrep.runs import load_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # tiny encoders collapse, and say so

TINY = [
    "--quick",
    "--epochs",
    "1",
    "--n-eval",
    "40",
    "--attack-steps",
    "2",
    "--restarts",
    "1",
    "--radii",
    "0.1,0.3",
    "--select-steps",
    "1",
    "--latent-dim",
    "4",
    "--no-progress",
]


def _run(tmp_path, name: str, *flags: str, dataset: str = "digits") -> tuple[dict, object]:
    out = tmp_path / name
    assert main(["reproduce", name, "--dataset", dataset, *TINY, *flags, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), out


def _check_common(results: dict, out, figure: str, png: str, labels: set[str], tasks=("digit",)) -> None:
    s = results["settings"]
    assert results["figure"] == figure and set(results["tasks"]) == set(tasks) and results["n_eval"] == 40
    assert set(results["models"]) == labels and results["seconds"] > 0
    X, _ = data.load(s["dataset"], "test", task=tasks[0])
    Xe, _ = data.random_subset(X, torch.zeros(len(X), dtype=torch.long), s["n_eval"], s["seed"])
    for task in tasks:
        _, yt = data.load(s["dataset"], "test", task=task)
        _, ye = data.random_subset(X, yt, s["n_eval"], s["seed"])
        for label in labels:
            r = results["tasks"][task][label]
            assert set(r["adversarial"]) == {"0.1", "0.3"}
            assert r["adversarial"]["0.3"] <= r["adversarial"]["0.1"] + 1e-9 or "warning" in r
            # the run folder holds the very encoder and probe that were scored
            run_dir = out / label
            probe_dir = run_dir if task == tasks[0] else run_dir / f"probe-{task}"
            clf = ProbedEncoder(load_model(run_dir), load_probe(probe_dir)).eval()
            assert clean_accuracy(clf, Xe[:], ye) == pytest.approx(r["nominal"])
    assert (out / png).stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and f"Figure {figure}" in page
    assert not (out / "results.partial.json").exists() or json.loads((out / "results.partial.json").read_text())


def test_fig7a_random_vs_pgd_selection_and_resume(tmp_path, monkeypatch):
    chain = ("--attack", "pgd,ensemble", "--ensemble-queries", "20")  # the ensemble on the points PGD left
    results, out = _run(tmp_path, "se-fig7a", *chain)
    _check_common(results, out, "7a", "selection.png", {"vae", "se-random", "se-pgd"})
    assert list(results["attacks"]) == ["pgd", "ensemble"] and results["attack"]["name"] == "pgd"
    for r in results["tasks"]["digit"].values():
        assert set(r["by_attack"]) == {"pgd", "ensemble"} and r["by_attack"]["pgd"] == r["adversarial"]
    assert "(ens.)" in (out / "report.html").read_text()
    assert results["models"]["se-random"]["hparams"]["select"] == "random"
    assert results["models"]["se-pgd"]["hparams"]["select"] == "pgd"
    assert results["models"]["se-pgd"]["code_nats"] >= 0 and "code_nats" not in results["models"]["vae"]

    import robustrep.training as training  # every reproduction trains through training.fit_or_reuse

    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("a finished model was trained again"))
    again, _ = _run(tmp_path, "se-fig7a", *chain)
    assert again["tasks"] == results["tasks"]  # the same models, probes and seeded attacks


@pytest.mark.slow  # five encoders; fig7a covers the same machinery in the default run
def test_fig7b_selection_budgets(tmp_path):
    results, out = _run(tmp_path, "se-fig7b", "--budgets", "0,2")
    _check_common(results, out, "7b", "budget.png", {"vae", "se-L0", "se-L2"})
    assert [results["models"][f"se-L{L}"]["hparams"]["select_steps"] for L in (0, 2)] == [0, 2]


@pytest.mark.slow  # six encoders, or probes on 7 x 1347 images: about a minute on 2 busy cores
def test_fig5_architectures_and_selection_radii(tmp_path):
    results, out = _run(tmp_path, "se-fig5", "--select-radii", "0.05,0.2", "--archs", "mlp,conv")
    labels = {"vae-mlp", "vae-conv", "se-mlp-0.05", "se-mlp-0.2", "se-conv-0.05", "se-conv-0.2"}
    _check_common(results, out, "5", "radii.png", labels)
    for label in labels:
        hp = results["models"][label]["hparams"]
        assert hp["arch"] == label.split("-")[1]
        if label.startswith("se"):
            assert hp["select_eps"] == float(label.split("-")[2]) and hp["select_steps"] == 1


@pytest.mark.slow  # six encoders, or probes on 7 x 1347 images: about a minute on 2 busy cores
def test_fig4_color_digit_and_colour_tasks(tmp_path):
    results, out = _run(tmp_path, "se-fig4", "--select-radii", "0.1", dataset="color-digits")
    _check_common(results, out, "4", "color-mnist.png", {"vae", "se-0.1"}, tasks=("digit", "color"))
    assert all(m["hparams"]["arch"] == "conv" for m in results["models"].values())


@pytest.mark.slow  # two encoders and four probes attacked: about 20 s on 2 busy cores
def test_fig8_label_efficiency(tmp_path):
    results, out = _run(tmp_path, "se-fig8", "--tasks", "digit", "--label-percents", "5,100", "--arch", "mlp")
    _check_common(results, out, "8", "label-efficiency.png", {"vae", "se"})
    n_train = len(data.load("digits", "train")[1])
    for label in ("vae", "se"):
        curve = results["label_efficiency"]["digit"][label]
        assert curve["5.0"]["n_labels"] == -(-5 * n_train // 100) and curve["100.0"]["n_labels"] == n_train
        assert set(curve["5.0"]["adversarial"]) == {"0.1", "0.3"}
        # all the labels in another order: the same convex problem as the all-label probe, so the same accuracy
        assert (
            abs(curve["100.0"]["nominal"] - results["tasks"]["digit"][label]["nominal"]) <= 1 / 40 + 1e-6
        )  # L-BFGS on a permuted sum: one point


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["se-fig7b", "--budgets", "1,x"], "--budgets"),
        (["se-fig7b", "--budgets", "1,1"], "--budgets"),
        (["se-fig7b", "--budgets", "-1"], "--budgets"),
        (["se-fig5", "--archs", "mlp,rnn"], "--archs"),
        (["se-fig5", "--select-radii", "0.1,2"], "--select-radii"),
        (["se-fig5", "--select-radii", "nan"], "--select-radii"),
        (["se-fig4", "--select-radii", ""], "--select-radii"),
        (["se-fig7a", "--gamma", "nan"], "--gamma"),
        (["se-fig7a", "--obs-var", "0"], "--obs-var"),
        (["se-fig7a", "--epochs", "-1"], "--epochs"),
        (["se-fig7a", "--n-eval", "-5"], "--n-eval"),
        (["se-fig7a", "--restarts", "0"], "--restarts"),
        (["se-fig7a", "--select-eps", "inf"], "--select-eps"),
        (["se-fig7a", "--radii", "0.1,2"], "--radii"),
        (["se-fig7a", "--seed", "-1"], "--seed"),
        (["se-fig7a", "--attack", "fgsm"], "--attack"),
        (["se-fig7a", "--ensemble-queries", "-1"], "--ensemble-queries"),
        (["se-fig8", "--label-percents", "0,10"], "--label-percents"),
        (["se-fig8", "--label-percents", "150"], "--label-percents"),
        (["se-fig8", "--tasks", "digit,color"], "has no task"),
    ],
)
def test_bad_flags_are_refused_before_any_work(tmp_path, capsys, argv, flag):
    out = tmp_path / "never"
    dataset = "color-digits" if argv[0] == "se-fig4" else "digits"
    assert main(["reproduce", *argv, "--dataset", dataset, "--out", str(out)]) == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


def test_color_digits_is_digits_in_the_seven_colours():
    gray, digit = data.load("digits", "test")
    X, y_digit = data.load("color-digits", "test", task="digit")
    _, y_color = data.load("color-digits", "test", task="color")
    assert X.shape == (7 * len(gray), 3, 8, 8) and data.num_classes("color-digits", "color") == 7
    assert torch.equal(y_digit, digit.repeat_interleave(7)) and torch.equal(y_color[:14], torch.arange(14) % 7)
    white = X[torch.arange(len(gray)) * 7 + 6]  # colour 6 is white: every channel is the grey digit
    assert (white - gray.expand(-1, 3, -1, -1)).abs().max() <= 1 / 510 + 1e-6
