"""Attacks against closed forms on linear classifiers, where the optimal perturbations are known.

For f(x) = W x + b and a point of class y, the smallest perturbation that changes the label has
size min_k (f_y - f_k) / ||w_y - w_k||_q, q the dual norm (q = 1 for l_inf, 2 for l_2), reached along
sign(w_k - w_y) (l_inf) or (w_k - w_y) (l_2). Points live in [0.3, 0.7] and budgets stay <= 0.3 so
the [0, 1] box never binds and these closed forms are exact.
"""

import pytest
import torch
from torch import nn

import robustrep as rr
from robustrep.attacks import (
    APGD,
    BIM,
    CW,
    FGSM,
    PGD,
    DeepFool,
    Ensemble,
    IterativeLeastLikely,
    LatentAttack,
    OnePixel,
    Spatial,
    Square,
    UniversalPerturbation,
)
from robustrep.attacks.spatial import transform
from robustrep.errors import UserError


def linear_model(classes, side=8, seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, classes))
    with torch.no_grad():
        model[1].weight.normal_(0, scale)
        model[1].bias.normal_(0, 0.1)
    return model


def points(model, n=200, side=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 1, side, side, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = predictions: every point starts correctly classified
    return x, y


def boundary_distance(model, x, y, q):
    """Exact distance to the decision boundary in the norm dual to q: [B]."""
    w, b = model[1].weight, model[1].bias
    with torch.no_grad():
        f = x.flatten(1) @ w.T + b
        gap = f.gather(1, y[:, None]) - f  # f_y - f_k >= 0
        wd = (w[y][:, None, :] - w[None]).norm(p=q, dim=2)  # ||w_y - w_k||_q
        d = gap / wd.clamp_min(1e-12)
        d[torch.arange(len(y)), y] = float("inf")
        return d.min(1).values


def broken(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


# ---- FGSM / BIM / least likely -------------------------------------------------------------------


def test_fgsm_is_the_optimal_linf_step_on_a_binary_linear_model():
    model = linear_model(2)
    x, y = points(model)
    eps = 0.05
    x_adv = FGSM(model, eps=eps)(x, y)
    w = model[1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    assert torch.allclose(x_adv - x, eps * direction, atol=1e-6)
    d = boundary_distance(model, x, y, q=1)
    assert torch.equal(broken(model, x_adv, y), d < eps)


def test_fgsm_l2_is_the_optimal_l2_step_on_a_binary_linear_model():
    model = linear_model(2)
    x, y = points(model)
    eps = 0.2
    x_adv = FGSM(model, eps=eps, norm="l2")(x, y)
    assert torch.allclose((x_adv - x).flatten(1).norm(dim=1), torch.full((len(x),), eps), atol=1e-5)
    assert torch.equal(broken(model, x_adv, y), boundary_distance(model, x, y, q=2) < eps)


def test_bim_and_least_likely_agree_with_the_closed_form_on_a_binary_model():
    model = linear_model(2)
    x, y = points(model)
    eps = 0.05
    d = boundary_distance(model, x, y, q=1)
    for atk in (BIM(model, eps=eps, steps=10), IterativeLeastLikely(model, eps=eps, steps=10)):
        x_adv = atk(x, y)
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert torch.equal(broken(model, x_adv, y), d < eps)  # with two classes least likely = the other one


def test_least_likely_moves_towards_the_least_likely_class():
    model = linear_model(10, scale=0.3)
    x, y = points(model)
    with torch.no_grad():
        ll = model(x).argmin(1)
    x_adv = IterativeLeastLikely(model, eps=0.3, steps=20)(x, y)
    with torch.no_grad():
        before = model(x).gather(1, ll[:, None]) - model(x).amax(1, keepdim=True)
        after = model(x_adv).gather(1, ll[:, None]) - model(x_adv).amax(1, keepdim=True)
        reached = model(x_adv).argmax(1) == ll
    assert (after >= before - 1e-5).all() and (after > before).float().mean() > 0.9
    assert reached.float().mean() > 0.5  # a large budget takes most points to y_LL
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6


# ---- PGD -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,q,eps", [("linf", 1, 0.03), ("l2", 2, 0.25)])
def test_pgd_finds_every_breakable_point_and_no_other_on_a_linear_model(norm, q, eps):
    model = linear_model(10, scale=0.3)
    x, y = points(model)
    d = boundary_distance(model, x, y, q)
    assert 0.2 < (d < eps).float().mean() < 0.8  # the budget splits the data
    x_adv = PGD(model, eps=eps, steps=50, restarts=3, norm=norm, loss="margin")(x, y)
    size = (x_adv - x).flatten(1).norm(p=float("inf") if norm == "linf" else 2, dim=1)
    assert (size <= eps + 1e-5).all()
    hit = broken(model, x_adv, y)
    assert not hit[d > eps * 1.0001].any()  # soundness: nothing beyond the exact radius
    assert hit[d < eps * 0.98].all()  # and everything inside it


# ---- DeepFool ------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,q", [("l2", 2), ("linf", 1)])
def test_deepfool_finds_the_exact_minimal_perturbation_of_an_affine_classifier(norm, q):
    model = linear_model(10, scale=0.3)
    x, y = points(model)
    atk = DeepFool(model, overshoot=0.02, norm=norm)
    x_adv = atk(x, y)
    d = boundary_distance(model, x, y, q)
    assert atk.success.all()
    # one linearisation step is exact; the answer is the overshot step (+1e-4 to land past the boundary)
    assert torch.allclose(atk.norms, 1.02 * (d + 1e-4), rtol=1e-4, atol=1e-6)
    rho = (x_adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)  # always l_2 over l_2
    assert abs(atk.rho_adv - float(rho.mean())) < 1e-6


def test_deepfool_iterates_on_a_nonlinear_model_and_leaves_wrong_points_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 5))
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:4] = (pred[:4] + 1) % 5  # four points already misclassified
    atk = DeepFool(model, steps=50)
    x_adv = atk(x, y)
    assert torch.equal(x_adv[:4], x[:4]) and (atk.norms[:4] == 0).all()
    assert atk.success[4:].all() and not atk.success[:4].any()  # success = flipped by the attack
    # minimality: shrinking the perturbation to 90% undoes (almost) every flip
    back = broken(model, x[4:] + 0.9 * (x_adv[4:] - x[4:]), y[4:])
    assert back.float().mean() < 0.2


