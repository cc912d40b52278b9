"""GAN, DCGAN, WGAN and WGAN-GP (issue 10): each loss against a hand computation of the paper's equation,
the gradient penalty per example, clipping, exact resume of a killed run, the command line, bad values."""

import pytest
import torch
import torch.nn.functional as F

import robustrep as rr
from robustrep.cli import main
from robustrep.errors import UserError
from robustrep.models.gan import gradient_penalty
from robustrep.training import fit

SHAPE = (1, 8, 8)


def images(n=16, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_gradient_penalty_is_per_example_over_all_pixels():
    # f(x) = sum(x^2) / 2 per example has gradient x: the penalty is mean_i (||x_hat_i||_2 - 1)^2
    def critic(x):
        return 0.5 * x.pow(2).flatten(1).sum(1, keepdim=True)

    real, fake = images(6, 1), -images(6, 2)
    u = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    x_hat = u * real + (1 - u) * fake
    by_hand = sum((x_hat[i].pow(2).sum().sqrt() - 1) ** 2 for i in range(6)) / 6
    torch.testing.assert_close(gradient_penalty(critic, real, fake, u), by_hand)
    # a norm over the whole batch (a common mistake) gives another number
    assert abs(float((x_hat.norm() - 1) ** 2) - float(by_hand)) > 1e-2


def test_wgan_gp_critic_loss_is_the_papers_equation():
    torch.manual_seed(0)
    model = rr.models.build("wgan-gp", input_shape=SHAPE, penalty=10.0)
    x = images()
    torch.manual_seed(5)
    losses = model.loss(x, phase="critic")
    torch.manual_seed(5)  # the same draws: z, then u
    fake = model.generator(torch.randn(len(x), model.noise_dim)).detach()
    u = torch.rand(len(x), 1, 1, 1)
    real = 2 * x - 1
    norms = []
    for i in range(len(x)):  # the gradient of each example on its own
        xi = (u[i] * real[i] + (1 - u[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(model.critic(xi).sum(), xi)
        norms.append(g.norm())
    gp = torch.stack([(n - 1) ** 2 for n in norms]).mean()
    expected = model.critic(fake).mean() - model.critic(real).mean() + 10.0 * gp
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["penalty"], gp, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("generator_loss", ["saturating", "non-saturating"])
def test_gan_losses_are_algorithm_1(generator_loss):
    torch.manual_seed(0)
    # no dropout: the discriminator below must be the same function as inside the loss
    model = rr.models.build("gan", input_shape=SHAPE, generator_loss=generator_loss, dropout=0.0)
    x = images()
    torch.manual_seed(1)
    d_loss = model.loss(x, phase="discriminator")["loss"]
    torch.manual_seed(1)
    fake = model.generator(torch.randn(len(x), model.noise_dim))
    D = lambda v: torch.sigmoid(model.discriminator(v))  # noqa: E731
    expected = -(torch.log(D(2 * x - 1)).mean() + torch.log(1 - D(fake)).mean())
    torch.testing.assert_close(d_loss, expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(2)
    g_loss = model.loss(x, phase="generator")["loss"]
    torch.manual_seed(2)
    fake = model.generator(torch.randn(len(x), model.noise_dim))
    if generator_loss == "saturating":
        expected = torch.log(1 - D(fake)).mean()
    else:
        expected = -torch.log(D(fake)).mean()
    torch.testing.assert_close(g_loss, expected, rtol=1e-5, atol=1e-6)


def test_the_gans_discriminator_drops_units_only_in_training_and_its_generator_normalises():
    torch.manual_seed(0)
    model = rr.models.build("gan", input_shape=SHAPE, dropout=0.5)
    x = 2 * images() - 1
    assert not torch.equal(model.discriminator(x), model.discriminator(x))  # two dropout masks
    model.eval()
    torch.testing.assert_close(model.discriminator(x), model.discriminator(x))
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.generator.modules())
    plain = rr.models.build("gan", input_shape=SHAPE, batch_norm=False, dropout=0.0)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)) for m in plain.modules())


def test_the_saturating_loss_has_no_gradient_where_the_discriminator_wins():
    # D(G(z)) = sigmoid(-8): early in training the minimax generator loss gives almost no signal
    logit = torch.tensor([-8.0], requires_grad=True)
    (sat,) = torch.autograd.grad(-F.softplus(logit).sum(), logit)
    (non,) = torch.autograd.grad(F.softplus(-logit).sum(), logit)
    assert abs(float(sat)) < 1e-3 and abs(float(non)) > 0.99


def test_dcgan_starts_from_the_papers_initialisation_unless_told_otherwise():
    """Radford et al. 2016, Sec. 4: weights from N(0, 0.02); batch norm's scales N(1, 0.02), biases 0."""
    torch.manual_seed(0)
    paper = rr.models.build("dcgan", input_shape=(1, 28, 28), width=16)
    torch.manual_seed(0)
    torch_default = rr.models.build("dcgan", input_shape=(1, 28, 28), width=16, init="pytorch")
    for (name, p), q in zip(paper.named_parameters(), torch_default.parameters()):
        p, q = p.detach(), q.detach()
        if p.dim() > 1:  # conv and linear weights: std 0.02 within sampling error, torch's default differs
            assert abs(float(p.std()) - 0.02) < 0.002 and abs(float(p.mean())) < 0.002, name
            assert abs(float(q.std()) - 0.02) > 0.005, name
        elif "bias" in name:
            assert float(p.abs().max()) == 0.0, name
        else:  # batch norm's scale
            assert abs(float(p.mean()) - 1) < 0.01 and 0.01 < float(p.std()) < 0.03, name


def test_wgan_critic_is_clipped_after_its_steps():
    torch.manual_seed(0)
    model = rr.models.build("wgan", input_shape=SHAPE, clip=0.01)
    fit(model, images(64), epochs=1, batch_size=16, progress=False)
    assert max(float(p.detach().abs().max()) for p in model.critic.parameters()) <= 0.01


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp"])
def test_a_killed_gan_resumes_to_the_uninterrupted_run(name, tmp_path):
    X = images(96)

    class Killed(Exception):
        pass

    def run(folder, kill_at=None, resume=False):
        torch.manual_seed(0)
        model = rr.models.build(name, input_shape=SHAPE, width=4, noise_dim=8)
        if kill_at is not None:

            def die(epoch, epochs):
                if epoch == kill_at:
                    raise Killed

            model.on_epoch_start = die
        fit(model, X, epochs=3, batch_size=32, seed=3, run_dir=folder, progress=False, resume=resume, ema_decay=0.9)
        return model

    straight = run(tmp_path / "a")
    with pytest.raises(Killed):
        run(tmp_path / "b", kill_at=2)
    resumed = run(tmp_path / "b", resume=True)
    for (k, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=k)
    for f in ("ema.safetensors", "model.safetensors"):
        a = rr.runs.load_weights(rr.models.build(name, input_shape=SHAPE, width=4, noise_dim=8), tmp_path / "a" / f)
        b = rr.runs.load_weights(rr.models.build(name, input_shape=SHAPE, width=4, noise_dim=8), tmp_path / "b" / f)
        for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=f"{f} {k}")


