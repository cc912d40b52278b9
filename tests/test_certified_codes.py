"""Certified robustness of a linear probe on an encoder's mean, probe(mu(x)): the composed plain network
computes the same function, and certificates are sound against every attack, point by point."""

import json

import pytest
import torch

import robustrep as rr
from robustrep.attacks import APGD, PGD, Ensemble
from robustrep.cli import main
from robustrep.errors import UserError
from robustrep.evaluation.pointwise import certified_points, survivors
from robustrep.evaluation.probe import ProbedEncoder, certifiable_network, train_probe


def train_encoder(name, X, arch="mlp", steps=100, obs_var=0.01, **extra):
    torch.manual_seed(0)
    model = rr.models.build(name, input_shape=(1, 8, 8), latent_dim=8, arch=arch, hidden=32, obs_var=obs_var, **extra)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        model.loss(X[idx])["loss"].backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def probed(digits):
    X, y, Xt, yt = digits
    X, Xt = X[:], Xt[:]
    out = {}
    for name, extra in (("vae", {}), ("se", dict(gamma=1.0, select_eps=0.1, select_steps=3))):
        model = train_encoder(name, X, **extra)
        out[name] = (model, train_probe(model, X[:600], y[:600], 10))
    return out, Xt[:150], yt[:150]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_composed_network_is_probe_of_mu(digits, arch):
    X, _, Xt, _ = digits
    model = train_encoder("vae", X[:], arch=arch, steps=5)
    probe = torch.nn.Linear(8, 10)
    net = certifiable_network(model, probe)
    assert isinstance(net, torch.nn.Sequential)
    assert all(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ReLU, torch.nn.Flatten)) for m in net)
    with torch.no_grad():
        assert torch.allclose(net(Xt[:50]), ProbedEncoder(model, probe)(Xt[:50]), atol=1e-4)
    # the certifier accepts it: at eps 0 the bounds are the exact margins
    b = rr.certify.margin_bounds(net, Xt[:20], torch.zeros(20, dtype=torch.int64), eps=0.0, method="dual")
    with torch.no_grad():
        z = net(Xt[:20])
    assert torch.allclose(b, z[:, :1] - z, atol=1e-4)
    # frozen copies: training the encoder further leaves the network alone
    before = net(Xt[:5]).detach().clone()
    with torch.no_grad():
        model.encoder[1].linear.bias.add_(1.0)
    assert torch.equal(net(Xt[:5]), before)


def test_certified_points_are_never_broken(probed):
    """certified (dual, ibp) subset of survivors of the ensemble (which includes PGD's failures) subset of
    survivors of PGD subset of clean-correct, at every radius and for both encoders."""
    models, x, y = probed
    for name, (model, probe) in models.items():
        clf = ProbedEncoder(model, probe).eval()
        net = certifiable_network(model, probe)
        clean = rr.attacks.predict(clf, x) == y
        assert clean.float().mean() > 0.3
        certified_any = broken_any = 0
        for eps in (0.005, 0.02, 0.05):
            torch.manual_seed(0)
            pgd = survivors(clf, x, y, PGD(clf, eps=eps, steps=20, restarts=2))
            stages = [
                ("apgd-ce", APGD(clf, eps=eps, steps=20)),
                ("apgd-t", APGD(clf, eps=eps, loss="dlr", targeted=True, targets=3, steps=20)),
            ]
            ens = survivors(clf, x, y, Ensemble(clf, attacks=stages), among=pgd)
            for method in ("dual", "ibp"):
                cert = certified_points(net, x, y, eps, method)
                assert not (cert & ~ens).any(), f"{name} eps {eps}: a {method}-certified point was broken"
                certified_any += int(cert.sum())
            assert not (ens & ~pgd).any() and not (pgd & ~clean).any()
            broken_any += int((clean & ~ens).sum())
        assert certified_any > 0 and broken_any > 0, "the test must certify some points and break others"


def test_certified_points_against_a_linear_closed_form():
    """A linear probe on a linear 'encoder': the certificate is exact, margin_j > eps ||w_y - w_j||_1."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    x = 0.3 + 0.4 * torch.rand(200, 1, 4, 4)  # the [0, 1] box does not bind at these radii
    with torch.no_grad():
        z = lin(x)
        y = z.argmax(1)
        w = lin[1].weight
        gap = z.gather(1, y[:, None]) - z
        dual_norm = (w[y][:, None, :] - w[None]).abs().sum(2)
        exact = ((gap > 0.05 * dual_norm) | (torch.arange(5) == y[:, None])).all(1)
    for method in ("dual", "ibp"):
        assert torch.equal(certified_points(lin, x, y, 0.05, method), exact)


def test_bad_inputs_are_refused(digits):
    X, _, _, _ = digits
    model = train_encoder("vae", X[:], steps=0)
    probe = torch.nn.Linear(8, 10)
    with pytest.raises(UserError, match="GaussianHead"):
        certifiable_network(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8)), probe)
    with pytest.raises(UserError, match="nn.Linear probe"):
        certifiable_network(model, torch.nn.Sequential(probe))
    with pytest.raises(UserError, match="latent dimensions"):
        certifiable_network(model, torch.nn.Linear(5, 10))


def test_survivors_count_like_adversarial_accuracy(probed):
    models, x, y = probed
    clf = ProbedEncoder(*models["vae"]).eval()
    torch.manual_seed(3)
    expected = rr.evaluation.adversarial_accuracy(clf, x, y, PGD(clf, eps=0.05, steps=5), batch_size=40)
    torch.manual_seed(3)
    left = survivors(clf, x, y, PGD(clf, eps=0.05, steps=5), batch_size=40)
    assert int(left.sum()) / len(x) == expected


def test_reproduce_reports_both_attacks_and_certified_accuracy(tmp_path, capsys):
    out = tmp_path / "se"
    args = [
        "reproduce",
        "smooth-encoders",
        "--quick",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--n-eval",
        "40",
        "--attack-steps",
        "3",
        "--restarts",
        "1",
        "--radii",
        "0.02,0.2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*args, "--attack", "ensemble,pgd", "--certify-radii", "0.005,0.02", "--ensemble-queries", "50"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["attacks"]) == ["pgd", "ensemble"] and results["attacks"]["ensemble"]["after_pgd"]
    assert results["attacks"]["ensemble"]["queries"] == 50 and results["attack"]["name"] == "pgd"
    for name in ("vae", "se"):
        r = results["models"][name]
        assert r["adversarial"] == r["by_attack"]["pgd"]
        for eps in ("0.02", "0.2"):  # the ensemble works on the points PGD left: never above it
            assert r["by_attack"]["ensemble"][eps] <= r["by_attack"]["pgd"][eps]
        c = results["certified"][name]
        for method in ("dual", "ibp"):
            assert set(c[method]) == {"0.005", "0.02"}
            assert c[method]["0.02"] <= c[method]["0.005"] <= r["nominal"]
            assert c[method]["0.02"] <= r["by_attack"]["ensemble"]["0.02"]
    assert "certified (dual)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad",
    [
        ["--attack", "fgsm"],
        ["--attack", "pgd,pgd"],
        ["--attack", ""],
        ["--certify-radii", "nan"],
        ["--certify-radii", "-0.1"],
        ["--certify-radii", "a"],
        ["--ensemble-queries", "-1"],
    ],
)
def test_reproduce_refuses_bad_attack_and_certify_flags_before_any_work(tmp_path, capsys, bad):
    out = tmp_path / "bad"
    assert main(["reproduce", "smooth-encoders", "--quick", "--dataset", "digits", "--out", str(out), *bad]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