# ---- CW ------------------------------------------------------------------------------------------


def test_cw_reaches_the_minimal_l2_perturbation_of_a_binary_linear_model():
    model = linear_model(2)
    x, y = points(model, n=50)
    d = boundary_distance(model, x, y, q=2)
    atk = CW(model, c=1.0, steps=300, lr=0.01, binary_search_steps=6)
    x_adv = atk(x, y)
    hit = broken(model, x_adv, y)
    assert hit.all()
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    assert (l2 >= d * (1 - 1e-3)).all()  # nobody beats the optimum
    assert (l2 <= d * 1.05 + 1e-3).all()  # and CW comes close to it


def test_cw_targeted_reaches_the_target():
    model = linear_model(5, scale=0.3)
    x, y = points(model, n=30)
    target = (y + 1) % 5
    x_adv = CW(model, steps=200, binary_search_steps=4)(x, y, target=target)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == target).float().mean() > 0.95


# ---- universal -----------------------------------------------------------------------------------


def test_universal_perturbation_on_a_binary_linear_model_is_the_shared_vertex():
    model = linear_model(2)
    x, y = points(model, n=400)
    x, y = x[y == 0], y[y == 0]  # one class: sign(w_1 - w_0) fools them all at once
    eps = 0.05
    uap = UniversalPerturbation(model, eps=eps, norm="linf", target_fooling=1.0, max_epochs=3).fit(x)
    v = uap.perturbation
    assert v.shape == (1, *x.shape[1:]) and v.abs().max() <= eps + 1e-6
    exact = float((boundary_distance(model, x, y, q=1) < eps).float().mean())
    assert uap.fooling_rate >= exact - 0.02 and uap.fooling_rate <= exact + 1e-6
    x_adv = uap(x, y)
    assert abs(float(broken(model, x_adv, y).float().mean()) - uap.fooling_rate) < 1e-6


def test_universal_perturbation_of_one_point_is_its_deepfool_perturbation():
    model = linear_model(10, scale=0.3)
    x, y = points(model, n=1)
    uap = UniversalPerturbation(model, eps=1.0, norm="l2", max_epochs=1, target_fooling=1.0).fit(x)
    x_df = DeepFool(model, norm="l2")(x, y)
    assert uap.fooling_rate == 1.0
    assert torch.allclose(uap.perturbation, x_df - x, atol=1e-6)


