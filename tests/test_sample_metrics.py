"""Sample metrics (issue 10) against direct computations: the Frechet distance against scipy's sqrtm,
KID against a loop over pairs, precision/recall and density/coverage against their definitions point by
point, class statistics by hand; bad inputs refused."""

import numpy as np
import pytest
import scipy.linalg
import torch

import robustrep as rr
from robustrep.errors import UserError
from robustrep.evaluation.sample_metrics import (
    class_statistics,
    density_coverage,
    kernel_inception_distance,
    precision_recall,
)


def sqrtm_frechet(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


@pytest.mark.parametrize("seed, n, d", [(0, 500, 16), (1, 2000, 64), (2, 300, 100)])
def test_frechet_distance_equals_the_sqrtm_computation(seed, n, d):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.3
    fd = rr.evaluation.frechet_distance(a, b)
    assert fd == pytest.approx(sqrtm_frechet(a, b), rel=1e-6)
    assert rr.evaluation.frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        fd, rel=1e-4
    )  # float32 input is taken to float64


def test_frechet_distance_of_gaussians_in_closed_form():
    # N(0, I) against N(m, 4 I) in d dims: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d, with the sample moments
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200_000, 3))
    b = 2 * rng.normal(size=(200_000, 3)) + np.array([1.0, 0, 0])
    assert rr.evaluation.frechet_distance(a, b) == pytest.approx(1 + 3, rel=0.02)
    assert rr.evaluation.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def test_kid_is_the_unbiased_mmd_over_all_pairs():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 0.5

    def k(x, y):
        return (x @ y / 5 + 1) ** 3

    aa = sum(k(a[i], a[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    bb = sum(k(b[i], b[j]) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    ab = sum(k(a[i], b[j]) for i in range(30) for j in range(25)) / (30 * 25)
    assert kernel_inception_distance(a, b) == pytest.approx(aa + bb - 2 * ab, rel=1e-9)
    # unbiased: two draws of one law average zero
    same = [kernel_inception_distance(rng.normal(size=(50, 5)), rng.normal(size=(50, 5))) for _ in range(200)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(200)


def brute_radius(x, i, k):
    return sorted(np.linalg.norm(x - x[i], axis=1))[k]  # index 0 is x[i] itself


def test_precision_recall_density_coverage_follow_their_definitions():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(40, 3))
    fake = rng.normal(size=(35, 3)) * 1.5 + 0.4
    r_real = [brute_radius(real, i, 3) for i in range(40)]
    r_fake = [brute_radius(fake, j, 3) for j in range(35)]
    precision = np.mean([any(np.linalg.norm(f - real[i]) <= r_real[i] for i in range(40)) for f in fake])
    recall = np.mean([any(np.linalg.norm(r - fake[j]) <= r_fake[j] for j in range(35)) for r in real])
    assert precision_recall(real, fake, k=3) == pytest.approx((precision, recall))
    r5 = [brute_radius(real, i, 5) for i in range(40)]
    density = sum(np.linalg.norm(f - real[i]) <= r5[i] for f in fake for i in range(40)) / (5 * 35)
    coverage = np.mean([any(np.linalg.norm(f - real[i]) <= r5[i] for f in fake) for i in range(40)])
    assert density_coverage(real, fake, k=5) == pytest.approx((density, coverage))


def test_metrics_tell_a_collapsed_set_from_a_faithful_one():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(500, 8))
    faithful = rng.normal(size=(500, 8))
    collapsed = rng.normal(size=(500, 8)) * 0.1 + real[0]
    fr = rr.evaluation.frechet_distance
    assert fr(real, faithful) < fr(real, collapsed)
    assert precision_recall(real, faithful)[1] > 0.5 > precision_recall(real, collapsed)[1]
    assert density_coverage(real, faithful)[1] > 0.5 > density_coverage(real, collapsed)[1]


def test_class_statistics():
    logits = torch.full((10, 10), -10.0)
    for i, c in enumerate([0, 0, 0, 1, 1, 2, 3, 3, 3, 3]):
        logits[i, c] = 10.0 if i != 9 else -9.5  # the last sample is unsure
    stats = class_statistics(logits, 10, min_share=0.15)
    assert stats["class_shares"][:4] == [0.3, 0.2, 0.1, 0.4]
    assert stats["classes_covered"] == 3
    assert stats["confident_share"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "a, b",
    [
        (np.zeros((1, 3)), np.zeros((5, 3))),
        (np.zeros((5, 3)), np.zeros((5, 4))),
        (np.full((5, 3), np.nan), np.zeros((5, 3))),
        (np.zeros(5), np.zeros(5)),
        (np.zeros((5, 3)), np.full((5, 3), np.inf)),
    ],
)
def test_bad_feature_matrices_are_refused(a, b):
    with pytest.raises(UserError):
        rr.evaluation.frechet_distance(a, b)
    with pytest.raises(UserError):
        kernel_inception_distance(a, b)


def test_too_few_points_for_the_balls_are_refused():
    with pytest.raises(UserError):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
