"""VAE and smooth encoder: losses in the shape of MATH.md 2-3, the gamma -> 0 identity, selection."""

import math

import pytest
import torch

import robustrep as rr
from robustrep.divergences import gaussian_nll, kl_standard_normal, w2_squared

SHAPE = (1, 8, 8)


def _x(b=16):
    return torch.rand(b, *SHAPE)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae_loss_is_reconstruction_plus_beta_kl(arch):
    vae = rr.models.VAE(input_shape=SHAPE, latent_dim=5, arch=arch, obs_var=0.5, beta=3.0)
    x = _x()
    torch.manual_seed(1)
    out = vae.loss(x)
    torch.manual_seed(1)
    mu, var = vae.encode(x)
    z = mu + var.sqrt() * torch.randn_like(mu)
    recon = gaussian_nll(x, vae.decode(z), 0.5)
    expected = (recon + 3.0 * kl_standard_normal(mu, var)).mean()
    torch.testing.assert_close(out["loss"], expected)
    assert vae.decode(mu).shape == x.shape and 0 <= vae.decode(mu).min() and vae.decode(mu).max() <= 1


def test_beta_vae_is_the_vae_class_with_beta_preset():
    m = rr.models.build("beta-vae", input_shape=SHAPE)
    assert type(m) is rr.models.VAE and m.beta == 4.0


def test_se_at_small_gamma_is_vae_loss_plus_kl_of_the_fictive_point():
    # MATH.md 3: at gamma -> 0, E = [VAE loss on x] + KL(q(z|x')||p) up to the constant -d log(2 pi).
    d = 6
    se = rr.models.SmoothEncoder(input_shape=SHAPE, latent_dim=d, obs_var=0.7, gamma=1e-8, select_steps=3)
    vae = rr.models.VAE(input_shape=SHAPE, latent_dim=d, obs_var=0.7)
    vae.load_state_dict(se.state_dict())
    x = _x()
    x_sel = se.select(x)
    se.select = lambda _: x_sel
    torch.manual_seed(5)
    e = se.loss(x)["loss"]
    torch.manual_seed(5)
    v = vae.loss(x)["loss"]
    kl_b = kl_standard_normal(*se.encode(x_sel)).mean()
    torch.testing.assert_close(e, v + kl_b - d * math.log(2 * math.pi), rtol=1e-5, atol=1e-4)


def test_se_decoder_gradient_equals_the_vae_gradient():
    # "The decoder sees only x": E2 and WD do not touch the decoder.
    se = rr.models.SmoothEncoder(input_shape=SHAPE, latent_dim=4, gamma=3.0, select_steps=2)
    vae = rr.models.VAE(input_shape=SHAPE, latent_dim=4)
    vae.load_state_dict(se.state_dict())
    x = _x()
    x_sel = se.select(x)
    se.select = lambda _: x_sel
    for model in (se, vae):
        torch.manual_seed(7)
        model.zero_grad()
        model.loss(x)["loss"].backward()
    for p_se, p_vae in zip(se.decoder.parameters(), vae.decoder.parameters()):
        torch.testing.assert_close(p_se.grad, p_vae.grad)


@pytest.mark.parametrize("mode", ["pgd", "random"])
def test_selection_stays_in_the_ball_and_the_unit_box(mode):
    se = rr.models.SmoothEncoder(input_shape=SHAPE, latent_dim=4, select=mode, select_eps=0.2, select_steps=5)
    x = _x(64)
    x_sel = se.select(x)
    assert (x_sel - x).abs().max() <= 0.2 + 1e-6
    assert x_sel.min() >= 0 and x_sel.max() <= 1
    assert not x_sel.requires_grad


def test_pgd_selection_finds_larger_w2_than_random_selection():
    se = rr.models.SmoothEncoder(input_shape=SHAPE, latent_dim=4, select_eps=0.1, select_steps=10)
    x = _x(128)
    with torch.no_grad():
        ma, va = se.encode(x)
    w2 = {}
    for mode in ("pgd", "random"):
        se.select_mode = mode
        with torch.no_grad():
            w2[mode] = w2_squared(ma, va, *se.encode(se.select(x))).mean().item()
    assert w2["pgd"] > 2 * w2["random"]


def test_selection_does_not_touch_parameter_gradients():
    se = rr.models.SmoothEncoder(input_shape=SHAPE, latent_dim=4, select_steps=3)
    se.select(_x())
    assert all(p.grad is None for p in se.parameters())


def test_bad_hyperparameters_and_inputs_are_user_errors():
    with pytest.raises(rr.UserError):
        rr.models.SmoothEncoder(input_shape=SHAPE, select="bogus")
    with pytest.raises(rr.UserError):
        rr.models.VAE(input_shape=(1, 7, 7), arch="conv")
    with pytest.raises(rr.UserError):
        rr.models.build("no-such-model")
    vae = rr.models.VAE(input_shape=SHAPE)
    with pytest.raises(rr.UserError, match="shape"):
        vae.loss(torch.rand(4, 1, 28, 28))
    x = _x(4)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(rr.UserError, match="NaN"):
        vae.loss(x)


def test_conv4_is_the_beta_vae_papers_dsprites_network():
    """Four stride-2 4x4 convolutions of 32, 32, 64, 64 channels down to a 4x4 map on 64x64 images, a
    256-unit layer, and the mirror image in the decoder (Locatello et al. 2019, Table 1)."""
    from torch import nn

    vae = rr.models.VAE(input_shape=(1, 64, 64), latent_dim=10, arch="conv4", hidden=256, likelihood="bernoulli")
    convs = [m for m in vae.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs] == [(c, (4, 4), (2, 2)) for c in (32, 32, 64, 64)]
    linears = [m for m in vae.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 256), (256, 20)]
    deconvs = [m for m in vae.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == [64, 32, 32, 1]
    x = (torch.rand(3, 1, 64, 64) > 0.8).float()
    assert vae.reconstruct(x).shape == x.shape
    assert vae.loss(x)["loss"].item() > 0
    with pytest.raises(rr.UserError, match="divisible by 16"):
        rr.models.VAE(input_shape=(1, 40, 40), arch="conv4")  # divisible by 4 (enough for conv), not by 16
    rr.models.VAE(input_shape=(1, 40, 40), arch="conv")