# ---- one pixel -----------------------------------------------------------------------------------


def test_one_pixel_matches_exhaustive_search_on_a_linear_model():
    model = linear_model(10, scale=1.0)
    x, y = points(model, n=80)
    # exhaustive oracle: for a linear model the best value of a pixel is 0 or 1
    cand = x.flatten(1)[:, None, :].repeat(1, 128, 1)
    idx = torch.arange(64)
    cand[:, idx, idx] = 0.0
    cand[:, 64 + idx, idx] = 1.0
    with torch.no_grad():
        possible = (model(cand.view(-1, 1, 8, 8)).argmax(1).view(len(x), 128) != y[:, None]).any(1)
    assert 0.1 < possible.float().mean() < 0.9
    torch.manual_seed(0)
    x_adv = OnePixel(model, pixels=1, steps=30, popsize=100)(x, y)
    changed = (x_adv != x).flatten(1).sum(1)
    assert (changed <= 1).all()
    hit = broken(model, x_adv, y)
    assert not hit[~possible].any()
    assert hit[possible].float().mean() > 0.9


class Bump(nn.Module):
    """Class 1 only when pixel (5, 2) is near 0.9: one narrow target among 64 pixels x values."""

    def forward(self, x):
        g = torch.exp(-((x[:, 0, 5, 2] - 0.9) ** 2) / (2 * 0.1**2))
        return torch.stack([torch.full_like(g, 0.95), g], 1) * 20


def test_one_pixel_evolution_finds_a_narrow_target():
    # random search with the same budget (selection reversed) finds it for about 70% of points
    model = Bump()
    x = 0.3 + 0.4 * torch.rand(30, 1, 8, 8)
    y = torch.zeros(30, dtype=torch.int64)
    torch.manual_seed(0)
    x_adv = OnePixel(model, steps=60, popsize=40)(x, y)
    assert broken(model, x_adv, y).float().mean() >= 0.95
    changed = (x_adv != x).flatten(1)
    assert (changed.sum(1) == 1).all() and changed[:, 5 * 8 + 2].all()


def test_one_pixel_is_black_box():
    class NoGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            raise AssertionError("a black-box attack asked for a gradient")

    model = linear_model(10, scale=0.5)
    wrapped = nn.Sequential(model, _Apply(NoGradient))
    x, y = points(model, n=8)
    OnePixel(wrapped, steps=3, popsize=20)(x, y)
    Square(wrapped, eps=0.05, queries=20)(x, y)
    Spatial(wrapped, angles=3, shifts=3)(x, y)


class _Apply(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, t):
        return self.fn.apply(t)


# ---- spatial -------------------------------------------------------------------------------------


def test_spatial_transform_integer_shift_is_a_zero_filled_roll():
    x = torch.rand(3, 2, 10, 10)
    out = transform(x, torch.zeros(3), torch.full((3,), 0.2), torch.full((3,), -0.1))
    expected = torch.zeros_like(x)
    expected[:, :, :-1, 2:] = x[:, :, 1:, :-2]  # right by 2 columns, up by 1 row
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(transform(x, torch.zeros(3), torch.zeros(3), torch.zeros(3)), x, atol=1e-6)
    quarter = transform(x, torch.full((3,), 90.0), torch.zeros(3), torch.zeros(3))
    assert torch.allclose(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5) or torch.allclose(
        quarter, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5
    )


