"""The shapes data (dSprites-style, made by code) and the three disentanglement metrics, on synthetic
codes whose answers are known."""

import math

import pytest
import torch
from sklearn.metrics import mutual_info_score

import robustrep as rr
from robustrep.data.shapes import ShapesGrid
from robustrep.evaluation import disentanglement as dm

SIZES = (3, 4, 5)


def perfect(f):
    return f.double()


def test_shapes_images_and_factors():
    grid = ShapesGrid.small()
    assert grid.factor_sizes == (3, 6, 10, 12, 12) and len(grid) == 25920
    assert ShapesGrid().factor_sizes == (3, 6, 40, 32, 32) and len(ShapesGrid()) == 737280
    f = grid.sample_factors(64, generator=torch.Generator().manual_seed(0))
    x = grid.render(f)
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(grid.render(f), x)  # a pure function of the factors
    # area grows with scale; the centre of mass follows x and y
    small, big = grid.render(torch.tensor([[0, 0, 0, 6, 6], [0, 5, 0, 6, 6]])).sum((1, 2, 3))
    assert big > 3 * small
    left, right = grid.render(torch.tensor([[1, 3, 0, 0, 6], [1, 3, 0, 11, 6]]))
    cols = torch.arange(32.0)
    assert (left[0].sum(0) * cols).sum() / left.sum() < (right[0].sum(0) * cols).sum() / right.sum() - 10
    # a square turned a quarter turn is the same square; a heart is not
    sq = grid.render(torch.tensor([[0, 5, 0, 6, 6], [0, 5, 0, 6, 6]]))
    heart = ShapesGrid(size=32, orientations=4).render(torch.tensor([[2, 5, 0, 6, 6], [2, 5, 2, 6, 6]]))
    assert torch.equal(sq[0], sq[1]) and not torch.equal(heart[0], heart[1])
    with pytest.raises(rr.errors.UserError):
        grid.render(torch.tensor([[3, 0, 0, 0, 0]]))


def test_shapes_in_the_data_table():
    assert rr.data.num_classes("shapes", "orientation") == 10
    X, y = rr.data.load("shapes", "test", task="shape")
    assert X.shape == (2592, 1, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert float(X.min()) == 0 and float(X.max()) == 1 and set(y.tolist()) == {0, 1, 2}


def test_mutual_information_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(5, (3000,), generator=g)
    b = (a + torch.randint(3, (3000,), generator=g)) % 6
    assert dm.mutual_information(a, b) == pytest.approx(mutual_info_score(a.numpy(), b.numpy()), rel=1e-9)


def test_perfect_codes_score_one():
    assert dm.beta_vae_metric(perfect, SIZES, n_train=600, n_test=300, pairs=32) == pytest.approx(1.0)
    assert dm.factor_vae_metric(perfect, SIZES, n_votes=600) == pytest.approx(1.0)
    assert dm.mig(perfect, SIZES, n=20000) > 0.95
    scaled = dm.factor_vae_metric(lambda f: f.double() * torch.tensor([1e3, 1.0, 0.5]), SIZES, n_votes=600)
    assert scaled == pytest.approx(1.0)  # normalised by each dimension's spread


def test_a_factor_coded_twice_has_no_gap():
    # z = [f0, f0, f1, f2]: factor 0's two best dimensions tie, so its gap is 0; the others' gaps are ~1
    got = dm.mig(lambda f: f[:, [0, 0, 1, 2]].double(), SIZES, n=20000)
    assert got == pytest.approx(2 / 3, abs=0.02)
    rows = dm.mig_per_factor(lambda f: f[:, [0, 0, 1, 2]].double(), SIZES, n=20000)
    assert [r["factor"] for r in rows] == [0, 1, 2]
    assert sorted(rows[0]["dims"]) == [0, 1] and rows[0]["gap"] == pytest.approx(0.0, abs=1e-12)
    assert rows[0]["info"][0] == pytest.approx(1.0, abs=0.01)  # each copy holds all of factor 0
    assert [r["dims"][0] for r in rows[1:]] == [2, 3] and all(r["gap"] > 0.95 for r in rows[1:])


def test_a_rotated_pair_of_factors_shows_as_spread_information():
    # z = [f0 + f1, f0 - f1, f2]: factors 0 and 1 are each spread over two dimensions; factor 2 is clean
    rows = dm.mig_per_factor(
        lambda f: torch.stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1], f[:, 2]], 1).double(), (4, 4, 5), n=20000
    )
    for r in rows[:2]:
        assert sorted(r["dims"]) == [0, 1] and 0.2 < r["info"][1] and r["gap"] < 0.3, r
    assert rows[2]["dims"][0] == 2 and rows[2]["gap"] > 0.95


