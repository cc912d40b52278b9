"""Probe and accuracy under attack, checked against closed forms on a linear classifier."""

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.evaluation.probe import ProbedEncoder, fit_linear, train_probe


def _linear_binary(d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():  # logits (0, w.x + b): class 1 iff w.x + b > 0
        net[1].weight.copy_(torch.stack([torch.zeros(d), w]))
        net[1].bias.copy_(torch.tensor([0.0, -w.sum().item() * 0.5]))
    return net, w


def test_pgd_adversarial_accuracy_equals_the_closed_form_on_a_linear_classifier():
    # For f(x) = w.x + b the best l_inf attack moves each pixel by eps against sign(w) (clipped to [0,1]);
    # a point survives iff that worst case keeps its sign.
    net, w = _linear_binary()
    X = torch.rand(400, 1, 4, 5)
    b = net[1].bias[1]
    y = ((X.flatten(1) @ w + b) > 0).long()
    for eps in (0.02, 0.05, 0.1):
        direction = torch.where(y[:, None] == 1, -w.sign(), w.sign())
        worst = (X.flatten(1) + eps * direction).clamp(0, 1)
        survives = (((worst @ w + b) > 0).long() == y).float().mean().item()
        atk = rr.attacks.PGD(net, eps=eps, steps=20, restarts=2)
        assert rr.evaluation.adversarial_accuracy(net, X, y, atk) == pytest.approx(survives, abs=1e-6)


def test_adversarial_accuracy_counts_only_clean_correct_points():
    net, w = _linear_binary()
    X = torch.rand(100, 1, 4, 5)
    y = 1 - rr.attacks.predict(net, X)  # every point misclassified
    atk = rr.attacks.PGD(net, eps=0.0, steps=1)
    assert rr.evaluation.adversarial_accuracy(net, X, y, atk) == 0.0
    assert rr.evaluation.clean_accuracy(net, X, y) == 0.0


def test_restarts_and_steps_never_make_the_attack_weaker(digits):
    X, y, Xt, yt = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    clean = rr.evaluation.clean_accuracy(net, Xt, yt)
    accs = []
    for steps, restarts in [(1, 1), (10, 1), (10, 5)]:
        torch.manual_seed(0)
        accs.append(
            rr.evaluation.adversarial_accuracy(
                net, Xt, yt, rr.attacks.PGD(net, eps=0.05, steps=steps, restarts=restarts)
            )
        )
    assert clean > 0.85
    # (accs[0] <= clean held by construction: only clean-correct points are counted.) The attack must
    # do something: the strongest setting breaks at least a tenth of the test set
    assert accs[0] >= accs[1] >= accs[2] and accs[2] < clean - 0.1


def test_pgd_respects_the_ball_and_the_box_for_both_norms(digits):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    X, y = digits[0][:50], digits[1][:50]
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        x_adv = rr.attacks.PGD(net, eps=eps, steps=5, norm=norm)(X, y)
        d = (x_adv - X).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert size.max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_linear_probe_recovers_a_linearly_separable_labelling():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(600, 5, generator=g)
    y = (feats @ torch.randn(5, 3, generator=g)).argmax(1)
    probe = fit_linear(feats, y, 3)
    assert (probe(feats).argmax(1) == y).float().mean() > 0.97


def test_probed_encoder_uses_the_posterior_mean_and_leaves_requires_grad_alone(digits):
    vae = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=16)
    probe = train_probe(vae, digits[0][:200], digits[1][:200], 10)
    clf = ProbedEncoder(vae, probe)
    x = digits[0][:5]
    torch.testing.assert_close(clf(x), probe(vae.encode(x)[0]))
    assert all(p.requires_grad for p in vae.parameters())  # the caller's encoder stays trainable


def test_attack_input_checks_are_user_errors():
    net, _ = _linear_binary()
    atk = rr.attacks.PGD(net, eps=0.1, steps=1)
    x = torch.rand(3, 1, 4, 5)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(rr.UserError, match="NaN"):
        atk(bad, torch.zeros(3, dtype=torch.long))
    with pytest.raises(rr.UserError, match=r"\[0, 1\]"):
        atk(x * 3, torch.zeros(3, dtype=torch.long))
    with pytest.raises(rr.UserError, match="shape"):
        atk(x, torch.zeros(4, dtype=torch.long))


def test_train_probe_on_given_means_is_the_probe_on_the_encoded_means(digits):
    vae = rr.models.build("vae", input_shape=[1, 8, 8], latent_dim=4, hidden=32).eval()
    X, y = digits[0][:200], digits[1][:200]
    means = rr.evaluation.probe.encode_means(vae, X)
    given = train_probe(vae, X, y, 10, means=means)
    encoded = train_probe(vae, X, y, 10)
    assert torch.equal(given.weight, encoded.weight) and torch.equal(given.bias, encoded.bias)
    with pytest.raises(rr.UserError, match="one code per image"):
        train_probe(vae, X, y, 10, means=means[:-1])