def test_spatial_returns_the_worst_grid_point_per_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 3))
    with torch.no_grad():  # a margin for class 0 that some transforms overcome and others do not
        model[1].bias.copy_(torch.tensor([0.3, 0.0, 0.0]) - 0.5 * model[1].weight.sum(1))
    x = torch.rand(12, 1, 10, 10)
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = Spatial(model, max_angle=30, max_shift=0.1, angles=7, shifts=3)
    x_adv, params = atk.search(x, y)
    assert (params[:, 0].abs() <= 30 + 1e-5).all() and (params[:, 1:].abs() <= 0.1 + 1e-6).all()
    assert torch.allclose(x_adv, transform(x, *params.T).clamp(0, 1), atol=1e-5)
    with torch.no_grad():
        worst = torch.stack(
            [rr.attacks.classification_loss(model(transform(x, *g.expand(12, 3).T)), y) for g in atk.grid()]
        ).amax(0)
        found = rr.attacks.classification_loss(model(x_adv), y)
        fooled = torch.stack([model(transform(x, *g.expand(12, 3).T)).argmax(1) != y for g in atk.grid()]).any(0)
    hit = broken(model, x_adv, y)
    assert 0 < hit.sum() < len(hit)
    assert torch.equal(hit, fooled)  # fooled whenever some transform fools
    assert torch.allclose(found[~hit], worst[~hit], atol=1e-5)  # else the largest loss
    first = Spatial(model, max_angle=30, max_shift=0.1, angles=7, shifts=3, early_stop=True)(x, y)
    assert torch.equal(broken(model, first, y), fooled)


# ---- Square --------------------------------------------------------------------------------------


