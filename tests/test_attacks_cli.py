"""`robustrep attack` end to end on a tiny digits classifier run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from robustrep.cli import main
from robustrep.runs import load_classifier


@pytest.mark.parametrize(
    "name,extra",
    [("pgd", ["--eps", "0.1", "--steps", "10"]), ("deepfool", []), ("square", ["--eps", "0.1", "--queries", "50"])],
)
def test_attack_command_writes_table_examples_and_figure(run_dir, tmp_path, capsys, name, extra):
    out = tmp_path / name
    assert main(["attack", str(run_dir), "--attack", name, "--n", "60", "--out", str(out), *extra]) == 0
    table = capsys.readouterr().out
    assert "adversarial accuracy" in table and "success rate" in table
    result = json.loads((out / "attack.json").read_text())
    saved = load_file(str(out / "adversarial.safetensors"))
    # the reported numbers are those of the saved examples, re-predicted here by the run's classifier
    classifier = load_classifier(run_dir)
    with torch.no_grad():
        pred, pred_adv = classifier(saved["x"]).argmax(1), classifier(saved["x_adv"]).argmax(1)
    assert torch.equal(pred_adv, saved["pred_adv"]) and torch.equal(pred, saved["pred"])
    y = saved["y"]
    assert result["n"] == 60 and result["clean_accuracy"] == pytest.approx(float((pred == y).float().mean()))
    assert result["adversarial_accuracy"] == pytest.approx(float(((pred == y) & (pred_adv == y)).float().mean()))
    assert saved["x_adv"].shape == saved["x"].shape == (60, 1, 8, 8)
    assert saved["x_adv"].min() >= 0 and saved["x_adv"].max() <= 1
    if name in ("pgd", "square"):
        assert (saved["x_adv"] - saved["x"]).abs().max() <= 0.1 + 1e-6
    if name == "deepfool":
        assert result["success_rate"] == 1.0 and 0 < result["rho_adv"] < 1
    assert (out / "attack.png").stat().st_size > 1000


def test_attack_command_user_errors(run_dir, tmp_path, capsys):
    assert main(["attack", str(run_dir), "--attack", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown attack" in capsys.readouterr().err
    assert main(["attack", str(tmp_path / "missing"), "--attack", "pgd"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["attack", str(run_dir), "--attack", "pgd", "--norm", "l3", "--out", str(tmp_path)]) == 2
