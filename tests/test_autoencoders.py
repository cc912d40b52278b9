"""The autoencoder zoo (issue 9): each loss against a closed form or a hand computation, the MMD against
a brute-force double loop, and bad settings refused before any work."""

import math

import pytest
import torch

import robustrep as rr
from robustrep import divergences as dv
from robustrep.models.info_vae import kernel_settings
from robustrep.models.linear import principal_angles
from robustrep.models.sparse import bernoulli_kl, keep_top_k
from robustrep.training import fit


# ---------------------------------------------------------------- MMD and kernels
def _brute_mmd(a, b, k, unbiased=True):
    n, m = len(a), len(b)
    saa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
    sbb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j or not unbiased)
    sab = sum(k(a[i], b[j]) for i in range(n) for j in range(m))
    if unbiased:
        return saa / (n * (n - 1)) + sbb / (m * (m - 1)) - 2 * sab / (n * m)
    return saa / n**2 + sbb / m**2 - 2 * sab / (n * m)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_equals_a_brute_force_double_loop(kernel, unbiased):
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(7, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5,
    )
    c, scales = 6.0, (0.5, 2.0)

    def k(x, y):
        d2 = float(((x - y) ** 2).sum())
        return sum((c * s) / (c * s + d2) if kernel == "imq" else math.exp(-d2 / (c * s)) for s in scales)

    got = dv.mmd_squared(a, b, kernel, c, scales, unbiased=unbiased)
    assert float(got) == pytest.approx(_brute_mmd(a, b, k, unbiased), rel=1e-12)


def test_mmd_separates_distributions_and_vanishes_in_expectation_for_equal_ones():
    g = torch.Generator().manual_seed(1)
    same = [float(dv.mmd_squared(torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g))) for _ in range(50)]
    shifted = float(dv.mmd_squared(torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 1.0))
    mean, sd = sum(same) / 50, (sum((s - sum(same) / 50) ** 2 for s in same) / 49) ** 0.5
    assert abs(mean) < 3 * sd / 50**0.5  # unbiased: mean zero within its standard error
    assert shifted > mean + 10 * sd


# ---------------------------------------------------------------- PCA and the linear AE
def test_pca_training_error_is_the_sum_of_discarded_eigenvalues(digits):
    X = digits[0]
    pca = rr.models.build("pca", input_shape=(1, 8, 8), latent_dim=10).fit(X)
    err = rr.models.linear.squared_error(X.double(), pca.reconstruct(X).double()).mean()
    cov = torch.cov(X.flatten(1).double().T, correction=0)
    evals = torch.linalg.eigvalsh(cov).flip(0)
    assert float(err) == pytest.approx(float(evals[10:].sum()), rel=1e-5)
    assert float(pca.discarded) == pytest.approx(float(evals[10:].sum()), rel=1e-6)  # stored in float32
    torch.testing.assert_close(pca.eigenvalues, evals[:10].float())
    # codes are decorrelated with the eigenvalues as variances
    z = pca.encode(X)[0].double()
    torch.testing.assert_close(torch.cov(z.T, correction=0), torch.diag(evals[:10]), atol=1e-4, rtol=1e-4)


def test_pca_through_the_trainer_sets_the_closed_form(digits):
    X = digits[0]
    pca = rr.models.build("pca", input_shape=(1, 8, 8), latent_dim=5)
    history = fit(pca, X, epochs=1, batch_size=4096, progress=False)
    assert history[-1]["loss"] == pytest.approx(float(pca.discarded), rel=1e-4)


def test_principal_angles_of_known_subspaces():
    e = torch.eye(4, dtype=torch.float64)
    a = e[:, :2]
    t = 0.3
    b = torch.stack([e[:, 0], math.cos(t) * e[:, 1] + math.sin(t) * e[:, 2]], 1)
    torch.testing.assert_close(principal_angles(a, b), torch.tensor([0.0, t], dtype=torch.float64), atol=1e-7, rtol=0)
    assert float(principal_angles(a, 3 * a @ torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)).max()) < 1e-7