def test_square_breaks_the_breakable_points_of_a_linear_model_within_budget():
    model = linear_model(10, scale=0.3)
    x, y = points(model, n=100)
    eps = 0.03
    d = boundary_distance(model, x, y, q=1)
    torch.manual_seed(0)
    x_adv = Square(model, eps=eps, queries=300)(x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    hit = broken(model, x_adv, y)
    assert not hit[d > eps * 1.0001].any()
    assert hit[d < eps * 0.9].float().mean() > 0.9


# ---- latent --------------------------------------------------------------------------------------


class LinearEncoder(nn.Module):
    def __init__(self, dim_in=64, dim_out=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(dim_in, dim_out)

    def encode(self, x):
        mu = self.a(x.flatten(1))
        return mu, torch.full_like(mu, 0.5)


def test_latent_attack_reaches_the_top_singular_direction_in_l2():
    enc = LinearEncoder()
    x, _ = points(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), n=20)
    eps = 0.2
    x_adv = LatentAttack(enc, eps=eps, steps=30, norm="l2", alpha=1.0)(x)
    sigma = torch.linalg.matrix_norm(enc.a.weight.detach(), ord=2)
    with torch.no_grad():
        w2 = (enc.a(x_adv.flatten(1)) - enc.a(x.flatten(1))).pow(2).sum(1)  # variances do not move
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all()
    assert torch.allclose(w2, torch.full_like(w2, float(eps * sigma) ** 2), rtol=1e-3)


def test_latent_attack_moves_a_code_to_a_reachable_target():
    enc = LinearEncoder(dim_out=2)
    x, _ = points(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), n=10)
    goal = (x + 0.05 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        target = enc.encode(goal)[0]
        before = (enc.encode(x)[0] - target).norm(dim=1)
    x_adv = LatentAttack(enc, eps=0.1, steps=100)(x, target=target)
    with torch.no_grad():
        after = (enc.encode(x_adv)[0] - target).norm(dim=1)
    assert (after < 0.2 * before).all()  # fixed-size sign steps end in a small orbit
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_latent_kl_attack_raises_the_divergence():
    torch.manual_seed(0)

    class Gaussian(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(64, 6)

        def forward(self, x):
            h = self.net(x.flatten(1))
            return h[:, :3], nn.functional.softplus(h[:, 3:]) + 1e-3

    enc = Gaussian()
    x = torch.rand(16, 1, 8, 8)
    atk = LatentAttack(enc, eps=0.1, steps=20, divergence="kl")
    x_adv = atk(x)
    with torch.no_grad():
        ref = enc(x)
        noise = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
        kl_adv = atk.objective(x_adv, ref)
        kl_noise = atk.objective(noise, ref)
    assert (kl_adv > kl_noise).all()


# ---- the contract every attack keeps ---------------------------------------------------------------


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


ATTACKS = {
    "fgsm": (lambda m: FGSM(m, eps=0.1), ("linf", 0.1)),
    "bim": (lambda m: BIM(m, eps=0.1, steps=5), ("linf", 0.1)),
    "ll": (lambda m: IterativeLeastLikely(m, eps=0.1, steps=5), ("linf", 0.1)),
    "pgd": (lambda m: PGD(m, eps=0.1, steps=5, restarts=2), ("linf", 0.1)),
    "pgd-l2": (lambda m: PGD(m, eps=0.5, steps=5, norm="l2"), ("l2", 0.5)),
    "cw": (lambda m: CW(m, steps=10, binary_search_steps=2), None),
    "deepfool": (lambda m: DeepFool(m, steps=10), None),
    "universal": (lambda m: UniversalPerturbation(m, eps=0.1, max_epochs=1), ("linf", 0.1)),
    "onepixel": (lambda m: OnePixel(m, steps=2, popsize=10), ("l0", 1)),
    "spatial": (lambda m: Spatial(m, angles=3, shifts=3), None),
    "square": (lambda m: Square(m, eps=0.1, queries=20), ("linf", 0.1)),
    "apgd": (lambda m: APGD(m, eps=0.1, steps=5, restarts=2), ("linf", 0.1)),
    "apgd-t-l2": (lambda m: APGD(m, eps=0.5, loss="dlr", targeted=True, targets=2, steps=5, norm="l2"), ("l2", 0.5)),
    "ensemble": (lambda m: Ensemble(m, eps=0.1, steps=5, targets=2, queries=20), ("linf", 0.1)),
}


def accuracy_by_hand(model, x, y, atk, seed=3):
    """Strict accuracy under `atk`, computed without adversarial_accuracy: attack the clean-correct
    points, count those still correct. Both start from the same seed, so they must agree exactly."""
    torch.manual_seed(seed)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    if not ok.any():
        return 0.0
    x_adv = atk(x[ok], y[ok])
    with torch.no_grad():
        kept = int((model(x_adv).argmax(1) == y[ok]).sum())
    torch.manual_seed(seed)  # the caller's adversarial_accuracy runs next on the same stream
    return kept / len(x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_contract(name):
    make, budget = ATTACKS[name]
    model = small_net()
    atk = make(model)
    x = torch.rand(12, 1, 8, 8)
    y = torch.randint(0, 10, (12,))
    model.train()
    x_adv = atk(x, y)
    assert model.training  # mode restored
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if budget is not None:
        norm, eps = budget
        delta = (x_adv - x).flatten(1)
        size = {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1), "l0": (delta != 0).float().sum(1)}[norm]
        assert (size <= eps + 1e-5).all()
    # adversarial_accuracy counts what the attack did, recomputed here by hand on the same random stream
    by_hand = accuracy_by_hand(model, x, y, make(model))
    assert rr.evaluation.adversarial_accuracy(model, x, y, make(model)) == by_hand
    assert atk(x[:1], y[:1]).shape == x[:1].shape  # a batch of one works
    with pytest.raises(UserError):
        atk(x * 2, y)
    with pytest.raises(UserError):
        atk(x, y[:3])
    with pytest.raises(UserError):
        atk(x.clone().fill_(float("nan")), y)


def test_untargeted_only_attacks_refuse_a_target():
    model = small_net()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    for atk in (DeepFool(model), IterativeLeastLikely(model), Spatial(model), UniversalPerturbation(model)):
        with pytest.raises(UserError):
            atk(x, y, target=y)


def test_bad_settings_are_user_errors():
    model = small_net()
    with pytest.raises(UserError):
        PGD(model, norm="l3")
    with pytest.raises(UserError):
        DeepFool(model, steps=0)
    with pytest.raises(UserError):
        CW(model, c=-1)
    with pytest.raises(UserError):
        LatentAttack(model, divergence="js")
    with pytest.raises(UserError):
        OnePixel(model)(torch.rand(2, 64), torch.tensor([0, 1]))


def test_latent_attack_on_the_smooth_encoder():
    se = rr.models.build("se", input_shape=(1, 8, 8), latent_dim=4, arch="mlp")
    x = torch.rand(6, 1, 8, 8)
    atk = LatentAttack(se, eps=0.1, steps=10)
    x_adv = atk(x)
    with torch.no_grad():
        ref = se.encode(x)
        noise = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
        assert (atk.objective(x_adv, ref) > atk.objective(noise, ref)).all()
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_runs_on_cuda(name):
    make, _ = ATTACKS[name]
    model = small_net().cuda()
    x, y = torch.rand(12, 1, 8, 8, device="cuda"), torch.randint(0, 10, (12,), device="cuda")
    x_adv = make(model)(x, y)
    assert x_adv.device == x.device and x_adv.shape == x.shape
    by_hand = accuracy_by_hand(model, x, y, make(model))
    assert rr.evaluation.adversarial_accuracy(model, x, y, make(model)) == by_hand


@pytest.mark.parametrize("method", ["ibp", "dual"])
def test_attacks_stay_inside_certified_margin_bounds(method):
    # ART's test_interval idea: no attack within eps can push a margin z_y - z_j below its certified
    # lower bound; an attack that did would be breaking its budget (or the bound is wrong)
    model = small_net()
    x = 0.2 + 0.6 * torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.05
    with torch.no_grad():
        bound = rr.certify.margin_bounds(model, x, y, eps, method=method)
    for atk in (
        FGSM(model, eps=eps),
        BIM(model, eps=eps, steps=10),
        PGD(model, eps=eps, steps=20, loss="margin"),
        Square(model, eps=eps, queries=100),
    ):
        x_adv = atk(x, y)
        with torch.no_grad():
            z = model(x_adv)
        margins = z.gather(1, y[:, None]) - z
        assert (margins >= bound - 1e-4).all(), type(atk).__name__


def test_targeted_attacks_reach_their_target():
    model = linear_model(10, scale=0.3)
    x, y = points(model, n=60)
    target = (y + 1 + torch.arange(60) % 9) % 10  # any class but the true one
    torch.manual_seed(0)
    for atk, eps in (
        (PGD(model, eps=0.3, steps=30, loss="margin"), 0.3),
        (BIM(model, eps=0.3, steps=30), 0.3),
        (Square(model, eps=0.3, queries=300), 0.3),
    ):
        x_adv = atk(x, y, target=target)
        with torch.no_grad():
            reached = model(x_adv).argmax(1) == target
        assert reached.float().mean() > 0.9, type(atk).__name__
        assert (x_adv - x).abs().max() <= eps + 1e-6


# ---- defects found by reading the code (issue 8) ---------------------------------------------------


class FirstCallFooled(nn.Module):
    """Three classes, input ignored except for a zero-gradient path. The first forward pass returns
    logits that misclassify class 0 with a low cross-entropy (0.69); every later pass classifies it
    correctly with a higher one (1.03). Records the inputs it was called on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(x.detach().clone())
        fooled, kept = torch.tensor([1.0, 1.01, -100.0]), torch.tensor([1.0, 0.9, 0.9])
        return (fooled if len(self.calls) == 1 else kept).expand(len(x), 3) + 0 * x.flatten(1)[:, :1]


def test_pgd_without_early_stop_keeps_the_first_success_per_example():
    # a later failed restart with a higher loss must not overwrite an earlier success (docs/attacks.md)
    model = FirstCallFooled()
    x, y = torch.full((4, 1, 2, 2), 0.5), torch.zeros(4, dtype=torch.long)
    atk = PGD(model, eps=0.2, steps=0, restarts=2, early_stop=False)
    x_adv = atk.run(x, y)  # run(): no label check, so call 1 is restart 1
    assert len(model.calls) == 2
    assert torch.equal(x_adv, model.calls[0].clamp(0, 1))  # restart 1's success, not restart 2
    assert not torch.equal(model.calls[0], model.calls[1])


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x.detach())


@pytest.mark.parametrize(
    "make",
    [
        lambda m: PGD(m, eps=0.1, steps=3),
        lambda m: FGSM(m, eps=0.1),
        lambda m: CW(m, steps=3, binary_search_steps=1),
        lambda m: DeepFool(m, steps=3),
    ],
)
def test_gradient_attacks_refuse_a_model_without_an_input_gradient(make):
    # zeros here made a detaching model look 100% robust
    model = Detached()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(UserError, match="does not depend on its input"):
        make(model)(x, y)


def test_attacks_refuse_labels_the_model_cannot_output():
    # label 99 on a 10-class model was counted as broken from the start
    model = small_net()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 99, 2])
    for atk in (PGD(model, eps=0.1, steps=2), Square(model, eps=0.1, queries=5), Spatial(model, angles=3, shifts=1)):
        with pytest.raises(UserError, match="10 classes"):
            atk(x, y)
    with pytest.raises(UserError, match="10 classes"):
        PGD(model, eps=0.1, steps=2)(x, torch.tensor([0, 1, 2]), target=torch.tensor([0, 1, -1]))
