"""APGD (Croce & Hein 2020): the checkpoint schedule against the paper's formula, the DLR losses against
hand computations, the step-size halving against its two conditions recomputed from the losses, the
authors' own implementation (pyautoattack) as an oracle, and strength where PGD is known to be weak."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from robustrep.attacks import APGD, PGD
from robustrep.attacks.apgd import checkpoints, dlr_loss, targeted_dlr_loss
from robustrep.attacks.registry import make_attack
from robustrep.cli import main
from robustrep.errors import UserError


def train_digits_mlp():
    """An MLP 64-64-10 trained for a few seconds on sklearn's 8x8 digits, and 200 test points it gets right."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.int64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1500]), y[:1500]).backward()
        opt.step()
    model.eval()
    xt, yt = x[1500:], y[1500:]
    with torch.no_grad():
        ok = model(xt).argmax(1) == yt
    return model, xt[ok][:200], yt[ok][:200]


class Scaled(nn.Module):
    """Logits times a large constant: the softmax saturates, cross-entropy gradients vanish in float32
    (gradient masking), and a CE attack stalls; the DLR loss is scale-invariant and does not."""

    def __init__(self, model, c):
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x):
        return self.model(x) * self.c


@pytest.fixture(scope="module")
def trained():
    return train_digits_mlp()


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ---- the schedule and the losses -----------------------------------------------------------------


def test_checkpoints_follow_the_papers_formula():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), by hand:
    # 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 37, 50, 200, 1000):
        p = [0.0, 0.22]
        while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1 + 1e-9:
            p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        expected = sorted({math.ceil(q * n - 1e-9) for q in p[1:]} - {0})
        assert checkpoints(n) == [w for w in expected if w <= n]


def test_dlr_losses_against_hand_computation():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # sorted logits 3, 2, 1, 0: denominator z_pi1 - z_pi3 = 3 - 1 = 2
    assert dlr_loss(z, torch.tensor([0, 2])).tolist() == pytest.approx([-(3 - 2) / 2, -(2 - 3) / 2])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 0) / (3 - 0.5)
    assert targeted_dlr_loss(z[:1], torch.tensor([0]), torch.tensor([3])).item() == pytest.approx(-3 / 2.5)
    # invariant to shifting and positive scaling of the logits (the point of DLR)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 10, generator=g)
    y, t = torch.randint(0, 10, (50,), generator=g), torch.randint(0, 10, (50,), generator=g)
    assert torch.allclose(dlr_loss(7 * z + 3, y), dlr_loss(z, y), atol=1e-5)
    assert torch.allclose(targeted_dlr_loss(7 * z + 3, y, t), targeted_dlr_loss(z, y, t), atol=1e-5)
    # untargeted DLR is positive exactly when the point is misclassified
    assert torch.equal(dlr_loss(z, y) > 0, z.argmax(1) != y)


def test_step_size_halves_only_at_checkpoints_under_the_papers_conditions(trained):
    model, x, y = trained
    atk = APGD(model, eps=0.03, steps=100, early_stop=False)
    torch.manual_seed(0)
    x0 = (x + atk.ball.random_start(x, atk.eps)).clamp(0, 1)
    trace = []
    atk.single_run(x, y, None, x0, trace=trace)
    loss = torch.stack([t["loss"] for t in trace])  # [steps + 1, B]: f(x^(k))
    step = torch.stack([t["step"] for t in trace])  # eta^(k)
    assert torch.all(step[0] == 2 * 0.03)
    marks = checkpoints(100)
    changed = (step[1:] != step[:-1]).any(1).nonzero().squeeze(1) + 1
    assert set(changed.tolist()) <= set(marks)  # the step size changes only at checkpoints
    w_prev, halved_last = 0, torch.ones(len(x), dtype=torch.bool)
    outcomes = set()
    for w in marks:
        rises = (loss[w_prev + 1 : w + 1] > loss[w_prev:w]).sum(0)
        cond1 = rises <= 0.75 * (w - w_prev)
        cond2 = ~halved_last & (loss[: w_prev + 1].amax(0) >= loss[: w + 1].amax(0))
        expected = cond1 | cond2
        halved = step[w] == step[w - 1] / 2
        assert torch.equal(halved, expected) and torch.all(halved | (step[w] == step[w - 1]))
        outcomes |= set(halved.tolist())
        w_prev, halved_last = w, expected
    assert outcomes == {True, False}  # both branches were exercised


