"""The attack ensemble (APGD-CE, APGD-T, Square on the points left): AutoAttack (pyautoattack) as the
oracle on the same model and points, the hand-over between stages, and the black-box stage catching a
model whose gradients are masked."""

import warnings

import pytest
import torch
from torch import nn

from robustrep.attacks import APGD, PGD, Attack, Ensemble, Square
from robustrep.errors import UserError
from test_apgd import train_digits_mlp


@pytest.fixture(scope="module")
def trained():
    model, x, y = train_digits_mlp()
    return model, x[:100], y[:100]


def survived(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def autoattack(model, x, y, eps, version, attacks=None):
    pyautoattack = pytest.importorskip("pyautoattack")
    aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version=version, attacks=attacks, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_at_least_as_strong_as_autoattacks_apgd_subset(trained, eps):
    """AutoAttack's APGD-CE + APGD-T (its 'custom' version with those two): ours breaks at least as many."""
    model, x, y = trained
    torch.manual_seed(0)
    ours = survived(model, Ensemble(model, eps=eps, queries=0)(x, y), y).float().mean()
    theirs = survived(model, autoattack(model, x, y, eps, "custom", ["apgd-ce", "apgd-t"]), y).float().mean()
    assert 0.05 < theirs < 0.95
    assert ours <= theirs


@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_at_least_as_strong_as_autoattack_standard(trained, eps):
    """AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square 5000): ours is at least as strong."""
    model, x, y = trained
    torch.manual_seed(0)
    ours = survived(model, Ensemble(model, eps=eps)(x, y), y).float().mean()
    theirs = survived(model, autoattack(model, x, y, eps, "standard"), y).float().mean()
    assert ours <= theirs


class Recorder(Attack):
    """Records which points it was asked to attack and breaks none."""

    def __init__(self, model):
        super().__init__(model)
        self.seen = []

    def run(self, x, y, target=None):
        self.seen.append(x.clone())
        return x


def test_each_stage_attacks_only_the_points_left(trained):
    model, x, y = trained
    y = y.clone()
    y[:5] = (y[:5] + 1) % 10  # five points the model gets wrong on clean input
    first = PGD(model, eps=0.1, steps=20)
    rec = Recorder(model)
    torch.manual_seed(0)
    ens = Ensemble(model, attacks=[("pgd", first), ("rec", rec)])
    x_adv = ens(x, y)
    left = survived(model, x_adv, y)
    # the recorder saw exactly the points that were right on clean input and that PGD left standing
    assert len(rec.seen) == 1 and len(rec.seen[0]) == int(left.sum())
    assert ens.broken_by["clean"] == 5 and ens.broken_by["rec"] == 0 and set(ens.seconds) == {"pgd", "rec"}
    assert ens.broken_by["clean"] + ens.broken_by["pgd"] + int(left.sum()) == len(x)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_an_ensemble_with_pgd_breaks_every_point_pgd_breaks(trained):
    model, x, y = trained
    torch.manual_seed(0)
    pgd_left = survived(model, PGD(model, eps=0.05, steps=20)(x, y), y)
    torch.manual_seed(0)
    atks = [("pgd", PGD(model, eps=0.05, steps=20)), ("apgd-ce", APGD(model, eps=0.05, steps=20))]
    ens_left = survived(model, Ensemble(model, attacks=atks)(x, y), y)
    assert not (ens_left & ~pgd_left).any() and ens_left.sum() <= pgd_left.sum()


class Rounded(nn.Module):
    """Input quantised to 8 levels before an MLP: the gradient is zero almost everywhere (masked)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x * 7).round() / 7)


def test_the_black_box_stage_catches_masked_gradients(trained):
    model, x, y = trained
    masked = Rounded(model)
    with torch.no_grad():
        ok = masked(x).argmax(1) == y
    x, y = x[ok][:40], y[ok][:40]
    torch.manual_seed(0)
    ens = Ensemble(masked, eps=0.15, steps=20, targets=2, queries=300)
    left = survived(masked, ens(x, y), y)
    assert ens.broken_by["apgd-ce"] == ens.broken_by["apgd-t"] == 0  # no gradient: both APGDs are blind
    assert ens.broken_by["square"] >= 0.3 * len(x) and left.sum() == len(x) - ens.broken_by["square"]


def test_l2_has_no_square_stage_and_bad_settings_are_refused(trained):
    model, x, y = trained
    assert Ensemble(model, eps=0.1)(x[:0], y[:0]).shape == x[:0].shape  # an empty batch is no error
    assert [n for n, _ in Ensemble(model, eps=0.5, norm="l2").attacks] == ["apgd-ce", "apgd-t"]
    assert isinstance(Ensemble(model, eps=0.1).attacks[2][1], Square)
    for kwargs in (
        dict(eps=float("nan")),
        dict(eps=-1.0),
        dict(eps=float("inf")),
        dict(queries=-1),
        dict(queries=1.5),
        dict(steps=0),
        dict(targets=0),
        dict(norm="l1"),
        dict(attacks=[]),
        dict(attacks=[("pgd", "not an attack")]),
    ):
        with pytest.raises(UserError):
            Ensemble(model, **kwargs)
