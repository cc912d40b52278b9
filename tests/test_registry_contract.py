"""The contract every registered model keeps with the one training loop (issue 7). Parametrised over the
model registry: a model registered anywhere in the package is picked up without touching this file."""

import inspect
import math

import pytest
import torch

import robustrep as rr
from robustrep.runs import load_weights, save_weights
from robustrep.training import compute_loss, optimizer_specs, phase_parameters, phase_schedule, train_only

SHAPE = (1, 8, 8)


def build(name: str):
    cls, _ = rr.models.MODELS[name]
    accepted = inspect.signature(cls.__init__).parameters
    extra = {"num_classes": 10} if "num_classes" in accepted else {}
    torch.manual_seed(0)
    return rr.models.build(name, input_shape=SHAPE, **extra)


def batch(n: int = 16):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(10, (n,), generator=g)


@pytest.mark.parametrize("name", sorted(rr.models.MODELS))
def test_every_phase_has_a_finite_loss_whose_gradient_reaches_only_its_parameters(name):
    model = build(name).train()
    x, y = batch()
    if hasattr(model, "on_fit_start"):
        model.on_fit_start(x)
    specs = optimizer_specs(model)
    trainable = phase_parameters(model)
    phases = phase_schedule(model, specs)
    assert set(phases) <= {s.name for s in specs}
    owners = {id(p): phase for phase, params in trainable.items() for p in params}
    assert sum(len(v) for v in trainable.values()) == len(owners)  # no parameter in two optimisers
    for phase in dict.fromkeys(phases):
        if len(trainable) > 1:
            train_only(trainable, phase)
        model.zero_grad(set_to_none=True)
        losses = compute_loss(model, x, y, phase)
        assert "loss" in losses and losses["loss"].dim() == 0
        assert all(math.isfinite(float(v.detach())) for v in losses.values()), (phase, losses)
        if phase not in trainable:
            continue
        losses["loss"].backward()
        reached = {owners.get(id(p)) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert reached == {phase}, f"{name}: phase {phase!r} changed the parameters of {reached - {phase}}"
    train_only(trainable, None)


@pytest.mark.parametrize("name", sorted(rr.models.MODELS))
def test_weights_round_trip_through_safetensors(name, tmp_path):
    model = build(name)
    if hasattr(model, "on_fit_start"):
        model.on_fit_start(batch()[0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # weights that differ from a fresh build
    save_weights(model, tmp_path / "w.safetensors")
    again = load_weights(build(name), tmp_path / "w.safetensors")
    for (k, p), q in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("name", sorted(n for n, (cls, _) in rr.models.MODELS.items() if hasattr(cls, "sample")))
def test_sample_gives_images_of_the_data_shape_in_the_unit_interval(name):
    model = build(name).eval()
    with torch.no_grad():
        a = model.sample(5, generator=torch.Generator().manual_seed(0))
        b = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, *SHAPE) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)  # a generator makes sampling reproducible