def test_linear_ae_subspace_equals_pcas_with_the_reproductions_recipe(digits):
    """The recipe `reproduce autoencoders` trains the linear AE with (Adam, its lr and cosine decay, centred
    data) turns all 10 directions into PCA's on digits in 40 short epochs; lr 1e-3 constant does not."""
    from robustrep.experiments.autoencoders import RECIPES

    X = digits[0]
    d = 10
    pca = rr.models.build("pca", input_shape=(1, 8, 8), latent_dim=d).fit(X)
    angles = {}
    for label, recipe in [("recipe", RECIPES["linear-ae"]), ("old", dict(lr=1e-3, lr_schedule="constant"))]:
        torch.manual_seed(0)
        lae = rr.models.build("linear-ae", input_shape=(1, 8, 8), latent_dim=d)
        fit(lae, X, epochs=40, batch_size=32, progress=False, **recipe)
        angles[label] = float(principal_angles(lae.subspace(), pca.components).max())
    assert angles["recipe"] < 0.05, angles
    assert angles["old"] > 0.5, angles  # the recipe is what converges: the test can fail
    fresh = rr.models.build("linear-ae", input_shape=(1, 8, 8), latent_dim=d)
    assert float(principal_angles(fresh.subspace(), pca.components).max()) > 0.5


def test_linear_ae_centres_on_the_data_mean_and_with_pcas_weights_is_pca(digits):
    X = digits[0]
    d = 6
    pca = rr.models.build("pca", input_shape=(1, 8, 8), latent_dim=d).fit(X)
    lae = rr.models.build("linear-ae", input_shape=(1, 8, 8), latent_dim=d)
    fit(lae, X, epochs=0, progress=False)  # the mean is set before the first epoch, as PCA's
    torch.testing.assert_close(lae.mean.flatten().double(), X.flatten(1).double().mean(0), atol=1e-6, rtol=0)
    with torch.no_grad():
        lae.encoder[1].weight.copy_(pca.components.T)
        lae.encoder[1].bias.zero_()
        lae.decoder[0].weight.copy_(pca.components)
        lae.decoder[0].bias.zero_()
    torch.testing.assert_close(lae.reconstruct(X), pca.reconstruct(X), atol=1e-5, rtol=0)
    torch.testing.assert_close(lae.encode(X)[0], pca.encode(X)[0], atol=1e-5, rtol=0)
    loss = float(lae.loss(X)["loss"].detach())
    assert loss == pytest.approx(float(pca.discarded), rel=1e-4)  # Eckart-Young: the optimum's error


def test_on_epoch_end_puts_held_out_numbers_in_the_history(digits, tmp_path):
    """The trainer's on_epoch_end hook (the deep AE's test curve): called after each epoch in training
    mode, its numbers kept in the history and metrics.jsonl, the model back in training mode after it."""
    from robustrep.experiments.autoencoders import hinton_error
    from robustrep.runs import read_metrics

    X, _, Xt, _ = digits
    torch.manual_seed(0)
    model = rr.models.build("ae", input_shape=(1, 8, 8), latent_dim=4, hidden="32", activation="relu")
    calls = []

    def on_epoch_end(epoch, epochs):
        calls.append((epoch, epochs, model.training))
        return {"test_squared_error": hinton_error(model.eval(), Xt)}

    model.on_epoch_end = on_epoch_end
    history = fit(model, X, epochs=3, batch_size=64, lr=1e-2, progress=False, run_dir=tmp_path / "r")
    assert calls == [(1, 3, True), (2, 3, True), (3, 3, True)]
    assert history[-1]["test_squared_error"] == pytest.approx(hinton_error(model, Xt), rel=1e-6)
    on_disk = [r["test_squared_error"] for r in read_metrics(tmp_path / "r")]
    assert on_disk == [r["test_squared_error"] for r in history]
    assert on_disk[0] > on_disk[-1]  # the curve falls as the AE trains


# ---------------------------------------------------------------- sparse and k-sparse
def test_the_reproductions_probe_is_scikit_learns_default_logistic_regression():
    """`reproduce autoencoders` fits its probes with l2 = 1/n: the same minimiser as scikit-learn's
    LogisticRegression with its defaults (l2 penalty, C = 1, unpenalised intercept), used as the oracle."""
    from sklearn.linear_model import LogisticRegression

    from robustrep.evaluation.probe import fit_linear
    from robustrep.experiments.autoencoders import default_probe_l2

    torch.manual_seed(5)
    f = torch.randn(400, 6)
    y = (f @ torch.randn(6, 3) + torch.randn(400, 3)).argmax(1)
    ours = fit_linear(f, y, 3, l2=default_probe_l2(len(f)))
    oracle = LogisticRegression(tol=1e-10, max_iter=10_000).fit(f.double().numpy(), y.numpy())
    W, b = ours.weight.detach(), ours.bias.detach()
    torch.testing.assert_close(W, torch.from_numpy(oracle.coef_).to(W.dtype), rtol=1e-3, atol=1e-3)
    # the intercepts agree up to a common shift (softmax is invariant to it; neither side penalises it)
    shift = b - torch.from_numpy(oracle.intercept_).to(b.dtype)
    assert float(shift.max() - shift.min()) < 1e-3
    unpenalised = fit_linear(f, y, 3)
    assert float((unpenalised.weight.detach() - W).abs().max()) > 1e-2  # the penalty changes the answer