# ---- the authors' implementation as an oracle -------------------------------------------------------


@pytest.mark.parametrize(
    "loss,norm,eps,tol",
    [("ce", "linf", 0.05, 1e-5), ("dlr", "linf", 0.05, 1e-5), ("ce", "l2", 0.5, 2e-3), ("dlr", "l2", 0.5, 2e-3)],
)
def test_single_run_matches_pyautoattack(trained, loss, norm, eps, tol):
    """From the same start, with 100 steps (where the paper's checkpoints and the code's agree), the
    same points are broken and the others end at the same highest-loss point. (l_2 differs by rounding:
    the reference divides by ||g|| + 1e-12; the loss, steep near the boundary, is compared relatively.)"""
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    model, x, y = trained
    ours = APGD(model, eps=eps, loss=loss, norm=norm, steps=100, early_stop=False)
    torch.manual_seed(1)
    x0 = (x + ours.ball.random_start(x, eps)).clamp(0, 1)
    ref = autopgd.APGDAttack(
        model, n_iter=100, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, loss=loss, device="cpu"
    )
    ref.init_hyperparam(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about points whose gradient is zero
        x_best, acc, loss_best, _ = ref.attack_single_run(x, y, x_init=x0)
    x_out, success, f_out = ours.single_run(x, y, None, x0)
    assert 0 < int(success.sum()) < len(x)
    assert torch.equal(success, ~acc)
    standing = ~success
    assert torch.allclose(x_out[standing], x_best[standing], atol=tol)
    assert torch.allclose(f_out[standing], loss_best[standing], rtol=50 * tol, atol=tol)


# ---- strength -----------------------------------------------------------------------------------------


def test_apgd_dlr_breaks_a_model_that_masks_pgds_gradients(trained):
    model, x, y = trained
    masked = Scaled(model, 1e4)
    eps = 0.1
    torch.manual_seed(0)
    acc_pgd = accuracy(masked, PGD(masked, eps=eps, steps=50)(x, y), y)
    torch.manual_seed(0)
    acc_plain = accuracy(model, PGD(model, eps=eps, steps=50)(x, y), y)
    torch.manual_seed(0)
    acc_dlr = accuracy(masked, APGD(masked, eps=eps, loss="dlr", steps=50)(x, y), y)
    torch.manual_seed(0)
    acc_t = accuracy(masked, APGD(masked, eps=eps, loss="dlr", targeted=True, targets=3, steps=50)(x, y), y)
    assert acc_pgd > 0.9 and acc_plain < 0.5  # PGD-CE is blind on the masked model only
    assert acc_dlr <= acc_plain + 0.05 and acc_t <= acc_plain + 0.05


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_apgd_ce_at_least_as_strong_as_pgd_with_the_same_budget(trained, norm, eps):
    model, x, y = trained
    torch.manual_seed(0)
    acc_pgd = accuracy(model, PGD(model, eps=eps, steps=20, norm=norm)(x, y), y)
    torch.manual_seed(0)
    acc_apgd = accuracy(model, APGD(model, eps=eps, steps=20, norm=norm)(x, y), y)
    assert 0.05 < acc_pgd < 0.95
    assert acc_apgd <= acc_pgd + 0.01


# ---- the attack contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("loss,targeted", [("ce", False), ("dlr", False), ("dlr", True)])
def test_outputs_stay_in_the_ball_and_the_box(trained, norm, eps, loss, targeted):
    model, x, y = trained
    x_adv = APGD(model, eps=eps, loss=loss, targeted=targeted, targets=2, steps=10, norm=norm)(x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_given_targets_are_reached_and_wrong_points_left_alone(trained):
    model, x, y = trained
    t = (y + 1) % 10
    atk = APGD(model, eps=0.15, loss="ce", steps=30)
    x_adv = atk(x, y, target=t)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert (pred == t).float().mean() > 0.2  # a real targeted attack
    wrong = (y + 3) % 10  # labels the model gets wrong on clean input: nothing to do
    assert torch.equal(atk(x[:20], wrong[:20]), x[:20])


def test_restarts_only_help(trained):
    model, x, y = trained
    torch.manual_seed(0)
    one = accuracy(model, APGD(model, eps=0.05, steps=10, restarts=1)(x, y), y)
    torch.manual_seed(0)
    three = accuracy(model, APGD(model, eps=0.05, steps=10, restarts=3)(x, y), y)
    assert three <= one


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(eps=float("nan")),
        dict(eps=float("inf")),
        dict(eps=-0.1),
        dict(eps="0.1"),
        dict(steps=0),
        dict(steps=-1),
        dict(steps=1.5),
        dict(steps=True),
        dict(restarts=0),
        dict(targets=0),
        dict(rho=0.0),
        dict(rho=1.5),
        dict(rho=float("nan")),
        dict(loss="margin"),
        dict(norm="l1"),
        dict(targeted="yes"),
        dict(early_stop=1),
    ],
)
def test_bad_settings_are_refused(kwargs):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(UserError):
        APGD(model, **kwargs)


