"""Issue 11's levers and diagnostics: the latent margin of a linear probe (against brute force), the long
latent attack's reach (against its closed form on a linear encoder), regularised probes (stationarity of
the stated objective; code noise moves weight off a low-spread dimension), the SE's gamma warm-up, and
`robustrep diagnose` end to end on hand-made digits runs, with bad values refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.attacks import PGD
from robustrep.attacks.latent import LatentAttack
from robustrep.cli import build_parser, main
from robustrep.errors import UserError
from robustrep.evaluation.latent_diagnostics import attack_movement, latent_margin
from robustrep.evaluation.pointwise import survivors
from robustrep.evaluation.probe import fit_linear, save_probe, train_probe
from robustrep.experiments import smooth_encoders
from robustrep.utils import seed_everything

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # one-epoch encoders may warn of collapse


def test_latent_margin_is_the_distance_to_the_decision_boundary():
    torch.manual_seed(1)
    probe = nn.Linear(5, 4)
    z = torch.randn(30, 5)
    with torch.no_grad():
        logits = probe(z)
    y = logits.argmax(1)
    m = latent_margin(probe, z, y)
    assert (m > 0).all()
    W = probe.weight.detach()
    for i in range(len(z)):
        # just beyond m along the normal of the nearest boundary the label loses ...
        gaps = [
            (logits[i, y[i]] - logits[i, j]) / (W[y[i]] - W[j]).norm() if j != y[i] else float("inf") for j in range(4)
        ]
        j = int(torch.tensor(gaps).argmin())
        u = (W[j] - W[y[i]]) / (W[j] - W[y[i]]).norm()
        with torch.no_grad():
            assert probe(z[i] + 1.001 * m[i] * u).argmax() != y[i]
            # ... while no move shorter than m, in any of many directions, changes the prediction
            v = torch.randn(2000, 5)
            v = v / v.norm(dim=1, keepdim=True)
            assert (probe(z[i] + 0.999 * m[i] * v).argmax(1) == y[i]).all()
    wrong = (y + 1) % 4
    assert (latent_margin(probe, z, wrong) < 0).all()
    with pytest.raises(UserError):
        latent_margin(probe, torch.randn(3, 6), y[:3])


class _LinearEncoder(nn.Module):
    """mu(x) = a . x (one latent dimension), var constant: the W2 of a move d is |a . d| exactly."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)

    def encode(self, x):
        mu = (x.flatten(1) * self.a).sum(1, keepdim=True)
        return mu, torch.full_like(mu, 0.3)


def test_the_long_latent_attack_reaches_the_closed_form_maximum():
    torch.manual_seed(2)
    a = torch.randn(64)
    enc = _LinearEncoder(a)
    x = 0.3 + 0.4 * torch.rand(5, 1, 8, 8)  # inside [eps, 1 - eps]: the box does not bind
    x_adv = LatentAttack(enc, eps=0.1, steps=50, divergence="w2")(x)
    with torch.no_grad():
        reach = (enc.encode(x_adv)[0] - enc.encode(x)[0]).abs().squeeze(1)
    assert torch.allclose(reach, torch.full((5,), 0.1 * float(a.abs().sum())), rtol=1e-4)


def test_l2_probe_is_a_stationary_point_of_its_stated_objective():
    torch.manual_seed(3)
    f = torch.randn(300, 5)
    y = (f @ torch.randn(5, 3) + 0.5 * torch.randn(300, 3)).argmax(1)
    lam = 0.1
    probe = fit_linear(f, y, 3, l2=lam)
    W, b = probe.weight.detach().clone().requires_grad_(), probe.bias.detach().clone().requires_grad_()
    objective = nn.functional.cross_entropy(f @ W.T + b, y) + 0.5 * lam * W.pow(2).sum()
    gW, gb = torch.autograd.grad(objective, (W, b))
    assert gW.norm() < 1e-4 and gb.norm() < 1e-4
    plain = fit_linear(f, y, 3)
    assert probe.weight.norm() < plain.weight.norm()  # the penalty shrinks the weights