def test_keep_top_k_keeps_exactly_the_k_largest():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 50, generator=g)
    h = keep_top_k(z, 7)
    assert ((h != 0).sum(1) == 7).all()
    kth = z.sort(1, descending=True).values[:, 6:7]
    torch.testing.assert_close(h, torch.where(z >= kth, z, torch.zeros_like(z)))


def test_k_sparse_ae_codes_keep_exactly_k_and_k_is_annealed():
    model = rr.models.build("k-sparse-ae", input_shape=(1, 8, 8), latent_dim=100, k=5, k_start=45, alpha=2.0)
    model.on_epoch_start(0, 10)
    assert model.k_now == 45
    model.on_epoch_start(2, 10)
    assert model.k_now == 29  # linear from 45 to 5 over the first 5 epochs
    model.on_epoch_start(5, 10)
    assert model.k_now == 5
    model.on_epoch_start(9, 10)
    assert model.k_now == 5
    x = torch.rand(9, 1, 8, 8)
    assert ((model.encode(x)[0] != 0).sum(1) == 10).all()  # alpha * k at encoding time


def test_k_sparse_loss_is_the_squared_error_of_the_tied_top_k_reconstruction():
    model = rr.models.build("k-sparse-ae", input_shape=(1, 2, 2), latent_dim=3, k=1, k_start=1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))
        model.hidden_bias.zero_()
        model.visible_bias.fill_(0.1)
    x = torch.tensor([[0.2, 0.9, 0.4, 0.0]]).view(1, 1, 2, 2)
    z = torch.tensor([0.2 + 0.0, 0.9, 0.4])  # W^T x: the largest is unit 2 (0.9)
    recon = torch.tensor([0.0, 0.9, 0.0, 0.9]) + 0.1
    expected = ((x.flatten() - recon) ** 2).sum()
    assert float(z.argmax()) == 1
    assert float(model.loss(x)["loss"].detach()) == pytest.approx(float(expected))
    # reconstruct decodes the k units of training; encode's alpha * k features are for classifiers
    assert float(((model.reconstruct(x) - x) ** 2).sum().detach()) == pytest.approx(float(expected))


def test_sparse_penalties_by_hand():
    model = rr.models.build("sparse-ae", input_shape=(1, 2, 2), latent_dim=2, penalty="kl", rho=0.2)
    h = torch.tensor([[0.1, 0.5], [0.3, 0.5]])
    rho_hat = torch.tensor([0.2, 0.5])
    expected = sum(0.2 * math.log(0.2 / r) + 0.8 * math.log(0.8 / (1 - r)) for r in rho_hat.tolist())
    assert float(model.sparsity(h)) == pytest.approx(expected)
    assert float(bernoulli_kl(0.2, torch.tensor(0.2))) == pytest.approx(0.0, abs=1e-7)
    l1 = rr.models.build("sparse-ae", input_shape=(1, 2, 2), latent_dim=2, penalty="l1")
    assert float(l1.sparsity(h)) == pytest.approx((0.6 + 0.8) / 2)


# ---------------------------------------------------------------- DAE
def test_dae_score_is_the_gaussian_score_for_the_optimal_denoiser():
    """For x ~ N(m, s^2) and x~ = x + sigma u, the optimal r(x~) = E[x|x~] gives (r(x) - x)/sigma^2 =
    -(x - m)/(s^2 + sigma^2): the score of the noisy density (Alain & Bengio 2014 in the Gaussian case)."""
    dae = rr.models.build("dae", input_shape=(1, 1, 2), latent_dim=2, hidden="", activation="relu", sigma=0.5)
    m, s2, sigma2 = 0.3, 0.04, 0.25
    shrink = s2 / (s2 + sigma2)
    # r(x) = m + shrink (x - m) built by hand from the linear encoder/decoder (no hidden layer), sigmoid inverted
    enc, dec = dae.encoder[1], dae.decoder[0]
    with torch.no_grad():
        enc.weight.copy_(torch.eye(2))
        enc.bias.zero_()
        dec.weight.copy_(torch.eye(2) * shrink)
        dec.bias.fill_(m * (1 - shrink))
    dae.decoder[1] = torch.nn.Identity()  # the affine r of the Gaussian case, without the output sigmoid
    x = torch.tensor([[[[0.1, 0.8]]]])
    torch.testing.assert_close(dae.score(x), -(x - m) / (s2 + sigma2))


