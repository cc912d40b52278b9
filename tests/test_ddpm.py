"""DDPM (issue 10): the reverse step against the closed-form posterior q(x_{t-1} | x_t, x_0) derived here
by Bayes' rule, T-step sampling with a model that knows the true noise recovers x_0, the loss by hand,
exact resume of a killed run with EMA, bad values."""

import pytest
import torch
import torch.nn.functional as F

import robustrep as rr
from robustrep.diffusion import NoiseSchedule, sample_ancestral, sample_strided, strided_timesteps
from robustrep.errors import UserError
from robustrep.training import fit

SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)


def bayes_posterior(x0, xt, t, s=SCHEDULE):
    """q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) times q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1},
    beta_t), as a function of x_{t-1}: a product of Gaussians, precisions add."""
    ab_prev = s.alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
    if t == 0:
        return x0, torch.tensor(0.0, dtype=torch.float64)
    precision = 1 / (1 - ab_prev) + s.alphas[t] / s.betas[t]
    mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + s.alphas[t].sqrt() * xt / s.betas[t]) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("t", [1, 2, 10, 500, 999])
def test_reverse_step_with_the_true_noise_is_the_posterior(t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.rand(8, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = SCHEDULE.add_noise(x0, t, noise)
    mean, var = SCHEDULE.step_distribution(noise, t, xt)
    want_mean, want_var = bayes_posterior(x0, xt, t)
    torch.testing.assert_close(mean, want_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(var.squeeze(), want_var, rtol=1e-9, atol=1e-12)
    # Ho et al. eq. 11: mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
    eq11 = (xt - SCHEDULE.betas[t] / (1 - SCHEDULE.alpha_bar[t]).sqrt() * noise) / SCHEDULE.alphas[t].sqrt()
    torch.testing.assert_close(mean, eq11, rtol=1e-9, atol=1e-9)


def test_ancestral_steps_draw_with_the_posterior_variance():
    t = 300
    x0 = torch.full((200_000, 1), 0.3, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xt = SCHEDULE.add_noise(x0, t, noise)
    draws = SCHEDULE.step(noise, t, xt, generator=torch.Generator().manual_seed(1))
    mean, var = bayes_posterior(x0, xt, t)
    residual = draws - mean
    assert float(residual.mean()).__abs__() < 4 * float(var.sqrt()) / 200_000**0.5
    assert float(residual.var()) == pytest.approx(float(var), rel=0.01)


def test_alpha_bar_is_the_variance_of_the_composed_forward_steps():
    var, scale = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for t in range(SCHEDULE.timesteps):  # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e, composed step by step
        scale, var = scale * SCHEDULE.alphas[t].sqrt(), SCHEDULE.alphas[t] * var + SCHEDULE.betas[t]
    assert float(scale**2) == pytest.approx(float(SCHEDULE.alpha_bar[-1]), rel=1e-9)
    assert float(var) == pytest.approx(float(1 - SCHEDULE.alpha_bar[-1]), rel=1e-9)


def oracle(x0):
    def eps(x, t):  # the true noise of x given its x_0
        ab = SCHEDULE.alpha_bar.to(x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    return eps


def test_sampling_with_the_true_noise_recovers_x0():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    x = sample_ancestral(
        oracle(x0), x0.shape, SCHEDULE, generator=g, x_T=torch.randn(x0.shape, generator=g, dtype=torch.float64)
    )
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-6)
    for eta in (0.0, 1.0):
        x = sample_strided(
            oracle(x0),
            x0.shape,
            SCHEDULE,
            steps=20,
            eta=eta,
            generator=g,
            x_T=torch.randn(x0.shape, generator=g, dtype=torch.float64),
        )
        torch.testing.assert_close(x, x0, rtol=0, atol=1e-6)


def test_strided_timesteps_run_from_the_last_to_the_first():
    assert strided_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert strided_timesteps(10, 10) == list(range(9, -1, -1))


def test_ddpm_loss_is_the_simple_noise_regression():
    torch.manual_seed(0)
    model = rr.models.build("ddpm", input_shape=(1, 8, 8), width=8, timesteps=50)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    loss = model.loss(x)["loss"]
    torch.manual_seed(1)
    t = torch.randint(50, (6,))
    noise = torch.randn(6, 1, 8, 8)
    ab = model.schedule.alpha_bar.float()[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * (2 * x - 1) + (1 - ab).sqrt() * noise
    torch.testing.assert_close(loss, F.mse_loss(model.net(xt, t), noise))


def test_28_pixel_images_are_padded_to_32():
    model = rr.models.build("ddpm", width=8, timesteps=10, sample_steps=2)
    assert model._pad(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 32, 32)
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)


def test_a_killed_ddpm_resumes_to_the_uninterrupted_run_with_its_ema(tmp_path):
    X = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    class Killed(Exception):
        pass

    def make():
        return rr.models.build("ddpm", input_shape=(1, 8, 8), width=8, timesteps=50)

    def run(folder, kill_at=None, resume=False):
        torch.manual_seed(0)
        model = make()
        if kill_at is not None:

            def die(epoch, epochs):
                if epoch == kill_at:
                    raise Killed

            model.on_epoch_start = die
        fit(model, X, epochs=3, batch_size=16, seed=2, run_dir=folder, progress=False, resume=resume, ema_decay=0.9)
        return model

    run(tmp_path / "a")
    with pytest.raises(Killed):
        run(tmp_path / "b", kill_at=1)
    run(tmp_path / "b", resume=True)
    for f in ("ema.safetensors", "model.safetensors"):
        a = rr.runs.load_weights(make(), tmp_path / "a" / f).state_dict()
        b = rr.runs.load_weights(make(), tmp_path / "b" / f).state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{f} {k}")


@pytest.mark.parametrize(
    "bad",
    [
        dict(timesteps=0),
        dict(beta_start=0.0),
        dict(beta_end=1.0),
        dict(beta_start=0.02, beta_end=1e-4),
        dict(beta_end=float("nan")),
        dict(sampler="euler"),
        dict(sample_steps=0),
        dict(sample_steps=2000),
        dict(eta=-0.1),
        dict(eta=float("inf")),
        dict(width=0),
        dict(width=1.5),
    ],
)
def test_bad_settings_are_refused_at_construction(bad):
    with pytest.raises(UserError):
        rr.models.build("ddpm", input_shape=(1, 8, 8), **bad)


def test_bad_schedules_are_refused():
    for betas in ([], [0.0, 0.1], [0.5, 1.0], [float("nan")]):
        with pytest.raises(UserError):
            NoiseSchedule(torch.tensor(betas))
