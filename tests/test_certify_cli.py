"""End to end on sklearn's digits (no download): train a provably robust classifier from the command
line, certify it, and run the Table-1 reproduction with a tiny budget; certified <= PGD <= clean."""

from __future__ import annotations

import json

import pytest

import robustrep as rr
from robustrep.cli import main


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "robust"
    rc = main(
        [
            "train",
            "classifier",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--hidden",
            "64",
            "--robust",
            "dual",
            "--eps",
            "0.05",
            "--eps-start",
            "0.01",
            "--warmup-epochs",
            "2",
            "--epochs",
            "4",
            "--batch-size",
            "64",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    return out


def test_train_certify_table_is_ordered(robust_run, capsys):
    rc = main(
        [
            "certify",
            str(robust_run),
            "--eps",
            "0.02,0.05",
            "--method",
            "dual,ibp",
            "--n",
            "150",
            "--steps",
            "20",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    result = json.loads((robust_run / "certify.json").read_text())
    assert result["n"] == 150
    for _eps, row in result["eps"].items():
        assert max(row["certified"].values()) <= row["pgd"] <= result["clean"]
    assert result["eps"]["0.05"]["certified"]["dual"] <= result["eps"]["0.02"]["certified"]["dual"]
    assert result["eps"]["0.02"]["certified"]["dual"] > 0.2  # robust training did certify something
    assert "cert-dual" in capsys.readouterr().out


def test_robust_training_certifies_more_than_normal_training(robust_run, tmp_path):
    rc = main(
        [
            "train",
            "classifier",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--hidden",
            "64",
            "--epochs",
            "4",
            "--batch-size",
            "64",
            "--out",
            str(tmp_path / "normal"),
            "--no-progress",
        ]
    )
    assert rc == 0
    X, y = rr.data.load("digits", "test")
    X, y = X[:150], y[:150]
    from robustrep.runs import load_classifier

    robust, normal = load_classifier(robust_run), load_classifier(tmp_path / "normal")
    eps_seen = [json.loads(line)["eps"] for line in (robust_run / "metrics.jsonl").read_text().splitlines()]
    assert eps_seen == pytest.approx([0.01, 0.05, 0.05, 0.05])  # the warm-up schedule, epoch by epoch
    assert rr.certify.certified_accuracy(robust, X, y, 0.05) > rr.certify.certified_accuracy(normal, X, y, 0.05)


def test_certify_errors_are_one_line(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "missing")]) == 2
    assert main(["certify", str(tmp_path), "--method", "crown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("robustrep certify: error:") for line in err)


def test_reproduce_wong_kolter_smoke(tmp_path, capsys):
    out = tmp_path / "wk"
    rc = main(
        [
            "reproduce",
            "wong-kolter",
            "--quick",
            "--dataset",
            "digits",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--subset",
            "400",
            "--n-eval",
            "100",
            "--pgd-steps",
            "10",
            "--fig6-subset",
            "200",
            "--fig6-epochs",
            "1",
            "--fig6-n-eval",
            "60",
            "--fig6-steps",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for row in res["table1"]["models"].values():
        assert row["test_error"] <= row["pgd_error"] <= row["robust_error_bound"]
    assert (out / "table1.png").exists() and (out / "figure6.png").exists()
    assert len(res["figure6"]["curves"]) == 3
    assert "paper" in capsys.readouterr().out


def test_certify_refuses_a_front_end_model_before_attacking(tmp_path, capsys):
    out = tmp_path / "front"
    assert (
        main(
            [
                "train",
                "classifier",
                "--dataset",
                "digits",
                "--arch",
                "mlp",
                "--front-end",
                "haar",
                "--front-k",
                "16",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["certify", str(out), "--n", "20"]) == 2
    assert "SparsifyingFrontEnd" in capsys.readouterr().err
    assert main(["certify", str(out), "--n", "20", "--method", "theorem2"]) == 2  # not 1-Lipschitz either


def test_robust_training_resumes_on_the_schedule(tmp_path):
    out = tmp_path / "resume"
    common = ["--no-progress"]
    assert (
        main(
            [
                "train",
                "classifier",
                "--dataset",
                "digits",
                "--arch",
                "mlp",
                "--hidden",
                "32",
                "--robust",
                "ibp",
                "--eps",
                "0.05",
                "--eps-start",
                "0.01",
                "--warmup-epochs",
                "3",
                "--epochs",
                "2",
                "--subset",
                "300",
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    assert main(["train", "classifier", "--out", str(out), "--resume", "--epochs", "4", *common]) == 0
    eps_seen = [json.loads(line)["eps"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert eps_seen == pytest.approx([0.01, 0.03, 0.05, 0.05])
