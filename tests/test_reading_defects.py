"""Defects found by reading the code (issue 8, "Runs that cannot lie"): each test here failed before
its fix. Defects 2 and 3 (PGD's restart merge, attacks on a model without an input gradient) are
tested in test_attacks.py, defect 7 (checks that could not fail) where each check lives."""

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.evaluation.probe import ProbedEncoder, train_probe


def test_dual_bound_takes_a_0d_tensor_eps_with_a_batch():
    # defect 5: a 0-d tensor eps with a batch > 1 raised a RuntimeError in certify/dual.py
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    for method in ("dual", "ibp"):
        as_float = rr.certify.margin_bounds(net, x, y, 0.05, method=method)
        as_tensor = rr.certify.margin_bounds(net, x, y, torch.tensor(0.05), method=method)
        assert torch.allclose(as_float, as_tensor), method


def test_probed_encoder_leaves_the_callers_encoder_trainable():
    # defect 6: ProbedEncoder set requires_grad=False on the caller's encoder, so training it again failed
    vae = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=16)
    x = torch.rand(20, 1, 8, 8)
    probe = train_probe(vae, x, torch.arange(20) % 3, 3)
    clf = ProbedEncoder(vae, probe)
    assert clf(x).shape == (20, 3)
    assert all(p.requires_grad for p in vae.parameters())
    vae.train()
    vae.loss(x)["loss"].backward()
    assert all(p.grad is not None for p in vae.encoder.parameters())
    history = rr.training.fit(vae, x, epochs=1, batch_size=10, progress=False, device="cpu")
    assert len(history) == 1


def test_attack_on_a_probed_encoder_does_not_touch_parameter_gradients():
    # leaving requires_grad on must not make an attack accumulate gradients into the model
    vae = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=16)
    x = torch.rand(12, 1, 8, 8)
    probe = train_probe(vae, x, torch.arange(12) % 3, 3)
    clf = ProbedEncoder(vae, probe)
    with torch.no_grad():
        y = clf(x).argmax(1)
    clf.zero_grad(set_to_none=True)  # the probe's own fit left its gradients behind
    rr.attacks.PGD(clf, eps=0.1, steps=3)(x, y)
    assert all(p.grad is None for p in clf.parameters())


@pytest.mark.parametrize("labels", [torch.arange(12).float() % 3, torch.arange(11) % 3, torch.arange(12) - 1])
def test_train_probe_refuses_bad_labels(labels):
    vae = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=16)
    with pytest.raises(rr.errors.UserError):
        train_probe(vae, torch.rand(12, 1, 8, 8), labels, 3)
