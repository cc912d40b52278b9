"""EOT, RP2, the adversarial patch, the randomised defence and their evaluation: identities (the identity
distribution gives the wrapped attack exactly), brute-force means over draws, forward passes counted,
closed forms for the evaluation, and bad input refused before any work."""

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.attacks.eot import Expectation
from robustrep.attacks.rp2 import nps, total_variation
from robustrep.transforms import Distribution


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


class Counting(nn.Module):
    """Counts images through the model and calls to it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.images, self.calls = model, 0, 0

    def forward(self, x):
        self.images += len(x)
        self.calls += 1
        return self.model(x)


class Constant(nn.Module):
    """Logits that ignore the image (but keep a path to it, so gradient attacks accept the model)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.fixture()
def batch(digits):
    X, y, _, _ = digits
    return X[:6], y[:6], (y[:6] + 1) % 10


@pytest.mark.parametrize("targeted", [False, True])
def test_eot_with_the_identity_equals_the_wrapped_attack(batch, targeted):
    x, y, t = batch
    model = small_cnn()
    target = t if targeted else None
    for make in (
        lambda: rr.attacks.PGD(model, eps=0.2, steps=10),
        lambda: rr.attacks.FGSM(model, eps=0.2),
        lambda: rr.attacks.BIM(model, eps=0.2, steps=5),
    ):
        torch.manual_seed(1)
        plain = make()(x, y, target=target)
        torch.manual_seed(1)
        eot = rr.attacks.EOT(make(), Distribution(), samples=4, chunk=3)(x, y, target=target)
        assert torch.equal(plain, eot)
    torch.manual_seed(1)
    plain = rr.attacks.CW(model, steps=10, binary_search_steps=2)(x, y, target=target)
    torch.manual_seed(1)
    eot = rr.attacks.EOT(rr.attacks.CW(model, steps=10, binary_search_steps=2), Distribution(), samples=4)(
        x, y, target=target
    )
    # a mean of 4 equal float32 numbers may differ from them in the last bit, and Adam carries it on
    assert torch.allclose(plain, eot, atol=1e-5)


def test_expected_objective_is_the_mean_over_the_draws_brute_force(batch):
    x, y, t = batch
    model = small_cnn()
    kw = dict(rotation=30, scale=(0.8, 1.2), translate=1, brightness=0.1, blur=0.8, noise=0.02)
    exp = Expectation(model, Distribution(**kw, seed=7), samples=5, chunk=2)
    xg = x.clone().requires_grad_(True)
    loss, logits = exp.expected_objective(xg, t, "ce", targeted=True)
    (grad,) = torch.autograd.grad(loss.sum(), xg)
    # the same draws (same seed, same chunking), one by one
    dist = Distribution(**kw, seed=7)
    xb = x.clone().requires_grad_(True)
    losses, all_logits = [], []
    for c in (2, 2, 1):
        draws = dist.sample(c * len(x), x.shape[1:])(xb.repeat(c, 1, 1, 1))
        z = model(draws)
        losses.append(-nn.functional.cross_entropy(z, t.repeat(c), reduction="none").view(c, -1))
        all_logits.append(z.view(c, len(x), -1))
    mean = torch.cat(losses).mean(0)
    (grad_ref,) = torch.autograd.grad(mean.sum(), xb)
    assert torch.allclose(loss, mean, atol=1e-5)
    assert torch.allclose(grad, grad_ref, atol=1e-6)
    assert torch.allclose(logits, torch.cat(all_logits).mean(0), atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 3])
def test_k_draws_cost_k_forward_passes(batch, chunk):
    x, y, t = batch
    counts = {}
    for k in (1, 4, 16):
        model = Counting(small_cnn())
        dist = Distribution(rotation=30, seed=0)
        rr.attacks.EOT(rr.attacks.PGD(model, eps=0.2, steps=7, early_stop=False), dist, samples=k, chunk=chunk)(
            x, y, target=t
        )
        counts[k] = model.images
    # the attack's one unwrapped check aside, every model evaluation of the attack costs K images per image
    model = Counting(small_cnn())
    rr.attacks.PGD(model, eps=0.2, steps=7, early_stop=False)(x, y, target=t)
    overhead = model.images - len(x) * (7 + 1)  # beyond the 8 forward passes of its 7 steps (base's input check)
    assert 0 <= overhead <= len(x)
    assert counts[4] - overhead == 4 * (counts[1] - overhead)
    assert counts[16] - overhead == 16 * (counts[1] - overhead)
    # one objective: K images per image, in ceil(K / chunk) calls
    model = Counting(small_cnn())
    exp = Expectation(model, Distribution(rotation=30), samples=16, chunk=chunk)
    exp.expected_objective(x.clone().requires_grad_(True), y)
    assert model.images == 16 * len(x) and model.calls == (1 if chunk is None else 6)