def test_dae_corruptions():
    x = torch.full((1000, 1, 4, 4), 0.5)
    g = torch.Generator().manual_seed(0)
    masked = rr.models.build("dae", input_shape=(1, 4, 4), noise="masking", sigma=0.25).corrupt(x, g)
    assert set(masked.unique().tolist()) == {0.0, 0.5}
    assert float((masked == 0).float().mean()) == pytest.approx(0.25, abs=0.01)
    noisy = rr.models.build("dae", input_shape=(1, 4, 4), sigma=0.2).corrupt(x, g)
    assert float((noisy - x).std()) == pytest.approx(0.2, rel=0.02)
    with pytest.raises(rr.errors.UserError, match="Gaussian"):
        rr.models.build("dae", input_shape=(1, 4, 4), noise="masking", sigma=0.25).score(x)


# ---------------------------------------------------------------- InfoVAE, WAE, AAE by hand
def test_info_vae_loss_by_hand():
    torch.manual_seed(0)
    model = rr.models.build(
        "info-vae",
        input_shape=(1, 2, 2),
        latent_dim=2,
        hidden=4,
        alpha=0.5,
        lam=3.0,
        kernel="rbf",
        bandwidth=1.0,
        obs_var=0.5,
    )
    x = torch.rand(3, 1, 2, 2)
    torch.manual_seed(7)
    out = model.loss(x)
    torch.manual_seed(7)
    mu, var = model.encoder(x)
    z = mu + var.sqrt() * torch.randn_like(mu)
    prior = torch.randn_like(z)
    recon = model.decode(z)
    nll = (((x - recon) ** 2).flatten(1).sum(1) / (2 * 0.5) + 2 * math.log(2 * math.pi * 0.5)).mean()
    kl = (0.5 * (mu**2 + var - var.log() - 1).sum(1)).mean()
    c = 2 * 2 * 1.0  # C = 2 d sigma^2

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / c)

    mmd = _brute_mmd(z.detach(), prior, k)
    expected = float(nll.detach()) + 0.5 * float(kl.detach()) + 2.5 * mmd
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert float(out["mmd"].detach()) == pytest.approx(mmd, rel=1e-5)


def test_wae_mmd_loss_by_hand():
    torch.manual_seed(0)
    model = rr.models.build("wae-mmd", input_shape=(1, 2, 2), latent_dim=2, hidden=4, lam=10.0)
    x = torch.rand(4, 1, 2, 2)
    torch.manual_seed(3)
    out = model.loss(x)
    torch.manual_seed(3)
    z = model.encoder(x)
    prior = torch.randn_like(z)
    recon = ((x - model.decoder(z)) ** 2).flatten(1).sum(1).mean()
    base = 2 * 2 * 1.0

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(base * s / (base * s + d2) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))

    expected = float(recon.detach()) + 10.0 * _brute_mmd(z.detach(), prior, k)
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert kernel_settings("imq", 1.0, 2)[0] == base


@pytest.mark.parametrize("name", ["wae-gan", "aae"])
def test_adversarial_losses_by_hand(name):
    torch.manual_seed(0)
    model = rr.models.build(name, input_shape=(1, 2, 2), latent_dim=2, hidden=4, weight=2.0, disc_hidden=4)
    x = torch.rand(5, 1, 2, 2)
    torch.manual_seed(1)
    d = model.loss(x, phase="discriminator")
    torch.manual_seed(1)
    z, _ = model.codes(x)
    prior = torch.randn_like(z)
    sig = torch.sigmoid
    expected_d = -(sig(model.discriminator(prior)).log().mean() + (1 - sig(model.discriminator(z))).log().mean())
    assert float(d["loss"].detach()) == pytest.approx(float(expected_d.detach()), rel=1e-5)
    torch.manual_seed(2)
    a = model.loss(x, phase="autoencoder")
    torch.manual_seed(2)
    z, _ = model.codes(x)
    recon = ((x - model.decoder(z)) ** 2).flatten(1).sum(1).mean()
    expected_a = recon - 2.0 * sig(model.discriminator(z)).log().mean()
    assert float(a["loss"].detach()) == pytest.approx(float(expected_a.detach()), rel=1e-5)


