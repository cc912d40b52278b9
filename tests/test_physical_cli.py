"""`robustrep reproduce physical` and `robustrep evaluate --eot K` from the command line: --help, bad
values refused with exit 2 and one line before any work, and --eot on a randomised defence end to end."""

import json

import pytest

from robustrep.cli import main


def _run(args, capsys):
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    return code, capsys.readouterr().err


def test_reproduce_physical_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "physical", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--mask-share" in out and "--patch-size" in out and "--samples" in out


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--mask-share", "0"], "--mask-share"),
        (["--mask-share", "1.5"], "--mask-share"),
        (["--mask-share", "nan"], "--mask-share"),
        (["--patch-size", "30"], "larger than"),
        (["--patch-size", "-4"], "--patch-size"),
        (["--patch-sizes", "8,x"], "--patch-sizes"),
        (["--samples", "0"], "--samples"),
        (["--eps", "inf"], "--eps"),
        (["--eps", "-0.1"], "--eps"),
        (["--patch-target", "10"], "--patch-target"),
        (["--draws", "0"], "--draws"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_reproduce_physical_refuses_bad_values_before_any_work(flags, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(["reproduce", "physical", "--quick", "--out", str(out), *flags], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_evaluate_eot_refuses_bad_k(run_dir, value, capsys):
    code, err = _run(["evaluate", str(run_dir), "--eot", value, "--n", "10"], capsys)
    assert code == 2 and "--eot" in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "evaluation.json").exists()


def test_evaluate_eot_on_the_randomised_defence(run_dir, capsys):
    args = ["evaluate", str(run_dir), "--attack", "pgd", "--eps", "0.1", "--steps", "3", "--restarts", "1",
            "--n", "20", "--defense", "random-resize-pad", "--defense-low", "6"]  # fmt: skip
    assert main([*args, "--eot", "3"]) == 0
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["attack"]["eot"] == 3 and result["attack"]["defense"] == "random-resize-pad"
    assert 0 <= result["adversarial"]["0.1"] <= 1


@pytest.mark.parametrize("name", ["eot-pgd", "rp2"])
def test_physical_attacks_in_the_attack_table(run_dir, tmp_path, name):
    from safetensors.torch import load_file

    out = tmp_path / name
    assert main(["attack", str(run_dir), "--attack", name, "--n", "10", "--steps", "3", "--out", str(out)]) == 0
    assert json.loads((out / "attack.json").read_text())["n"] == 10
    saved = load_file(str(out / "adversarial.safetensors"))
    change = (saved["x_adv"] - saved["x"]).abs()
    if name == "eot-pgd":  # the default eps of `robustrep attack`
        assert change.max() <= 0.1 + 1e-6
    else:  # RP2 changes at most 15% of the 8x8 pixels
        assert ((change > 0).flatten(1).sum(1) <= round(0.15 * 64)).all()


def test_probe_runs_must_hold_probed_runs(tmp_path, capsys):
    code, err = _run(["reproduce", "physical", "--quick", "--out", str(tmp_path / "o"), "--probe-runs",
                      str(tmp_path / "missing")], capsys)  # fmt: skip
    assert code == 2 and "--probe-runs" in err and len(err.strip().splitlines()) == 1
    code, err = _run(["reproduce", "physical", "--quick", "--out", str(tmp_path / "o"), "--probe-runs", str(tmp_path)],
                     capsys)  # fmt: skip
    assert code == 2 and "no probed run" in err