def test_eot_beats_plain_pgd_under_transformations(digits):
    """On a trained 8x8 digits CNN, EOT-PGD's expected targeted success on fresh draws is higher."""
    X, y, Xt, yt = digits
    torch.manual_seed(0)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    x, yy = Xt[:40], yt[:40]
    t = (yy + 1) % 10
    dist = Distribution(rotation=20, scale=(0.9, 1.1), translate=1, seed=0)
    torch.manual_seed(0)
    plain = rr.attacks.PGD(model, eps=0.3, steps=20, early_stop=False)(x, yy, target=t)
    eot = rr.attacks.EOT(rr.attacks.PGD(model, eps=0.3, steps=20, early_stop=False), dist, samples=8)(x, yy, target=t)
    r_plain = rr.evaluation.transformation_robustness(model, plain, yy, t, dist, draws=50)
    r_eot = rr.evaluation.transformation_robustness(model, eot, yy, t, dist, draws=50)
    assert r_eot["success_eot"] > r_plain["success_eot"] + 0.1


def test_transformation_robustness_closed_form():
    x = torch.rand(8, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    t = torch.tensor([3, 3, 3, 0, 1, 3, 2, 3])
    model = Constant([0, 0, 0, 5.0, 0, 0, 0, 0, 0, 0])  # always class 3
    r = rr.evaluation.transformation_robustness(model, x, y, t, Distribution(rotation=30, noise=0.05), draws=7)
    assert r["success_plain"] == r["success_eot"] == 5 / 8
    assert r["accuracy_eot"] == 1 / 8 and r["draws"] == 7 and r["n"] == 8
    untargeted = rr.evaluation.transformation_robustness(model, x, y, None, Distribution(), draws=3)
    assert untargeted["success_eot"] == 7 / 8


def test_evaluation_uses_fresh_draws():
    """Same Distribution(seed) for the attack and the evaluation: the evaluation's draws differ."""
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 10)

    x = torch.rand(3, 1, 8, 8)
    rr.evaluation.transformation_robustness(
        Spy(), x, torch.zeros(3, dtype=torch.long), None, Distribution(rotation=30, seed=5), draws=2
    )
    attack_draws = Distribution(rotation=30, seed=5)(x.repeat(2, 1, 1, 1))
    assert not torch.allclose(seen[-1], attack_draws)


def test_viewpoint_table_shape_and_top2():
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    t = torch.tensor([3, 3, 1, 0])
    model = Constant([0, 0, 0, 2.0, 1.0, 0, 0, 0, 0, 0])
    table = rr.evaluation.viewpoint_table(model, x, y, t, angles=(-30, 0, 30), scales=(0.8, 1.2))
    assert set(table["success"]) == {"-30,0.8", "-30,1.2", "0,0.8", "0,1.2", "30,0.8", "30,1.2"}
    assert all(v == 0.5 for v in table["success"]) or all(v == 0.5 for v in table["success"].values())
    top2 = table["example"]["top2"]["0,1.2"]
    p = torch.tensor([0, 0, 0, 2.0, 1.0, 0, 0, 0, 0, 0]).softmax(0)
    assert [c for c, _ in top2] == [3, 4] and abs(top2[0][1] - float(p[3])) < 1e-4


def test_nps_and_total_variation_closed_forms():
    palette = torch.tensor([[0.0], [1.0]])
    mask = torch.ones(1, 1, 2, 2)
    p = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    # per pixel |p - 0| * |p - 1|: 0, 0, 0.25, 0.1875; mean over the 4 masked pixels
    assert torch.allclose(nps(p, mask, palette), torch.tensor([(0.25 + 0.1875) / 4]), atol=1e-5)
    step = torch.zeros(1, 1, 3, 3)
    step[..., :, 2] = 1.0  # a vertical edge: |dx| = 1 on two rows of the 2x2 differences
    assert torch.allclose(total_variation(step), torch.tensor([2.0]), atol=1e-3)


def test_rp2_respects_its_mask_and_reaches_the_target(batch):
    x, y, t = batch
    model = small_cnn()
    dist = Distribution(rotation=10, seed=0)
    atk = rr.attacks.RP2(model, dist, mask_share=0.25, steps=60, l1_steps=10, samples=4, lr=0.2)
    x_adv = atk(x, y, target=t)
    changed = ((x_adv - x).abs() > 0).flatten(1).float().sum(1)
    assert (changed <= round(0.25 * 64)).all()
    assert ((x_adv - x).abs() * (1 - atk.mask) == 0).all()
    assert (rr.attacks.predict(model, x_adv) == t).float().mean() >= 0.5
    given = torch.zeros(1, 1, 8, 8)
    given[..., 2:5, 2:5] = 1
    x_given = rr.attacks.RP2(model, dist, mask=given, steps=5, samples=2)(x, y, target=t)
    assert ((x_given - x) * (1 - given) == 0).all()