def test_code_noise_moves_the_probe_off_a_low_spread_dimension():
    torch.manual_seed(4)
    y = torch.randint(0, 2, (400,))
    sign = 2.0 * y - 1
    # dimension 0 separates the classes perfectly but spreads by 0.01; dimension 1 spreads by 1 but overlaps
    f = torch.stack([0.01 * sign + 0.001 * torch.randn(400), sign + 1.0 * torch.randn(400)], 1)

    def share0(probe):
        w = probe.weight.detach().norm(dim=0).pow(2)
        return float(w[0] / w.sum())

    assert share0(fit_linear(f, y, 2)) > 0.9
    noisy = fit_linear(f, y, 2, noise=1.0, seed=7)
    assert share0(noisy) < 0.05
    assert torch.equal(noisy.weight, fit_linear(f, y, 2, noise=1.0, seed=7).weight)  # seeded: the same fit
    for bad in (dict(l2=-1.0), dict(l2=float("nan")), dict(noise=float("inf")), dict(noise=-0.1), dict(noise="x")):
        with pytest.raises(UserError):
            fit_linear(f, y, 2, **bad)


class _FixedPosterior(nn.Module):
    """encode(x) = (x's two pixels, a fixed variance per coordinate): coordinate 0 at the prior's variance,
    coordinate 1 nearly certain."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.tensor([1.0, 1e-4]).expand_as(mu)


def test_posterior_noise_probe_ignores_a_coordinate_the_encoder_is_unsure_of():
    torch.manual_seed(5)
    y = torch.randint(0, 2, (400,))
    sign = 2.0 * y - 1
    # coordinate 0 separates the classes with a tiny spread (what a probe leans on), coordinate 1 overlaps
    X = torch.stack([0.5 + 0.01 * sign, (0.5 + 0.2 * sign + 0.2 * torch.randn(400)).clamp(0, 1)], 1)
    X = X.reshape(400, 1, 1, 2)
    enc = _FixedPosterior()

    def share0(probe):
        w = probe.weight.detach().norm(dim=0).pow(2)
        return float(w[0] / w.sum())

    assert share0(train_probe(enc, X, y, 2)) > 0.9
    probe = train_probe(enc, X, y, 2, posterior_noise=1.0)
    assert share0(probe) < 0.05
    # the same fit as fit_linear with the posterior std as the per-entry noise scale
    mu, var = enc.encode(X)
    same = fit_linear(mu, y, 2, noise=1.0, noise_scale=var.sqrt())
    assert torch.equal(probe.weight, same.weight)
    with pytest.raises(UserError):
        train_probe(enc, X, y, 2, noise=0.1, posterior_noise=1.0)
    with pytest.raises(UserError):
        train_probe(enc, X, y, 2, posterior_noise=float("nan"))
    with pytest.raises(UserError):
        fit_linear(mu, y, 2, noise=1.0, noise_scale=var[:, :1])


def test_gamma_warmup_rises_linearly_then_holds(digits):
    se = rr.models.build("se", input_shape=(1, 8, 8), latent_dim=3, gamma=12.0, gamma_warmup=2, select_steps=1)
    X = digits[0][:256]
    history = rr.training.fit(se, X, epochs=4, batch_size=128, progress=False, device="cpu")
    assert [h["gamma"] for h in history] == pytest.approx([4.0, 8.0, 12.0, 12.0])
    assert "gamma" not in rr.models.build("se", input_shape=(1, 8, 8), latent_dim=3).loss(X[:4])
    for bad in (-1, 1.5, float("nan"), "2"):
        with pytest.raises(UserError):
            rr.models.build("se", input_shape=(1, 8, 8), gamma_warmup=bad)


def _probed_run(folder, name, digits, **hparams):
    """A probed encoder run as `reproduce smooth-encoders` writes one (one epoch on digits) with its probe."""
    model = rr.models.build(name, input_shape=(1, 8, 8), latent_dim=4, **hparams)
    X, y = digits[0], digits[1]
    config = {"model": name, "hparams": dict(input_shape=[1, 8, 8], latent_dim=4, **hparams)}
    config["training"] = {"dataset": "digits", "task": "digit", "epochs": 1}
    rr.training.fit(model, X, epochs=1, run_dir=folder, progress=False, device="cpu", config=config)
    save_probe(folder, train_probe(model, X, y, 10), {"dataset": "digits", "task": "digit"})
    return model


@pytest.fixture(scope="module")
def probed_runs(tmp_path_factory, digits):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("diag") / "runs"
    _probed_run(root / "vae", "vae", digits)
    _probed_run(root / "se", "se", digits, gamma=3.0, select_steps=1, select_eps=0.1)
    return root


FAST = ["--n-eval", "40", "--attack-steps", "3", "--restarts", "1", "--latent-steps", "5", "--threads", "1"]


def test_diagnose_cli_writes_its_diagnostics_and_its_numbers_hold(probed_runs, tmp_path, capsys):
    out = tmp_path / "d"
    flags = ["--probe-l2", "0.05", "--probe-noise", "0.5", "--probe-posterior-noise", "1", "--radii", "0.1"]
    flags += ["--out", str(out)]
    assert main(["diagnose", str(probed_runs), *FAST, *flags]) == 0
    assert "probe l2=0.05" in capsys.readouterr().out
    r = json.loads((out / "diagnostics.json").read_text())
    assert set(r["models"]) == {"vae", "se"} and r["provenance"]["command"].startswith("robustrep diagnose")
    assert (out / "diagnostics.png").stat().st_size > 5000
    Xt, yt = rr.data.load("digits", "test")
    Xe, ye = rr.data.random_subset(Xt, yt, 40, 0)
    for name, m in r["models"].items():
        assert len(m["per_dimension"]["spread"]) == len(m["per_dimension"]["weight_norm"]) == 4
        assert set(m["probes"]) == {"saved", "l2=0.05", "noise=0.5", "posterior=1"}
        assert m["probes"]["l2=0.05"]["weight_norm"] < m["probes"]["saved"]["weight_norm"]
        # the saved probe's number is PGD's, on the same points and seed, recomputed here by hand
        clf = rr.evaluation.load_classifier(probed_runs / name)
        seed_everything(0)
        atk = PGD(clf, eps=0.1, steps=3, restarts=1)
        assert m["probes"]["saved"]["adversarial"]["0.1"] == survivors(clf, Xe[:], ye, atk).float().mean().item()
        assert m["movement"]["points"] == round(m["probes"]["saved"]["nominal"] * 40)


def test_a_successful_attack_moves_the_code_at_least_the_margin(probed_runs):
    model = rr.runs.load_model(probed_runs / "vae")
    clf = rr.evaluation.load_classifier(probed_runs / "vae")
    Xt, yt = rr.data.load("digits", "test")
    move = attack_movement(model, clf, clf.probe, Xt[:60], yt[:60], eps=0.02, pgd_steps=10, latent_steps=10)
    v = move["values"]
    broken = torch.tensor(v["pgd_broken"]).bool()
    assert broken.any() and (~broken).any()  # both kinds of points present: the check below means something
    margin, moved = torch.tensor(v["margin"]), torch.tensor(v["pgd_move"])
    assert (moved[broken] >= margin[broken] - 1e-5).all()
    assert (torch.tensor(v["latent_w2"]) >= torch.tensor(v["latent_move"]) - 1e-6).all()


@pytest.mark.parametrize(
    "bad",
    [
        ["--probe-l2", "-1"],
        ["--probe-l2", "nan"],
        ["--probe-l2", "0"],
        ["--probe-l2", "x"],
        ["--probe-noise", "inf"],
        ["--probe-posterior-noise", "-1"],
        ["--eps", "nan"],
        ["--eps", "-0.1"],
        ["--latent-steps", "0"],
        ["--n-eval", "-1"],
        ["--restarts", "0"],
        ["--radii", "0.1,big"],
    ],
)
def test_diagnose_refuses_bad_values_before_any_work(probed_runs, tmp_path, capsys, bad):
    assert main(["diagnose", str(probed_runs), "--out", str(tmp_path / "d"), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and bad[0] in err
    assert not (tmp_path / "d" / "diagnostics.json").exists()


def test_diagnose_from_python_refuses_bad_values_with_one_line(probed_runs, tmp_path):
    for bad in (dict(n_eval=-1), dict(eps=float("nan")), dict(probe_l2=[0.0]), dict(probe_posterior_noise=["1"])):
        with pytest.raises(UserError) as err:
            rr.evaluation.latent_diagnostics.diagnose_run(probed_runs, tmp_path / "d", **bad)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "d").exists()


def test_diagnose_refuses_a_folder_without_probed_encoders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["diagnose", str(tmp_path / "empty")]) == 2
    assert "no trained encoder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        ["--gamma-warmup", "-1"],
        ["--gamma-warmup", "1.5"],
        ["--probe-l2", "nan"],
        ["--probe-noise", "-1"],
        ["--probe-posterior-noise", "inf"],
        ["--probe-noise", "0.1", "--probe-posterior-noise", "1"],
    ],
)
def test_reproduce_refuses_bad_lever_values(tmp_path, capsys, bad):
    out = tmp_path / "o"
    args = ["reproduce", "smooth-encoders", "--quick", "--dataset", "digits", "--out", str(out), *bad]
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's own refusal (an integer flag given 1.5): the same one line, exit 2
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and bad[0] in err
    assert not out.exists() or not any(out.iterdir())


def test_levers_enter_the_settings_only_when_used():
    parse = build_parser().parse_args
    base = smooth_encoders.settings_from(parse(["reproduce", "smooth-encoders", "--quick"]))
    # the default probe is fitted with code noise; the other levers stay out, so old encoders are reused
    assert base["probe_noise"] == smooth_encoders.PROBE_NOISE > 0
    assert not {"gamma_warmup", "probe_l2", "probe_posterior_noise"} & set(base)
    plain = smooth_encoders.settings_from(parse(["reproduce", "smooth-encoders", "--quick", "--probe-noise", "0"]))
    assert not {"gamma_warmup", "probe_l2", "probe_noise", "probe_posterior_noise"} & set(plain)  # the paper's probe
    assert "gamma_warmup" not in smooth_encoders._model_hparams(base, (1, 28, 28))["se"]
    flags = ["--gamma-warmup", "3", "--probe-l2", "0.01", "--probe-noise", "0.2"]
    s = smooth_encoders.settings_from(parse(["reproduce", "smooth-encoders", "--quick", *flags]))
    assert (s["gamma_warmup"], s["probe_l2"], s["probe_noise"]) == (3, 0.01, 0.2)
    flags = ["--probe-posterior-noise", "1"]  # replaces the default code noise instead of clashing with it
    posterior = smooth_encoders.settings_from(parse(["reproduce", "smooth-encoders", *flags]))
    assert posterior["probe_posterior_noise"] == 1 and "probe_noise" not in posterior
    assert smooth_encoders._model_hparams(s, (1, 28, 28))["se"]["gamma_warmup"] == 3
    assert "gamma_warmup" not in smooth_encoders._model_hparams(s, (1, 28, 28))["vae"]


def test_the_conv_smooth_encoder_takes_its_own_calibrated_gamma():
    parse = build_parser().parse_args
    settings = lambda *flags: smooth_encoders.settings_from(parse(["reproduce", "smooth-encoders", "--quick", *flags]))  # noqa: E731
    assert settings()["gamma"] == 300.0  # the MLP's calibration
    assert settings("--arch", "conv")["gamma"] == smooth_encoders.CONV_SE["gamma"] == 30.0  # gamma 300 collapses
    assert settings("--arch", "conv", "--gamma", "100")["gamma"] == 100.0  # a flag still wins
