"""benchmarks/autoencoders.py's own helpers (the pythae runs themselves are the benchmark, not a test)."""

import importlib.util
import statistics
from pathlib import Path

import pytest
import torch

import robustrep as rr

_spec = importlib.util.spec_from_file_location(
    "bench_autoencoders", Path(__file__).parents[1] / "benchmarks" / "autoencoders.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_seed_spread_is_the_sample_standard_deviation():
    values = [745.764, 745.70, 745.81, 745.69]
    got = bench.spread(values)
    assert got["mean"] == pytest.approx(statistics.mean(values), abs=1e-3)
    assert got["std"] == pytest.approx(statistics.stdev(values), abs=1e-3)
    assert got["values"] == values
    assert bench.spread([1.0]) == {"mean": 1.0, "std": 0.0, "values": [1.0]}


@pytest.mark.parametrize("text", ["", "pca", "info-vae,gan", ","])
def test_unknown_models_are_refused(text):
    with pytest.raises(rr.errors.UserError):
        bench.parse_models(text)


def test_models_are_parsed_in_order():
    assert bench.parse_models("info-vae, ae") == ["info-vae", "ae"]


@pytest.mark.parametrize("flags", [["--seeds", "0"], ["--seeds", "-2"], ["--seeds", "x"], ["--models", "gan"]])
def test_bad_flags_exit_2_before_any_work(flags, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(flags)
    assert e.value.code == 2 and flags[0] in capsys.readouterr().err


def test_the_adversarial_autoencoder_is_scored_on_its_reconstruction_term():
    assert bench.parse_models("aae") == ["aae"]
    assert bench.score_key("aae") == "recon" and bench.score_key("vae") == "loss"
    aae = rr.models.build("aae", input_shape=[1, 8, 8], latent_dim=2, hidden=16)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1000)
    recon = float(aae.loss(x)["recon"].detach())
    assert bench.test_loss(aae, x, draws=1, key="recon") == pytest.approx(recon)


def test_prior_mmd_is_small_for_prior_codes_and_large_for_shifted_ones():
    class Codes(torch.nn.Module):  # a stand-in "autoencoder" whose codes are N(shift, I) draws
        def __init__(self, shift):
            super().__init__()
            self.shift = shift

        def codes(self, x):
            z = torch.randn(len(x), 4) + self.shift
            return z, z

    x = torch.zeros(400, 1)
    assert bench.prior_mmd(Codes(0.0), x) < 0.01 < 0.1 < bench.prior_mmd(Codes(2.0), x)


def test_our_discriminator_becomes_pythaes_with_probabilities():
    pytest.importorskip("pythae")
    aae = rr.models.build("aae", input_shape=[1, 8, 8], latent_dim=2, hidden=16)
    z = torch.randn(5, 2)
    wrapped = bench.pythae_discriminator(aae)
    assert torch.allclose(wrapped(z).embedding, torch.sigmoid(aae.discriminator(z)))