def test_hinton_ae_shape_and_cross_entropy():
    model = rr.models.build("ae", latent_dim=30)
    widths = [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert widths == [1000, 500, 250, 30]
    assert isinstance(model.encoder[-1], torch.nn.Linear)  # linear code units
    x = torch.rand(3, 1, 28, 28)
    recon = model.reconstruct(x)
    bce = -(x * recon.log() + (1 - x) * (1 - recon).log()).flatten(1).sum(1).mean()
    assert float(model.loss(x)["loss"].detach()) == pytest.approx(float(bce.detach()), rel=1e-5)


def test_elu_units_are_built_where_asked():
    model = rr.models.build("ae", input_shape=(1, 8, 8), latent_dim=3, hidden="16,8", activation="elu")
    kinds = [type(m) for m in [*model.encoder, *model.decoder]]
    assert kinds.count(torch.nn.ELU) == 4 and torch.nn.ReLU not in kinds and torch.nn.Sigmoid in kinds  # output


# ---------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "name,bad,match",
    [
        ("k-sparse-ae", dict(latent_dim=10, k=11, k_start=11), "k must be at most"),
        ("k-sparse-ae", dict(k=0), "k must be"),
        ("k-sparse-ae", dict(k=30, k_start=20), "k_start"),
        ("k-sparse-ae", dict(alpha=0.5), "alpha"),
        ("dae", dict(sigma=-0.1), "sigma"),
        ("dae", dict(sigma=float("nan")), "sigma"),
        ("dae", dict(noise="masking", sigma=1.0), "sigma"),
        ("dae", dict(noise="salt"), "noise"),
        ("ae", dict(hidden="1000,abc"), "hidden"),
        ("ae", dict(activation="tanh"), "activation"),
        ("ae", dict(loss="l3"), "loss"),
        ("ae", dict(arch="conv", input_shape=(1, 30, 30)), "divisible by 4"),
        ("pca", dict(latent_dim=800), "at most"),
        ("pca", dict(input_shape=(2,)), "input_shape"),
        ("linear-ae", dict(latent_dim=0), "latent_dim"),
        ("sparse-ae", dict(rho=0.0), "rho"),
        ("sparse-ae", dict(penalty="l2"), "penalty"),
        ("sparse-ae", dict(weight=-1.0), "weight"),
        ("info-vae", dict(alpha=2.0), "alpha"),
        ("info-vae", dict(kernel="linear"), "kernel"),
        ("wae-mmd", dict(bandwidth=0.0), "bandwidth"),
        ("wae-mmd", dict(lam=float("inf")), "lam"),
        ("wae-gan", dict(weight=-2.0), "weight"),
        ("aae", dict(disc_hidden=0), "disc_hidden"),
    ],
)
def test_bad_settings_are_refused_at_construction(name, bad, match):
    with pytest.raises(rr.errors.UserError, match=match):
        rr.models.build(name, **bad)


def test_pca_refuses_images_of_another_shape():
    pca = rr.models.build("pca", input_shape=(1, 8, 8), latent_dim=2)
    with pytest.raises(rr.errors.UserError):
        pca.fit(torch.rand(10, 1, 4, 4))


def test_bernoulli_nll_against_a_loop_over_pixels():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1, 4, 4, generator=g) > 0.5).float()
    m = torch.rand(3, 1, 4, 4, generator=g) * 0.98 + 0.01
    want = [
        -sum(math.log(p) if t == 1 else math.log(1 - p) for t, p in zip(xi.flatten().tolist(), mi.flatten().tolist()))
        for xi, mi in zip(x, m)
    ]
    torch.testing.assert_close(dv.bernoulli_nll(x, m), torch.tensor(want), rtol=1e-5, atol=1e-5)
    # a saturated decoder costs a finite -log(eps) per wrong pixel, not inf
    one = torch.ones(1, 1, 2, 2)
    assert dv.bernoulli_nll(one, torch.zeros_like(one)).item() == pytest.approx(-4 * math.log(1e-6), rel=1e-4)


def test_vae_with_a_bernoulli_decoder():
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    model = rr.models.build("vae", input_shape=[1, 8, 8], latent_dim=3, likelihood="bernoulli", beta=4.0)
    torch.manual_seed(5)
    out = model.loss(x)
    torch.manual_seed(5)
    mu, var = model.encoder(x)
    recon = dv.bernoulli_nll(x, model.decode(model.sample_latent(mu, var)))
    torch.testing.assert_close(out["recon"], recon.mean())
    torch.testing.assert_close(out["loss"], (recon + 4.0 * dv.kl_standard_normal(mu, var)).mean())
    gauss = rr.models.build("vae", input_shape=[1, 8, 8], latent_dim=3, beta=4.0)
    gauss.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    assert not torch.allclose(gauss.loss(x)["recon"], out["recon"])  # the flag changes the likelihood
    with pytest.raises(rr.errors.UserError):
        rr.models.build("vae", input_shape=[1, 8, 8], likelihood="poisson")