def test_patch_changes_only_its_footprint_and_is_universal(batch, digits):
    X, y_train, _, _ = digits
    model = small_cnn()
    atk = rr.attacks.AdversarialPatch(model, size=4, steps=30, batch_size=16, lr=0.1, seed=0).fit(
        X[:200], 3, y_train[:200]
    )
    patch = atk.patches[3]
    assert patch.shape == (1, 4, 4) and patch.min() >= 0 and patch.max() <= 1
    x, y, _ = batch
    keep = y != 3
    x, y = x[keep], y[keep]
    x_adv = atk(x, y, target=torch.full_like(y, 3))
    changed = ((x_adv - x).abs() > 1e-6).flatten(1).sum(1)
    # the footprint of a 4x4 patch scaled by at most 1.2 and turned by at most 30 degrees
    assert (changed <= (4 * 1.2 * 1.37 + 2) ** 2).all() and (changed > 0).all()


def test_random_resize_pad_is_random_and_the_identity_at_full_size():
    model = small_cnn()
    x = torch.rand(5, 1, 8, 8)
    defended = rr.defenses.RandomResizePad(model, low=5, seed=0)
    assert not torch.allclose(defended(x), defended(x))
    full = rr.defenses.RandomResizePad(model, low=8, seed=0)
    assert torch.allclose(full(x), model(x), atol=1e-5)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda m, d: rr.attacks.EOT(rr.attacks.PGD(m), d, samples=0), "samples"),
        (lambda m, d: rr.attacks.EOT(rr.attacks.PGD(m), d, samples=float("nan")), "samples"),
        (lambda m, d: rr.attacks.EOT(rr.attacks.PGD(m), "rotation", samples=4), "Distribution"),
        (lambda m, d: rr.attacks.EOT(m, d), "attack"),
        (lambda m, d: rr.attacks.RP2(m, d, mask_share=0), "mask share"),
        (lambda m, d: rr.attacks.RP2(m, d, mask_share=1.5), "mask share"),
        (lambda m, d: rr.attacks.RP2(m, d, mask_share=float("nan")), "mask share"),
        (lambda m, d: rr.attacks.AdversarialPatch(m, size=0), "patch size"),
        (lambda m, d: rr.attacks.AdversarialPatch(m, scale=(1.2, 0.8)), "inverted"),
        (lambda m, d: rr.defenses.RandomResizePad(m, low=-1), "low"),
    ],
)
def test_bad_settings_are_refused(make, words):
    with pytest.raises(rr.UserError, match=words):
        make(small_cnn(), Distribution(rotation=10))


def test_bad_calls_are_refused_before_any_work(batch):
    x, y, t = batch
    model = Counting(small_cnn())
    d = Distribution(rotation=10)
    for atk in (
        rr.attacks.EOT(rr.attacks.PGD(model), d, samples=2),
        rr.attacks.RP2(model, d, steps=1),
        rr.attacks.AdversarialPatch(model, size=4, steps=1),
    ):
        with pytest.raises(rr.UserError, match="target equals the label"):
            atk(x, y, target=y)
    with pytest.raises(rr.UserError, match="larger than"):
        rr.attacks.AdversarialPatch(model, size=8, steps=1)(x, y, target=t)
    with pytest.raises(rr.UserError, match="targeted"):
        rr.attacks.AdversarialPatch(model, size=4, steps=1).run(x, y, None)
    with pytest.raises(rr.UserError, match="draws"):
        rr.evaluation.transformation_robustness(model, x, y, t, d, draws=0)
    assert model.images == 0


def test_the_public_contract_as_design_md_writes_it(batch):
    x, y, t = batch
    x, y, t = x[:2], y[:2], t[:2]
    classifier = small_cnn()
    dist = rr.transforms.Distribution(rotation=(-30, 30), scale=(0.8, 1.2), translate=3, seed=0)
    eot = rr.attacks.EOT(rr.attacks.PGD(classifier, eps=0.3, steps=100), dist, samples=16)
    x_adv = eot(x, y, target=t)
    result = rr.evaluation.transformation_robustness(classifier, x_adv, y, t, dist, draws=200)
    assert isinstance(result, dict) and {"success_plain", "success_eot", "accuracy_eot"} <= set(result)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6


def test_eot_wraps_the_logit_attacks_through_the_mean_logits(batch):
    """DeepFool and the universal perturbation ask for logits: under the identity distribution the
    mean of K equal logits is those logits, so the result matches the plain attack."""
    x, y, _ = batch
    model = small_cnn()
    plain = rr.attacks.DeepFool(model, steps=10)(x, y)
    eot = rr.attacks.EOT(rr.attacks.DeepFool(model, steps=10), Distribution(), samples=4)(x, y)
    assert torch.allclose(plain, eot, atol=1e-4)
    torch.manual_seed(0)
    uap = rr.attacks.EOT(rr.attacks.UniversalPerturbation(model, eps=0.2, max_epochs=1), Distribution(rotation=10),
                         samples=2)(x, y)  # fmt: skip
    assert (uap - x).abs().max() <= 0.2 + 1e-6 and uap.shape == x.shape
