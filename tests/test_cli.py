"""The command line: every command has --help; user errors exit 2 with one line; a small end-to-end
run on sklearn's digits (train, probe, evaluate, reproduce)."""

import json
import subprocess
import sys

import pytest

from robustrep.cli import main

COMMANDS = [
    [],
    ["data"],
    ["data", "fetch"],
    ["train"],
    ["train", "vae"],
    ["train", "se"],
    ["train", "beta-vae"],
    ["probe"],
    ["evaluate"],
    ["reproduce"],
    ["reproduce", "smooth-encoders"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "robustrep")
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(cmd + ["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _run_in_process(args, capsys):
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "vae", "--dataset", "nosuchdata", "--out", "{tmp}/r"], "unknown dataset"),
        (["train", "nosuchmodel", "--out", "{tmp}/r"], "invalid choice"),
        (["probe", "{tmp}/missing"], "does not exist"),
        (["evaluate", "{tmp}/missing"], "does not exist"),
        (["evaluate", "{tmp}", "--eps", "abc"], "--eps"),
        (
            ["train", "se", "--dataset", "digits", "--arch", "conv", "--select", "magic", "--out", "{tmp}/r"],
            "select must be one of",
        ),
        (["data", "fetch", "imagenet"], "unknown dataset"),
        (["reproduce", "smooth-encoders", "--dataset", "digits", "--radii", "0.1,big", "--out", "{tmp}/r"], "--radii"),
    ],
)
def test_user_errors_exit_2_with_one_plain_line(tmp_path, args, needle, capsys):
    code, err = _run_in_process([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "robustrep.cli", "probe", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_corrupt_model_file_is_a_user_error(tmp_path, capsys):
    run = tmp_path / "vae"
    assert (
        main(
            [
                "train",
                "vae",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--latent-dim",
                "3",
                "--hidden",
                "16",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    (run / "model.safetensors").write_bytes(b"not safetensors")
    capsys.readouterr()
    assert main(["probe", str(run)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_train_probe_evaluate_end_to_end_on_digits(tmp_path, capsys):
    run = tmp_path / "se"
    assert (
        main(
            [
                "train",
                "se",
                "--dataset",
                "digits",
                "--epochs",
                "3",
                "--latent-dim",
                "8",
                "--hidden",
                "64",
                "--obs-var",
                "0.1",
                "--select-steps",
                "3",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(["train", "se", "--dataset", "digits", "--epochs", "4", "--out", str(run), "--resume", "--no-progress"])
        == 0
    )
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert main(["probe", str(run)]) == 0
    assert main(["evaluate", str(run), "--eps", "0.05,0.3", "--steps", "5", "--restarts", "2", "--n", "100"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    adv = result["adversarial"]
    assert result["nominal"] > 0.5
    # (nominal >= adversarial holds by construction.) The attack must move something, and more at 0.3
    assert adv["0.05"] >= adv["0.3"] and adv["0.3"] < result["nominal"] - 0.2
    for weaker in ("fgsm", "bim"):  # one step, or no restarts: never stronger than PGD above
        assert main(["evaluate", str(run), "--attack", weaker, "--eps", "0.05", "--steps", "5", "--n", "100"]) == 0
        assert json.loads((run / "evaluation.json").read_text())["adversarial"]["0.05"] >= adv["0.05"] - 0.05


def test_reproduce_writes_the_results_schema_and_figures(tmp_path):
    out = tmp_path / "se"
    assert (
        main(
            [
                "reproduce",
                "smooth-encoders",
                "--quick",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--n-eval",
                "60",
                "--attack-steps",
                "3",
                "--restarts",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "digits" and results["attack"]["name"] == "pgd"
    for name in ("vae", "se"):
        r = results["models"][name]
        assert set(r["adversarial"]) == {"0.01", "0.1", "0.2", "0.3"}
        acc = [r["adversarial"][e] for e in ("0.01", "0.1", "0.2", "0.3")]
        # not "<= nominal" (true by construction): larger radii break more, and 0.3 breaks something
        assert acc == sorted(acc, reverse=True) and acc[-1] < r["nominal"]
    assert results["seconds"] > 0
    prov = results["provenance"]  # how it was made: the command, the code version, the time
    assert prov["command"].startswith("robustrep reproduce smooth-encoders") and prov["code_version"] and prov["time"]
    assert (out / "robustness.png").stat().st_size > 1000 and (out / "examples.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "SE" in page
