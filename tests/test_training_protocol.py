"""The training protocol: models with several optimisers and phases, hooks, EMA and schedules, all
through the one `fit` (issue 7). The two toy models live here, not in the package: they prove the loop."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustrep as rr
from robustrep.training import OptimizerSpec, fit, lr_factor


def ring_of_gaussians(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(modes, (n,), generator=g)
    angle = 2 * math.pi * k / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return centres + std * torch.randn(n, 2, generator=g)


def mlp(i, o, h=64):
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


class RingGAN(nn.Module):
    """Goodfellow et al. 2014, Algorithm 1 with k discriminator steps per generator step, the non-saturating
    generator loss, on 2-D points."""

    monitor = None  # a GAN's losses say nothing about which epoch is best
    noise_dim = 8

    def __init__(self, k: int = 1):
        super().__init__()
        self.generator, self.discriminator = mlp(self.noise_dim, 2), mlp(2, 1)
        self.phases = ["discriminator"] * k + ["generator"]

    def optimizers(self):
        return [
            OptimizerSpec("discriminator", ("discriminator",), lr=1e-3, betas=(0.5, 0.999)),
            OptimizerSpec("generator", ("generator",), lr=1e-3, betas=(0.5, 0.999)),
        ]

    def sample(self, n, generator=None):
        return self.generator(torch.randn(n, self.noise_dim, generator=generator))

    def loss(self, x, y=None, phase="discriminator"):
        fake = self.generator(torch.randn(len(x), self.noise_dim))
        if phase == "discriminator":  # max log D(x) + log(1 - D(G(z)))
            loss = F.softplus(-self.discriminator(x)).mean() + F.softplus(self.discriminator(fake)).mean()
        else:  # non-saturating: max log D(G(z))
            loss = F.softplus(-self.discriminator(fake)).mean()
        return {"loss": loss}


class ClippedCritic(nn.Module):
    """WGAN (Arjovsky et al. 2017, Algorithm 1): n_critic critic steps with RMSProp, weights clipped to
    [-c, c] after every critic step."""

    monitor = None

    def __init__(self, clip: float = 0.01, n_critic: int = 5):
        super().__init__()
        self.clip = clip
        self.generator, self.critic = mlp(4, 2, 16), mlp(2, 1, 16)
        with torch.no_grad():  # start far outside the box, so a missing clip is seen
            for p in self.critic.parameters():
                p.mul_(0).add_(0.5)
        self.phases = ["critic"] * n_critic + ["generator"]

    def optimizers(self):
        return [
            OptimizerSpec("critic", ("critic",), kind="rmsprop", lr=5e-5),
            OptimizerSpec("generator", ("generator",), kind="rmsprop", lr=5e-5),
        ]

    def loss(self, x, y=None, phase="critic"):
        fake = self.generator(torch.randn(len(x), 4))
        if phase == "critic":
            return {"loss": self.critic(fake).mean() - self.critic(x).mean()}
        return {"loss": -self.critic(fake).mean()}

    def after_step(self, phase):
        if phase == "critic":
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.clip, self.clip)


def ring_quality(points: torch.Tensor, modes: int = 8, radius: float = 2.0, std: float = 0.1) -> tuple[int, float]:
    """(modes holding at least 2% of the points within 3 std of their centre, share of such points)."""
    angle = 2 * math.pi * torch.arange(modes) / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    d = torch.cdist(points, centres)
    near = d.min(1).values < 3 * std
    counts = torch.bincount(d.argmin(1)[near], minlength=modes)
    return int((counts >= 0.02 * len(points)).sum()), float(near.float().mean())


def test_gan_on_a_ring_of_8_gaussians_covers_every_mode():
    X = ring_of_gaussians(2048, std=0.1)
    torch.manual_seed(0)
    gan = RingGAN(k=1)
    with torch.no_grad():
        untrained = ring_quality(gan.sample(2000))
    history = fit(gan, X, epochs=300, batch_size=128, seed=0, progress=False)  # 4800 steps, two optimisers
    with torch.no_grad():
        modes, share = ring_quality(gan.sample(4000, generator=torch.Generator().manual_seed(1)))
    assert untrained[0] < 8 and untrained[1] < 0.2  # the test can fail: an untrained generator misses modes
    assert modes == 8 and share > 0.6
    assert {"discriminator/loss", "generator/loss"} <= set(history[-1])


def test_wgan_critic_weights_stay_clipped_after_every_step():
    X = ring_of_gaussians(640)
    model = ClippedCritic(clip=0.01, n_critic=5)
    steps, clip_ok = [], []
    original = model.after_step

    def checked(phase):
        original(phase)
        steps.append(phase)
        clip_ok.append(max(p.abs().max().item() for p in model.critic.parameters()) <= 0.01)

    model.after_step = checked
    fit(model, X, epochs=3, batch_size=64, progress=False)
    assert len(steps) == 3 * 10  # after_step ran after every one of the 30 steps
    assert steps[:6] == ["critic"] * 5 + ["generator"]
    assert all(clip_ok)


def test_phases_that_share_a_batch_each_see_every_batch_and_finish_their_schedule(tmp_path):
    """An AAE's discriminator and autoencoder updates both use each minibatch (Makhzani et al. 2016), so an
    epoch of 10 batches is 10 steps of each optimiser (and each one's schedule counts 20 steps in 2 epochs);
    a GAN's phases each take a new batch."""
    X = ring_of_gaussians(640)
    seen = []

    class Shared(RingGAN):
        phases_share_batch = True

        def loss(self, x, y=None, phase="discriminator"):
            seen.append((phase, float(x.sum())))
            return super().loss(x, y, phase)

    model = Shared(k=1)
    fit(model, X, epochs=2, batch_size=64, progress=False)
    assert [p for p, _ in seen] == ["discriminator", "generator"] * 20
    assert all(seen[i][1] == seen[i + 1][1] for i in range(0, 40, 2))  # both phases on one batch
    assert len({b for _, b in seen}) == 20  # and a new batch for each pair

    class Stop(Exception):
        pass

    def stop_at_epoch_2(epoch, epochs):
        if epoch == 1:
            raise Stop

    model = Shared(k=1)
    model.on_epoch_start = stop_at_epoch_2
    with pytest.raises(Stop):
        fit(model, X, epochs=2, batch_size=64, lr_schedule="cosine", run_dir=tmp_path / "run", progress=False)
    schedules = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=False)["schedulers"]
    for name in ("discriminator", "generator"):  # half-way through its 20 steps: the cosine is at 1/2
        assert schedules[name]["_last_lr"][0] == pytest.approx(0.5 * 1e-3), name
    seen.clear()
    model = RingGAN(k=1)  # the default: one phase per batch
    model.loss = lambda x, y=None, phase="discriminator": (
        seen.append((phase, float(x.sum()))) or RingGAN.loss(model, x, y, phase)
    )
    fit(model, X, epochs=2, batch_size=64, progress=False)
    assert len(seen) == 20 and len({b for _, b in seen}) == 20