@pytest.mark.parametrize(
    "name, bad",
    [
        ("gan", dict(generator_loss="minimax")),
        ("gan", dict(k=0)),
        ("gan", dict(noise_dim=0)),
        ("gan", dict(d_lr=float("nan"))),
        ("gan", dict(g_lr=-1.0)),
        ("gan", dict(k=1.5)),
        ("gan", dict(hidden="wide")),
        ("gan", dict(dropout=1.0)),
        ("gan", dict(dropout=float("nan"))),
        ("gan", dict(dropout=-0.1)),
        ("gan", dict(dropout="0.3")),
        ("gan", dict(batch_norm="no")),
        ("dcgan", dict(input_shape=(1, 10, 10))),
        ("dcgan", dict(init="xavier")),
        ("dcgan", dict(init=3)),
        ("wgan", dict(clip=0.0)),
        ("wgan", dict(clip=float("inf"))),
        ("wgan", dict(n_critic=0)),
        ("wgan-gp", dict(penalty=float("nan"))),
        ("wgan-gp", dict(penalty=-1.0)),
        ("wgan-gp", dict(width=0)),
    ],
)
def test_bad_settings_are_refused_at_construction(name, bad):
    with pytest.raises(UserError):
        rr.models.build(name, **{"input_shape": SHAPE, **bad})


def test_train_and_sample_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "dcgan",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--subset",
                "64",
                "--width",
                "4",
                "--ema-decay",
                "0.9",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["sample", str(out), "--n", "8", "--ema", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").exists()
    code = main(["train", "gan", "--dataset", "digits", "--generator-loss", "minimax", "--out", str(tmp_path / "r")])
    assert code == 2 and "generator_loss" in capsys.readouterr().err
