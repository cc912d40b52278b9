"""Distances between sets of feature vectors, for judging generated samples against real ones.

All take feature matrices [N, D] (tensors or arrays) and compute in float64.

- `frechet_distance`: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017, "FID" when
  the features are Inception's; here they are our MNIST classifier's, so the numbers are NOT comparable
  with Inception-FID in papers). tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), a symmetric PSD
  matrix whose square root comes from an eigendecomposition (stable where sqrtm of a product is not).
- `kernel_inception_distance` (KID, Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / D + 1)^3.
- `precision_recall` (Kynkaanniemi et al. 2019, k = 3): the share of generated points inside some real point's
  k-NN ball, and the share of real points inside some generated point's ball.
- `density_coverage` (Naeem et al. 2020, k = 5): density counts how many real balls hold each generated point
  (divided by k), coverage is the share of real balls that hold at least one generated point.

Every one of them depends on the number of points: compare models at the same counts.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


def _features(x, name: str, min_rows: int = 2) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if t.dim() != 2 or len(t) < min_rows or t.shape[1] < 1:
        raise UserError(f"{name} must be a feature matrix [N, D] with N >= {min_rows}, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise UserError(f"{name} holds NaN or infinite values")
    return t


def _pair(a, b, min_rows: int = 2):
    a, b = _features(a, "feats_a", min_rows), _features(b, "feats_b", min_rows)
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feats_a and feats_b must have the same feature size, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (mean, unbiased covariance)."""
    a, b = _pair(feats_a, feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    root_a = _psd_sqrt(cov_a)
    eig = torch.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = eig.clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return float(value.clamp_min(0))


def kernel_inception_distance(feats_a, feats_b) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3 over all pairs."""
    a, b = _pair(feats_a, feats_b)
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float(
        (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
        + (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
        - 2 * kab.mean()
    )


def _knn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point."""
    if len(x) <= k:
        raise UserError(f"k-NN balls with k = {k} need more than {k} points, got {len(x)}")
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 1st is the point itself, at distance 0


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each point, how many balls B(centre_i, radius_i) hold it."""
    counts = []
    for i in range(0, len(points), chunk):
        counts.append((torch.cdist(points[i : i + chunk], centres) <= radii[None]).sum(1))
    return torch.cat(counts)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of `fake` against `real` with k-NN balls (Kynkaanniemi et al. 2019)."""
    real, fake = _pair(real, fake, k + 1)
    precision = (_inside(fake, real, _knn_radius(real, k)) > 0).double().mean()
    recall = (_inside(real, fake, _knn_radius(fake, k)) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of `fake` against the k-NN balls of `real` (Naeem et al. 2020)."""
    real, fake = _pair(real, fake, k + 1)
    radii = _knn_radius(real, k)
    density = _inside(fake, real, radii).double().sum() / (k * len(fake))
    covered = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(fake), 2048):
        covered |= (torch.cdist(fake[i : i + 2048], real) <= radii[None]).any(0)
    return float(density), float(covered.double().mean())


def class_statistics(logits, num_classes: int = 10, min_share: float = 0.02, confident: float = 0.9) -> dict:
    """The predicted-class histogram (shares), the classes holding at least `min_share` of the samples, and
    the share of samples whose top class probability reaches `confident`."""
    logits = _features(logits, "logits", 1)
    probs = logits.softmax(1)
    shares = torch.bincount(probs.argmax(1), minlength=num_classes).double() / len(probs)
    return {
        "class_shares": [round(float(s), 4) for s in shares],
        "classes_covered": int((shares >= min_share).sum()),
        "confident_share": float((probs.max(1).values >= confident).double().mean()),
    }


def sample_report(real_feats, fake_feats, fake_logits, num_classes: int = 10) -> dict:
    """Every metric of the generated set at once."""
    precision, recall = precision_recall(real_feats, fake_feats)
    density, coverage = density_coverage(real_feats, fake_feats)
    return {
        "fid": frechet_distance(real_feats, fake_feats),
        "kid": kernel_inception_distance(real_feats, fake_feats),
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        **class_statistics(fake_logits, num_classes),
    }