def test_each_phase_trains_only_its_own_parameters():
    X = ring_of_gaussians(256)
    gan = RingGAN(k=2)
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    fit(gan, X[:128], epochs=1, batch_size=64, progress=False)  # 2 batches: two discriminator steps
    after = gan.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("generator."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("discriminator."))


def test_two_optimisers_and_ema_resume_exactly(tmp_path):
    X = ring_of_gaussians(512)

    class Killed(Exception):
        pass

    def run(folder, kill_at=None, resume=False):
        torch.manual_seed(0)
        gan = RingGAN(k=2)
        if kill_at is not None:

            def die(epoch, epochs):
                if epoch == kill_at:
                    raise Killed

            gan.on_epoch_start = die
        fit(
            gan,
            X,
            epochs=4,
            batch_size=64,
            seed=5,
            run_dir=folder,
            progress=False,
            resume=resume,
            ema_decay=0.9,
            lr_schedule="cosine",
            grad_clip=1.0,
        )
        return gan

    straight = run(tmp_path / "a")
    with pytest.raises(Killed):
        run(tmp_path / "b", kill_at=2)
    resumed = run(tmp_path / "b", resume=True)
    for (k, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=k)
    a = rr.runs.load_weights(RingGAN(k=2), tmp_path / "a" / "ema.safetensors")
    b = rr.runs.load_weights(RingGAN(k=2), tmp_path / "b" / "ema.safetensors")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert any(not torch.equal(p, r) for p, r in zip(a.parameters(), straight.parameters()))  # EMA != last
    assert not (tmp_path / "a" / "checkpoint" / "best.pt").exists()  # monitor None: no best


def test_learning_rate_schedules():
    assert lr_factor("constant", 7, 10, 0) == 1.0
    assert lr_factor("cosine", 0, 10, 0) == 1.0 and lr_factor("cosine", 10, 10, 0) == pytest.approx(0.0)
    assert lr_factor("cosine", 5, 10, 0) == pytest.approx(0.5)
    assert lr_factor("linear", 5, 10, 0) == pytest.approx(0.5)
    assert [lr_factor("constant", s, 10, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_a_schedule_reaches_the_optimiser():
    model = nn.Linear(2, 1)
    model.loss = lambda x, y=None: {"loss": model(x).pow(2).mean()}
    opt_lrs = []
    original_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        opt_lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        fit(model, torch.randn(40, 2), epochs=2, batch_size=10, lr=0.1, lr_schedule="linear", progress=False)
    finally:
        torch.optim.Adam.step = original_step
    assert opt_lrs[0] == pytest.approx(0.1) and opt_lrs[-1] == pytest.approx(0.1 / 8)
    assert all(a > b for a, b in zip(opt_lrs, opt_lrs[1:]))


@pytest.mark.parametrize(
    "bad",
    [
        dict(lr=float("nan")),
        dict(ema_decay=1.5),
        dict(grad_clip=-1.0),
        dict(lr_schedule="sometimes"),
        dict(epochs=-1),
        dict(batch_size=0),
    ],
)
def test_bad_loop_settings_are_refused_before_training(bad):
    model = RingGAN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(rr.UserError):
        fit(model, ring_of_gaussians(64), progress=False, **bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
