"""Our attacks against peer libraries used as oracles, on the same small trained model
(torchattacks and foolbox are imported here only, never by the package)."""

import pytest
import torch
from torch import nn

from robustrep.attacks import BIM, CW, FGSM, PGD, DeepFool

torchattacks = pytest.importorskip("torchattacks")


def train_digits_mlp():
    """An MLP 64-64-10 trained for a few seconds on sklearn's 8x8 digits, and 100 test points it gets right."""
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
    assert ok.float().mean() > 0.9
    return model, xt[ok][:100], yt[ok][:100]


@pytest.fixture(scope="module")
def trained():
    return train_digits_mlp()


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_fgsm_equals_torchattacks(trained):
    model, x, y = trained
    ours = FGSM(model, eps=0.05, early_stop=False)(x, y)
    theirs = torchattacks.FGSM(model, eps=0.05)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bim_equals_torchattacks(trained):
    model, x, y = trained
    ours = BIM(model, eps=0.1, steps=7, alpha=0.02, early_stop=False)(x, y)
    theirs = torchattacks.BIM(model, eps=0.1, alpha=0.02, steps=7)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_is_at_least_as_strong_as_torchattacks(trained, norm):
    model, x, y = trained
    eps = 0.05 if norm == "linf" else 0.5
    torch.manual_seed(0)
    ours = PGD(model, eps=eps, steps=20, restarts=1, norm=norm, alpha=eps / 8)(x, y)
    peer = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    theirs = peer(model, eps=eps, alpha=eps / 8, steps=20, random_start=True)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert 0.05 < acc_theirs < 0.95  # the budget is neither trivial nor hopeless
    assert acc_ours <= acc_theirs + 0.03  # random starts differ: a small tolerance
    delta = (ours - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()


def test_deepfool_matches_foolbox(trained):
    fb = pytest.importorskip("foolbox")
    model, x, y = trained
    atk = DeepFool(model, steps=50, overshoot=0.02, candidates=10)
    atk(x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, theirs, success = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)(
        fmodel, x, y, epsilons=None
    )
    assert atk.success.all() and success.all()
    ours_l2 = atk.norms
    theirs_l2 = (theirs - x).flatten(1).norm(dim=1)
    # the same algorithm: per-example norms agree up to float noise on nearly every point
    close = torch.isclose(ours_l2, theirs_l2, rtol=1e-3, atol=1e-5)
    assert close.float().mean() > 0.95
    assert abs(float(ours_l2.mean() / theirs_l2.mean()) - 1) < 0.01


def test_cw_no_worse_than_torchattacks(trained):
    model, x, y = trained
    x, y = x[:40], y[:40]
    theirs = torchattacks.CW(model, c=1.0, kappa=0.0, steps=100, lr=0.01)(x, y)
    with torch.no_grad():
        won_theirs = model(theirs).argmax(1) != y
    l2_theirs = (theirs - x).flatten(1).norm(dim=1)
    # equal settings (one c, no binary search): the same optimisation, up to which local optimum
    # each margin formulation falls into (torchattacks masks logits with zeros, we with -inf)
    same = CW(model, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=1, abort_early=False)(x, y)
    with torch.no_grad():
        won_same = model(same).argmax(1) != y
    l2_same = (same - x).flatten(1).norm(dim=1)
    assert won_same.sum() >= won_theirs.sum()
    both = won_same & won_theirs
    assert both.sum() >= 10
    assert float(l2_same[both].mean()) <= float(l2_theirs[both].mean()) * 1.03
    # with the binary search over c: more successes and smaller perturbations
    ours = CW(model, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=5)(x, y)
    with torch.no_grad():
        won = model(ours).argmax(1) != y
    l2 = (ours - x).flatten(1).norm(dim=1)
    assert won.sum() >= won_theirs.sum()
    both = won & won_theirs
    assert float(l2[both].mean()) <= float(l2_theirs[both].mean())
