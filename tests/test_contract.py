"""DESIGN.md's public contract, called exactly as written there (outside tests use these names)."""

import torch
from torch import nn

import robustrep as rr


def test_the_public_contract_as_written_in_design_md():
    X, y = rr.data.load("mnist", split="train")
    assert X.shape[1:] == (1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    Xc, yc = rr.data.load("color-mnist", split="test", task="digit")
    assert Xc.shape[1:] == (3, 28, 28) and len(yc) == len(Xc)

    mu, var = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    assert rr.divergences.kl_standard_normal(mu, var).shape == (4,)
    assert rr.divergences.w2_squared(mu, var, mu + 1, var).shape == (4,)
    assert rr.divergences.entropic_wasserstein(mu, var, mu, var, gamma=1.0).shape == (4,)

    vae = rr.models.VAE(input_shape=(1, 28, 28), latent_dim=32, arch="mlp", obs_var=1.0)
    se = rr.models.SmoothEncoder(
        input_shape=(1, 28, 28),
        latent_dim=32,
        arch="mlp",
        obs_var=1.0,
        gamma=1.0,
        select="pgd",
        select_eps=0.1,
        select_steps=20,
    )
    x = X[:8]
    m, v = se.encode(x)
    assert m.shape == v.shape == (8, 32) and (v > 0).all()
    for model in (vae, se):
        losses = model.loss(x)
        assert losses["loss"].dim() == 0 and losses["loss"].requires_grad

    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    atk = rr.attacks.PGD(classifier, eps=0.1, steps=5, restarts=2, norm="linf")
    x_adv = atk(x, y[:8])
    assert x_adv.shape == x.shape
    torch.manual_seed(1)
    acc = rr.evaluation.adversarial_accuracy(classifier, x, y[:8], atk)
    torch.manual_seed(1)  # the same count, by hand, on the same random stream
    ok = classifier(x).argmax(1) == y[:8]
    kept = classifier(atk(x[ok], y[:8][ok])).argmax(1) == y[:8][ok] if ok.any() else ok[:0]
    assert acc == int(kept.sum()) / 8

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10))
    b = rr.certify.margin_bounds(net, x, y[:8], eps=0.1, method="dual")
    assert b.shape == (8, 10) and (b.gather(1, y[:8, None]) == 0).all()
    loss = rr.certify.robust_loss(net, x, y[:8], eps=0.1, method="dual")
    loss.backward()
    assert loss.dim() == 0 and net[1].weight.grad is not None