def test_dlr_needs_enough_classes():
    x, y = torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(UserError, match="3 classes"):
        APGD(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), loss="dlr")(x, y)
    with pytest.raises(UserError, match="4 classes"):
        APGD(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), loss="dlr", targeted=True)(x, y)


# ---- the attack table and the command line ---------------------------------------------------------------


def test_registry_builds_apgd_apgd_t_and_the_ensemble(trained):
    model, _, _ = trained
    a = make_attack("apgd", model, eps=0.1, loss="dlr")
    t = make_attack("apgd-t", model, eps=0.1, targets=3)
    e = make_attack("ensemble", model, eps=0.1)
    assert (a.loss, a.steps, a.targeted) == ("dlr", 100, False)
    assert (t.loss, t.targeted, t.targets) == ("dlr", True, 3)
    assert [name for name, _ in e.attacks] == ["apgd-ce", "apgd-t", "square"] and e.attacks[2][1].queries == 5000
    assert make_attack("square", model, eps=0.1).queries == 1000


def test_attack_and_evaluate_commands_take_apgd_and_the_ensemble(run_dir, tmp_path, capsys):
    out = tmp_path / "apgd"
    assert (
        main(
            [
                "attack",
                str(run_dir),
                "--attack",
                "apgd",
                "--loss",
                "dlr",
                "--eps",
                "0.1",
                "--steps",
                "10",
                "--n",
                "40",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "attack.json").read_text())["n"] == 40
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                "--attack",
                "ensemble",
                "--eps",
                "0.05,0.2",
                "--steps",
                "5",
                "--restarts",
                "1",
                "--n",
                "40",
            ]
        )
        == 0
    )
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["attack"]["name"] == "ensemble"
    assert result["adversarial"]["0.2"] <= result["adversarial"]["0.05"] <= result["nominal"]
    assert main(["attack", str(run_dir), "--attack", "apgd", "--loss", "margin", "--out", str(tmp_path / "x")]) == 2
    assert "loss must be one of" in capsys.readouterr().err
    for bad in (
        ["--attack", "apgd-t", "--targets", "0"],
        ["--attack", "ensemble", "--queries", "-1"],
        ["--attack", "apgd", "--restarts", "0"],
        ["--attack", "apgd", "--eps", "nan"],
    ):
        assert main(["attack", str(run_dir), *bad, "--out", str(tmp_path / "x")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_targeted_single_run_matches_pyautoattack(trained):
    """APGD-T's run towards the 2nd most likely class, from the same start as the authors' code."""
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    model, x, y = trained
    eps = 0.05
    ours = APGD(model, eps=eps, loss="dlr", targeted=True, steps=100, early_stop=False)
    with torch.no_grad():
        t = model(x).argsort(1, descending=True)[:, 1]
    torch.manual_seed(2)
    x0 = (x + ours.ball.random_start(x, eps)).clamp(0, 1)
    ref = autopgd.APGDAttack_targeted(model, n_iter=100, eps=eps, device="cpu")
    ref.init_hyperparam(x)
    ref.y_target = t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x_best, acc, loss_best, _ = ref.attack_single_run(x, y, x_init=x0)
    x_out, success, f_out = ours.single_run(x, y, t, x0)
    assert 0 < int(success.sum()) < len(x) and torch.equal(success, ~acc)
    standing = ~success
    assert torch.allclose(x_out[standing], x_best[standing], atol=1e-5)
    assert torch.allclose(f_out[standing], loss_best[standing], atol=1e-5)