def test_a_code_rotated_45_degrees_confuses_the_beta_vae_metric():
    # z = [f0 + f1, f0 - f1, f2] with f0 and f1 alike (4 values each): a vote fixing f0 gives
    # |dz1| = |dz2| = |df1|, one fixing f1 gives |dz1| = |dz2| = |df0|, the same law, so those votes are
    # told apart at chance (1/2) and f2's always: 1/3 * 1 + 2/3 * 1/2 = 2/3, where the aligned code scores 1
    def rotated(f):
        return torch.stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1], f[:, 2]], 1).double()

    got = dm.beta_vae_metric(rotated, (4, 4, 5), n_train=1500, n_test=1500, pairs=32)
    assert got == pytest.approx(2 / 3, abs=0.05)
    assert dm.beta_vae_metric(perfect, (4, 4, 5), n_train=600, n_test=300, pairs=32) == pytest.approx(1.0)


def test_a_code_of_position_alone_caps_the_beta_vae_metric_at_three_fifths():
    # the small grid's five factors, a code holding x and y exactly and nothing else: votes fixing x or y
    # are told apart; votes fixing shape, scale or orientation change no code dimension less than the
    # others, so the classifier can only guess among those three: 2/5 + 3/5 * 1/3 = 3/5
    sizes = ShapesGrid.small().factor_sizes
    got = dm.beta_vae_metric(lambda f: f[:, 3:].double(), sizes, n_train=1500, n_test=1500, pairs=32)
    assert got == pytest.approx(3 / 5, abs=0.05)


def test_a_code_of_scale_and_position_caps_the_beta_vae_metric_at_four_fifths():
    # what beta = 4 codes on the 32x32 grid (docs/autoencoders.md): scale, x and y exactly, shape and
    # orientation not at all; votes fixing those two look alike: 3/5 + 2/5 * 1/2 = 4/5, so its measured
    # 0.87-0.91 needs the partial code of shape it has
    sizes = ShapesGrid.small().factor_sizes
    got = dm.beta_vae_metric(lambda f: f[:, [1, 3, 4]].double(), sizes, n_train=1500, n_test=1500, pairs=32)
    assert got == pytest.approx(4 / 5, abs=0.05)
    # adding shape makes every vote's class identifiable, orientation's by elimination (no dimension fixed)
    with_shape = dm.beta_vae_metric(lambda f: f[:, [0, 1, 3, 4]].double(), sizes, n_train=600, n_test=300, pairs=32)
    assert with_shape == pytest.approx(1.0, abs=0.02)


def test_factor_vae_metric_with_a_missing_factor():
    # z = [f0, u], u uniform on 3 values like f0 but independent of every factor: votes fixing f0 pick
    # dimension 0; votes fixing f1 split evenly between two dimensions of the same law, so the majority
    # vote scores 1/2 + 1/4
    def half(f):
        g = torch.Generator().manual_seed(int(f.sum()) % 1000)
        return torch.stack([f[:, 0], torch.randint(3, (len(f),), generator=g)], 1).double()

    assert dm.factor_vae_metric(half, (3, 4), n_votes=4000) == pytest.approx(0.75, abs=0.03)


