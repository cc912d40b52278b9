"""transfer_matrix and robustness_report: known answers on constructed models."""

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.attacks import FGSM, PGD
from robustrep.errors import UserError


def linear(seed, classes=10):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, classes))
    with torch.no_grad():
        model[1].weight.normal_(0, 0.3)
        centre(model)
    return model.eval()


def centre(model):
    # data sit around 0.5: a bias that puts the logits' mean there at 0 lets every class occur
    model[1].bias.copy_(-0.5 * model[1].weight.sum(1))


class Constant(nn.Module):
    """Constant output: no attack can move it. The output keeps a path to the input with zero gradient
    (a model with no path at all is refused by the gradient attacks, see test_attacks.py)."""

    def __init__(self, label, classes=10):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), classes).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


class Quantised(nn.Module):
    """A gradient-masking "defence": rounding the input kills every input gradient."""

    def __init__(self, inner, levels=2):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


def data(model, n=200):
    torch.manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        return x, model(x).argmax(1)


def test_transfer_matrix_rows_sources_columns_targets():
    a = linear(0)
    x, y = data(a)
    models = {"a": a, "a_copy": linear(0), "const": Constant(3)}
    m = rr.evaluation.transfer_matrix(models, x, y, lambda f: PGD(f, eps=0.05, steps=10), batch_size=64)
    acc = torch.tensor(m["accuracy"])
    assert m["names"] == ["a", "a_copy", "const"] and acc.shape == (3, 3)
    assert m["clean"][0] == 1.0
    assert acc[0, 0] < 0.5 and acc[0, 0] == acc[0, 1] and acc[1, 1] == acc[1, 0]  # a copy is the same model
    assert torch.allclose(acc[:, 2], torch.full((3,), m["clean"][2]))  # nothing moves a constant
    assert max(m["linf"]) <= 0.05 + 1e-6
    assert 0 < m["linf"][0] <= 0.05 + 1e-6 and m["rmsd"][0] <= m["linf"][0]
    with pytest.raises(UserError):
        rr.evaluation.transfer_matrix({}, x, y, FGSM)


def test_transfer_to_a_related_model_is_partial():
    a, b = linear(0), linear(0)
    with torch.no_grad():
        b[1].weight.add_(0.2 * torch.randn_like(b[1].weight))  # a relative: same task, other weights
        centre(b)
    x, y = data(a)
    m = rr.evaluation.transfer_matrix({"a": a, "b": b}, x, y, lambda f: FGSM(f, eps=0.02, early_stop=False))
    acc = m["accuracy"]
    assert m["clean"][1] > 0.5
    # examples built on a hurt b, but less than they hurt a (and vice versa)
    assert acc[0][0] < acc[0][1] < m["clean"][1]
    assert acc[1][1] < acc[1][0] < m["clean"][0]


def test_report_passes_on_a_plain_linear_model():
    model = linear(0)
    x, y = data(model, n=100)
    r = rr.evaluation.robustness_report(model, x, y, eps_list=[0.01, 0.03, 0.1], steps=20, queries=200)
    assert r["passed"], r["checks"]
    assert r["pgd"][0] >= r["pgd"][1] >= r["pgd"][2]
    assert r["unbounded"] == 0.0
    assert {c["name"] for c in r["checks"]} == {
        "monotone",
        "pgd_vs_fgsm",
        "unbounded",
        "blackbox_vs_whitebox",
        "deterministic",
    }


def test_report_flags_gradient_masking():
    inner = linear(0)
    model = Quantised(inner)
    x, y = data(model, n=100)
    r = rr.evaluation.robustness_report(model, x, y, eps_list=[0.1, 0.3], steps=20, queries=200)
    assert not r["passed"]
    assert "unbounded" in r["failed"]  # zero gradients: PGD cannot break everything
    assert "blackbox_vs_whitebox" in r["failed"]  # and the black-box attack beats it


class Noisy(nn.Module):
    """A randomised "defence": fresh noise on the logits at every call, in eval mode too."""

    def __init__(self, inner, scale=3.0):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        z = self.inner(x)
        return z + self.scale * torch.randn_like(z)


def test_report_flags_a_randomised_model():
    # the check that replaced "accuracy under attack <= clean" (true by construction): at eps = 0 no
    # attack moves a point, so only a model that answers differently each time loses accuracy there
    model = Noisy(linear(0))
    x, y = data(linear(0), n=100)
    r = rr.evaluation.robustness_report(model, x, y, eps_list=[0.05], steps=5, queries=20)
    assert "deterministic" in r["failed"] and r["zero_radius"] != r["clean"]
