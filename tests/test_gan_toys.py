"""`robustrep reproduce gan-toys` (issue 10): settings refused before work, the probes leave training
untouched, the toys' scales round-trip, and a tiny end-to-end run (with a stand-in feature classifier)."""

import json

import pytest
import torch
from torch import nn

from robustrep import models, toys
from robustrep.cli import main
from robustrep.errors import UserError
from robustrep.evaluation.feature_classifier import FeatureClassifier
from robustrep.experiments import gan_toys
from robustrep.training import fit


@pytest.mark.parametrize(
    "flag",
    [
        ["--toy-steps", "0"],
        ["--every", "0"],
        ["--seeds", "0"],
        ["--seeds", "101"],
        ["--mnist-epochs", "-1"],
        ["--mnist-lr", "0"],
        ["--mnist-lr", "nan"],
        ["--mnist-lr", "inf"],
        ["--n-eval", "5"],
        ["--hidden", "0"],
        ["--subset", "-3"],
        ["--models", "gan,stylegan"],
        ["--models", "gan,gan"],
        ["--models", ""],
        ["--toys", "ring,moons"],
        ["--toys", ","],
        ["--seed", "-1"],
        ["--toy-steps", "nan"],
    ],
)
def test_bad_settings_exit_2_with_one_line_before_any_work(flag, tmp_path, capsys):
    try:
        code = main(["reproduce", "gan-toys", "--quick", "--out", str(tmp_path / "r"), *flag])
    except SystemExit as stop:  # argparse's own refusal (a value that is not a number)
        code = stop.code
    assert code == 2
    assert not (tmp_path / "r").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1


def test_help_names_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "gan-toys", "--help"])
    text = capsys.readouterr().out
    for flag in ("--toy-steps", "--every", "--seeds", "--mnist-epochs", "--mnist-lr", "--models", "--toys"):
        assert flag in text


def test_the_probes_do_not_change_training():
    """The same weights with and without probes every epoch when the probe draws its own seeded noise (as
    the experiment's do); a probe drawing from the global stream would change them (the test can fail)."""
    X = toys.to_unit(toys.ring(512, seed=0)[0], toys.SCALES["ring"])

    def train(probe_kind):
        torch.manual_seed(0)
        model = models.build("gan", input_shape=[2, 1, 1], hidden=8, noise_dim=4)
        if probe_kind is None:
            fit(model, X, epochs=3, batch_size=128, seed=0, progress=False, lr_schedule="linear")
        else:

            def probe(step):
                g = torch.Generator().manual_seed(1) if probe_kind == "own" else None
                return [step, float(model.sample(7, generator=g).sum())]

            seen = gan_toys.train_with_probes(model, X, 3, 128, 0, "cpu", probe, 1, "linear")
            assert [p[0] for p in seen] == [4, 8, 12]  # after epochs 1, 2 and 3 (4 steps each)
            assert not hasattr(model, "on_epoch_start")  # the hook is removed afterwards
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = train(None)
    torch.testing.assert_close(train("own"), plain, rtol=0, atol=0)
    assert not torch.equal(train("global"), plain)


def test_each_toy_scale_holds_its_toy_and_round_trips():
    for name, make in gan_toys.TOYS.items():
        X, centres, std = make(2000)
        u = toys.to_unit(X, toys.SCALES[name])
        assert u.min() > 0.02 and u.max() < 0.98  # nothing clamped: the whole toy fits the scale
        torch.testing.assert_close(toys.from_unit(u, toys.SCALES[name]), X)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UserError):
            toys.to_unit(X, bad)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def test_a_tiny_run_writes_curves_figures_and_report(tmp_path, monkeypatch):
    info = {"test_accuracy": 0.5, "sha256": "0" * 64, "settings": {"arch": "tiny"}}
    monkeypatch.setattr(gan_toys, "load_feature_classifier", lambda *a, **k: FeatureClassifier(Tiny(), info))
    out = tmp_path / "r"
    args = ["reproduce", "gan-toys", "--quick", "--out", str(out), "--toy-steps", "160", "--every", "79"]
    args += ["--seeds", "2", "--models", "gan,wgan-gp", "--toys", "ring", "--mnist-epochs", "1"]
    args += ["--subset", "128", "--n-eval", "20", "--hidden", "8", "--threads", "1"]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["toys"]["ring"]) == {"gan", "wgan-gp"} and set(r["toys"]["ring"]["gan"]) == {"0", "1"}
    curve = r["toys"]["ring"]["gan"]["0"]["curve"]
    assert [p[0] for p in curve] == [79, 158, 237]  # 3 epochs of 79 steps, probed after each
    s = r["summary"]["ring"]["gan"]
    assert s["final_modes"] == [r["toys"]["ring"]["gan"][k]["curve"][-1][1] for k in ("0", "1")] and s["of"] == 8
    for loss in ("non-saturating", "saturating"):
        c = r["mnist"][loss]["curve"]
        assert [p[0] for p in c] == [0, 2] and all(p[1] > 0 for p in c)  # before training and after 1 epoch
    # the same initialisation, noise and batches: the two losses differ only after the first generator step
    assert r["mnist"]["non-saturating"]["curve"][0] == r["mnist"]["saturating"]["curve"][0]
    assert "provenance" in r
    for f in ("report.html", "curves.png", "toys.png"):
        assert (out / f).exists()