def test_codes_that_ignore_the_factors_score_chance():
    def noise(f):
        g = torch.Generator().manual_seed(int(f.sum()) % 1000 + len(f))
        return torch.randn(len(f), 4, generator=g, dtype=torch.float64)

    assert dm.beta_vae_metric(noise, SIZES, n_train=600, n_test=600, pairs=32) < 1 / 3 + 0.1
    assert dm.mig(noise, SIZES, n=20000) < 0.02


def test_bad_metric_settings_are_refused():
    with pytest.raises(rr.errors.UserError):
        dm.mig(perfect, SIZES, bins=1)
    with pytest.raises(rr.errors.UserError):
        dm.factor_vae_metric(perfect, SIZES, batch=1)
    with pytest.raises(rr.errors.UserError):
        dm.beta_vae_metric(perfect, SIZES, n_train=0)
    assert math.isfinite(dm.mig(perfect, (1, 3), n=100))  # a factor with one value is skipped


def test_factor_vae_metric_prunes_a_collapsed_dimension():
    # a constant dimension has zero variance under every vote; unpruned it would take every vote
    got = dm.factor_vae_metric(
        lambda f: torch.cat([f.double(), torch.zeros(len(f), 1, dtype=torch.float64)], 1), SIZES, n_votes=600
    )
    assert got == pytest.approx(1.0)


def test_reproduction_records_the_metrics_after_every_epoch(tmp_path, monkeypatch):
    """reproduce disentanglement keeps a curve per beta: the beta-VAE metric and MIG after each epoch, the
    last one equal to the metric recomputed on the final model with the curve's sample sizes."""
    from robustrep.evaluation.probe import encode_means
    from robustrep.experiments import disentanglement as exp

    tiny = ShapesGrid(size=16, scales=2, orientations=2, positions_x=3, positions_y=3)
    monkeypatch.setitem(exp.GRIDS, "small", lambda: tiny)
    s = dict(exp.BUDGETS["quick"], epochs=2, votes=50, pairs=4, mig_samples=400, betas=[1.0], seed=0, batch_size=32)
    results = exp.run(s, tmp_path / "r", device="cpu", progress=False)
    curve = results["models"]["1"]["curve"]
    assert [c["epoch"] for c in curve] == [1, 2]
    for figure in ("metrics.png", "curves.png", "traversals_beta1.png"):  # each a PNG the report shows
        assert (tmp_path / "r" / figure).read_bytes()[:4] == b"\x89PNG"
        assert figure in (tmp_path / "r" / "report.html").read_text()
    assert all(0.0 <= c["beta_vae_metric"] <= 1.0 and -1e-9 <= c["mig"] <= 1.0 for c in curve)
    model = rr.models.build(
        "vae",
        input_shape=[1, 16, 16],
        latent_dim=s["latent_dim"],
        arch=s["arch"],
        hidden=s["hidden"],
        obs_var=s["obs_var"],
        beta=1.0,
        likelihood=s["likelihood"],
    )
    rr.runs.load_weights(model, tmp_path / "r" / "beta-1" / "model.safetensors")
    model.eval()
    mig = dm.mig(lambda f: encode_means(model, tiny.render(f)), tiny.factor_sizes, n=200, seed=0)
    assert curve[-1]["mig"] == pytest.approx(mig, abs=1e-9)
    r = results["models"]["1"]
    assert list(r["mig_per_factor"]) == ["shape", "scale", "orientation", "x", "y"]
    full = dm.mig(lambda f: encode_means(model, tiny.render(f)), tiny.factor_sizes, n=400, seed=0)
    assert r["mig"] == pytest.approx(full, abs=1e-9)
    Xt = exp.load_split("test", "shape", grid=tiny)[0][:2000]
    with torch.no_grad():
        kl = rr.divergences.kl_standard_normal(*model.encode(Xt)).mean()
    assert sum(r["kl_per_dim"]) == pytest.approx(float(kl), abs=1e-3)  # the per-dimension KLs add up


