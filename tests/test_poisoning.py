"""rr.poisoning: label flips and the backdoor trigger change exactly what they say, spectral scores equal a
numpy SVD, detection finds planted outliers, a backdoored model obeys its trigger (and a clean one does
not), and `reproduce poisoning` runs end to end; bad values are user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import robustrep as rr
from robustrep import poisoning
from robustrep.cli import main
from robustrep.errors import UserError


def labels(n=1000, k=10, seed=0):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


def test_random_flips_change_exactly_the_fraction_to_other_classes():
    y = labels()
    y2, idx = poisoning.flip_labels(y, 0.07, 10, generator=torch.Generator().manual_seed(1))
    changed = (y2 != y).nonzero().flatten()
    assert len(idx) == 70 and torch.equal(changed, idx)  # every picked label moved, no other
    counts = torch.bincount((y2[idx] - y[idx]) % 10, minlength=10)
    assert counts[0] == 0 and (counts[1:] > 0).sum() >= 7  # spread over the other classes
    again, idx2 = poisoning.flip_labels(y, 0.07, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, y2) and torch.equal(idx, idx2)


def test_targeted_flips_move_source_to_target_only_and_cap_at_the_source_class():
    y = labels()
    y2, idx = poisoning.flip_labels(y, 0.03, 10, source=7, target=1, generator=torch.Generator().manual_seed(0))
    assert len(idx) == 30 and (y[idx] == 7).all() and (y2[idx] == 1).all()
    assert torch.equal((y2 != y).nonzero().flatten(), idx)
    y3, idx3 = poisoning.flip_labels(y, 0.9, 10, source=7, target=1)
    assert len(idx3) == int((y == 7).sum()) and not (y3 == 7).any()


def test_trigger_sets_only_its_square_and_stays_in_the_unit_box():
    x = torch.rand(4, 3, 12, 10)
    t = poisoning.add_trigger(x, size=3, value=1.0, corner="bottom-right", margin=1)
    assert (t[..., 8:11, 6:9] == 1.0).all()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., 8:11, 6:9] = False
    assert torch.equal(t[mask], x[mask]) and t.min() >= 0 and t.max() <= 1
    tl = poisoning.add_trigger(x, size=2, value=0.0, corner="top-left", margin=0)
    assert (tl[..., :2, :2] == 0).all() and torch.equal(tl[..., 2:, :], x[..., 2:, :])


def test_backdoor_poisons_the_fraction_from_other_classes():
    X, y = torch.rand(500, 1, 8, 8), labels(500)
    X2, y2, idx = poisoning.backdoor(X, y, 0.1, target=3, generator=torch.Generator().manual_seed(0), size=2)
    assert len(idx) == 50 and (y[idx] != 3).all() and (y2[idx] == 3).all()
    assert torch.equal(X2[idx], poisoning.add_trigger(X[idx], size=2))
    rest = torch.ones(500, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(X2[rest], X[rest]) and torch.equal(y2[rest], y[rest])


def test_spectral_scores_equal_numpy_svd():
    f = torch.randn(60, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = f.numpy() - f.numpy().mean(0)
    v = np.linalg.svd(c, full_matrices=False)[2][0]
    assert np.allclose(poisoning.spectral_scores(f).numpy(), (c @ v) ** 2, atol=1e-10)


def test_spectral_detection_finds_planted_shifted_points():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(400, 20, generator=g)
    lab = torch.arange(400) % 2
    planted = torch.tensor([1, 3, 5, 7, 9, 11, 13, 15, 17, 19])  # 10 of the 200 in class 1
    feats[planted] += 6.0 * torch.nn.functional.normalize(torch.ones(20), dim=0)
    flagged = poisoning.spectral_detect(feats, lab, 10 / 200)  # epsilon of the poisoned class
    rates = poisoning.detection_rates(flagged, planted)
    assert rates["recall"] == 1.0 and rates["poisoned"] == 10
    assert rates["flagged"] == 2 * 15  # ceil(1.5 * 0.05 * 200) per class
    only = poisoning.detection_rates(poisoning.spectral_detect(feats, lab, 10 / 200, classes=[1]), planted)
    assert only["recall"] == 1.0 and only["flagged"] == 15 and only["precision"] == 10 / 15


def test_backdoored_model_obeys_its_trigger_and_a_clean_one_does_not():
    X, y = rr.data.load("digits", "train")
    Xt, yt = rr.data.load("digits", "test")
    rates = {}
    for fraction in (0.0, 0.15):
        Xp, yp, _ = poisoning.backdoor(X, y, fraction, target=0, generator=torch.Generator().manual_seed(0), size=2)
        torch.manual_seed(0)
        net = rr.models.build("classifier", input_shape=[1, 8, 8], arch="mlp", hidden="64").net
        opt = torch.optim.Adam(net.parameters(), lr=5e-3)
        for _ in range(12):
            for idx in torch.randperm(len(X)).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(Xp[idx]), yp[idx]).backward()
                opt.step()
        rates[fraction] = (
            poisoning.attack_success_rate(net, Xt, yt, 0, trigger={"size": 2}),
            rr.evaluation.clean_accuracy(net, Xt, yt),
        )
    assert rates[0.15][0] > 0.8 and rates[0.0][0] < 0.2, rates
    assert rates[0.15][1] > rates[0.0][1] - 0.05  # clean accuracy barely moves


def test_attack_success_rate_counts_what_it_says():
    class Const(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.c), 10).float()

    x, y = torch.rand(50, 1, 8, 8), labels(50)
    assert poisoning.attack_success_rate(Const(4), x, y, 4, trigger={}) == 1.0
    assert poisoning.attack_success_rate(Const(5), x, y, 4, trigger={}) == 0.0
    assert poisoning.attack_success_rate(Const(4), x, y, 4, source=int(y[0])) == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: poisoning.flip_labels(labels(), -0.1, 10),
        lambda: poisoning.flip_labels(labels(), 1.5, 10),
        lambda: poisoning.flip_labels(labels(), float("nan"), 10),
        lambda: poisoning.flip_labels(labels(), 0.1, 10, source=3),
        lambda: poisoning.flip_labels(labels(), 0.1, 10, source=3, target=3),
        lambda: poisoning.flip_labels(labels(), 0.1, 10, source=3, target=10),
        lambda: poisoning.flip_labels(labels().float(), 0.1, 10),
        lambda: poisoning.add_trigger(torch.rand(2, 1, 8, 8), size=0),
        lambda: poisoning.add_trigger(torch.rand(2, 1, 8, 8), size=8),
        lambda: poisoning.add_trigger(torch.rand(2, 1, 8, 8), value=2.0),
        lambda: poisoning.add_trigger(torch.rand(2, 1, 8, 8), corner="middle"),
        lambda: poisoning.backdoor(torch.rand(10, 1, 8, 8), labels(10), 0.1, target=-1),
        lambda: poisoning.backdoor(torch.rand(10, 1, 8, 8) + 1, labels(10), 0.1, target=1),
        lambda: poisoning.spectral_detect(torch.rand(10, 3), labels(10), float("inf")),
        lambda: poisoning.spectral_scores(torch.rand(1, 3)),
    ],
)
def test_bad_values_are_user_errors(call):
    with pytest.raises(UserError):
        call()


SMALL = [
    "reproduce",
    "poisoning",
    "--quick",
    "--dataset",
    "digits",
    "--epochs",
    "2",
    "--fractions",
    "0,0.1",
    "--hidden",
    "32",
    "--no-progress",
]


def test_reproduce_poisoning_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "p"
    assert main([*SMALL, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["attacks"]) == {"random-flip", "targeted-flip", "backdoor"}
    for attack, rows in res["attacks"].items():
        assert set(rows) == {"0", "0.1"} and rows["0"]["poisoned"] == 0
        assert ("detection" in rows["0.1"]) == (attack != "random-flip")
    assert res["attacks"]["backdoor"]["0.1"]["poisoned"] == round(0.1 * res["n_train"])
    assert (out / "poisoning.png").exists() and (out / "report.html").exists()
    assert "backdoor" in capsys.readouterr().out
    assert main([*SMALL, "--out", str(out)]) == 0  # reuses the trained models
    assert json.loads((out / "results.json").read_text())["attacks"] == res["attacks"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--fractions", "0,1.5"],
        ["--fractions", "x"],
        ["--fractions", "nan"],
        ["--source", "1"],
        ["--target", "10"],
        ["--trigger-size", "0"],
        ["--epochs", "0"],
        ["--arch", "lenet"],
        ["--hidden", "0"],
    ],
)
def test_reproduce_poisoning_refuses_bad_values_before_work(tmp_path, capsys, bad):
    out = tmp_path / "bad"
    assert main([*SMALL, "--out", str(out), *bad]) == 2
    assert not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