def test_reproduction_over_several_seeds(tmp_path, monkeypatch):
    """--seeds 2: each beta trained from seeds 0 and 1 (beta-1/ and beta-1-seed-1/), each scored on the
    same votes and samples, and the spread is that of the per-seed scores."""
    import statistics

    from robustrep.evaluation.probe import encode_means
    from robustrep.experiments import disentanglement as exp

    tiny = ShapesGrid(size=16, scales=2, orientations=2, positions_x=3, positions_y=3)
    monkeypatch.setitem(exp.GRIDS, "small", lambda: tiny)
    s = dict(exp.BUDGETS["quick"], epochs=1, votes=50, pairs=4, mig_samples=400, betas=[1.0], seed=0, batch_size=32)
    r = exp.run(s | {"seeds": 2}, tmp_path / "r", device="cpu", progress=False)["models"]["1"]
    assert [row["seed"] for row in r["seeds"]] == [0, 1]
    assert r["seeds"][0]["mig"] == r["mig"]  # the first seed is the model the rest of the record describes
    model = rr.models.build(
        "vae",
        input_shape=[1, 16, 16],
        latent_dim=s["latent_dim"],
        arch=s["arch"],
        hidden=s["hidden"],
        obs_var=s["obs_var"],
        beta=1.0,
        likelihood=s["likelihood"],
    )
    rr.runs.load_weights(model, tmp_path / "r" / "beta-1-seed-1" / "model.safetensors")
    model.eval()
    mig = dm.mig(lambda f: encode_means(model, tiny.render(f)), tiny.factor_sizes, n=400, seed=0)
    assert r["seeds"][1]["mig"] == pytest.approx(mig, abs=1e-9) and r["seeds"][1]["mig"] != r["mig"]
    for key in ("beta_vae_metric", "factor_vae_metric", "mig", "dims_used"):
        values = [row[key] for row in r["seeds"]]
        assert r["over_seeds"][key]["mean"] == pytest.approx(statistics.mean(values))
        assert r["over_seeds"][key]["std"] == pytest.approx(statistics.stdev(values))
    assert r["dims_used"] == sum(v > exp.DIM_USED_NATS for v in r["kl_per_dim"])


@pytest.mark.parametrize(
    "flags",
    [{}, {"arch": "conv", "hidden": 200, "likelihood": "gaussian"}],  # the default (conv4), the earlier network
)
def test_reproduction_trains_the_network_its_settings_name(tmp_path, monkeypatch, flags):
    from torch import nn

    from robustrep.experiments import disentanglement as exp

    tiny = ShapesGrid(size=16, scales=2, orientations=2, positions_x=3, positions_y=3)
    monkeypatch.setitem(exp.GRIDS, "small", lambda: tiny)
    s = dict(exp.BUDGETS["quick"], epochs=1, votes=50, pairs=4, mig_samples=400, betas=[4.0], seed=0, batch_size=32)
    s |= flags
    exp.run(s, tmp_path / "r", device="cpu", progress=False)
    config = rr.runs.read_yaml(tmp_path / "r" / "beta-4" / "config.yaml")
    assert {k: config["hparams"][k] for k in ("arch", "hidden", "likelihood")} == {
        k: s[k] for k in ("arch", "hidden", "likelihood")
    }
    model = rr.models.build("vae", **config["hparams"])
    rr.runs.load_weights(model, tmp_path / "r" / "beta-4" / "model.safetensors")  # the weights fit that network
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.encoder.modules())
    assert n_convs == (4 if s["arch"] == "conv4" else 2) and model.likelihood == s["likelihood"]


def test_help_says_what_each_setting_means_and_its_defaults(capsys):
    from robustrep.cli import main

    with pytest.raises(SystemExit):
        main(["reproduce", "disentanglement", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "conv4 (the beta-VAE papers' dSprites network" in text
    assert "override (quick conv4, full conv4)" in text and "override (quick 10, full 30)" in text
