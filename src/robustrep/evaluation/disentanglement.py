"""Three disentanglement metrics for codes of data with known generative factors.

Each takes `represent(factors) -> codes`: factor indices [N, K] (int64) to codes [N, d]; for a model,
`lambda f: encode_means(model, grid.render(f))`. They draw their own factors from `factor_sizes` with
a seeded generator.

- beta-VAE metric (Higgins et al. 2017, Sec. 3): a vote fixes one factor k, draws L pairs of factor
  vectors that share factor k, and averages |z1 - z2| over the pairs; a linear classifier predicts k from
  that mean difference; the score is its accuracy on held-out votes.
- FactorVAE metric (Kim & Mnih 2018, Sec. 4): codes divided by their standard deviation over the data;
  a vote fixes factor k for L draws and takes the code dimension of least variance; a majority-vote
  classifier (dimension -> factor) is scored on the votes. Dimensions whose variance over the data is below
  `collapsed` (absolute; 0.05 suits codes on the scale of an N(0, I) prior) are left out, as the paper
  prunes collapsed dimensions.
- MIG (Chen et al. 2018, eq. 4): codes discretised into `bins` equal-width bins per dimension;
  MIG = 1/K sum_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k), the gap between the two dimensions with the
  largest mutual information with factor k, normalised by the factor's entropy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import validate

Represent = Callable[[torch.Tensor], torch.Tensor]


def _draw(factor_sizes, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randint(int(k), (n,), generator=g) for k in factor_sizes], 1)


def _codes(represent: Represent, factors: torch.Tensor) -> torch.Tensor:
    return represent(factors).detach().to("cpu", torch.float64)


def beta_vae_votes(represent: Represent, factor_sizes, n_votes: int, pairs: int, g: torch.Generator):
    """(mean |z1 - z2| per vote [n_votes, d], the fixed factor per vote [n_votes])."""
    k = torch.randint(len(factor_sizes), (n_votes,), generator=g)
    f1 = _draw(factor_sizes, n_votes * pairs, g)
    f2 = _draw(factor_sizes, n_votes * pairs, g)
    fixed = k.repeat_interleave(pairs)
    rows = torch.arange(len(f1))
    f2[rows, fixed] = f1[rows, fixed]
    diff = (_codes(represent, f1) - _codes(represent, f2)).abs()
    return diff.view(n_votes, pairs, -1).mean(1), k


def beta_vae_metric(
    represent: Represent, factor_sizes, *, n_train: int = 5000, n_test: int = 2000, pairs: int = 64, seed: int = 0
) -> float:
    """Accuracy of a linear classifier predicting the fixed factor from mean |z1 - z2| (Higgins et al. 2017)."""
    validate.positive(n_train, "n_train", integer=True)
    validate.positive(n_test, "n_test", integer=True)
    validate.positive(pairs, "pairs", integer=True)
    g = torch.Generator().manual_seed(seed)
    xs, ys = beta_vae_votes(represent, factor_sizes, n_train + n_test, pairs, g)
    # standardised features and an l2-regularised logistic regression: separable votes (a perfect code)
    # would send an unregularised fit's weights to infinity
    from sklearn.linear_model import LogisticRegression

    mean, std = xs[:n_train].mean(0), xs[:n_train].std(0).clamp_min(1e-12)
    xs = ((xs - mean) / std).numpy()
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(xs[:n_train], ys[:n_train].numpy())
    return float((clf.predict(xs[n_train:]) == ys[n_train:].numpy()).mean())


def factor_vae_metric(
    represent: Represent,
    factor_sizes,
    *,
    n_votes: int = 2000,
    batch: int = 64,
    n_scale: int = 10000,
    collapsed: float = 0.05,
    seed: int = 0,
) -> float:
    """Majority-vote accuracy of (dimension of least normalised variance -> fixed factor) (Kim & Mnih 2018)."""
    validate.positive(n_votes, "n_votes", integer=True)
    validate.number(batch, "batch", low=2, integer=True)
    validate.number(n_scale, "n_scale", low=2, integer=True)
    g = torch.Generator().manual_seed(seed)
    scale = _codes(represent, _draw(factor_sizes, n_scale, g)).std(0)
    active = scale**2 >= collapsed  # absolute, as disentanglement_lib prunes the means of a VAE's collapsed units
    if not active.any():
        return 0.0
    k = torch.randint(len(factor_sizes), (n_votes,), generator=g)
    f = _draw(factor_sizes, n_votes * batch, g)
    fixed = k.repeat_interleave(batch)
    first = f.view(n_votes, batch, -1)[:, 0].repeat_interleave(batch, 0)
    rows = torch.arange(len(f))
    f[rows, fixed] = first[rows, fixed]
    z = (_codes(represent, f)[:, active] / scale[active]).view(n_votes, batch, -1)
    dims = z.var(1).argmin(1)  # per vote: the active dimension that varies least
    counts = torch.zeros(int(active.sum()), len(factor_sizes), dtype=torch.long)
    counts.index_put_((dims, k), torch.ones_like(dims), accumulate=True)
    return float(counts.max(1).values.sum() / n_votes)


def _entropy(labels: torch.Tensor) -> float:
    p = torch.bincount(labels).double()
    p = p[p > 0] / len(labels)
    return float(-(p * p.log()).sum())


def mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(a; b) in nats of two integer label vectors, from their empirical joint distribution."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * nb + b, minlength=na * nb).double().view(na, nb) / len(a)
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (pa @ pb)[nz]).log()).sum())


def discretise(z: torch.Tensor, bins: int) -> torch.Tensor:
    """Each column of z [N, d] cut into `bins` equal-width bins over its range: int64 [N, d]."""
    lo, hi = z.min(0).values, z.max(0).values
    width = (hi - lo).clamp_min(1e-12) / bins
    return ((z - lo) / width).floor().clamp(0, bins - 1).long()


def mig_per_factor(represent: Represent, factor_sizes, *, n: int = 10000, bins: int = 20, seed: int = 0) -> list[dict]:
    """Per factor of at least two values: the code dimensions of largest and second-largest mutual
    information with it ("dims") and their normalised informations I(z_j; v_k) / H(v_k) ("info"), and
    the gap between the two ("gap"). A factor spread over several dimensions (a rotated code) shows as
    two similar informations and a small gap."""
    validate.number(n, "n", low=2, integer=True)
    validate.number(bins, "bins", low=2, high=10**6, integer=True)
    g = torch.Generator().manual_seed(seed)
    f = _draw(factor_sizes, n, g)
    zd = discretise(_codes(represent, f), bins)
    rows = []
    for k, size in enumerate(factor_sizes):
        if size < 2:
            continue
        h = _entropy(f[:, k])
        mi = [mutual_information(zd[:, j], f[:, k]) / h for j in range(zd.shape[1])]
        order = sorted(range(len(mi)), key=lambda j: -mi[j])[:2]
        info = [mi[j] for j in order] + [0.0] * (2 - len(order))
        rows.append({"factor": k, "dims": order, "info": info, "gap": info[0] - info[1]})
    return rows


def mig(represent: Represent, factor_sizes, *, n: int = 10000, bins: int = 20, seed: int = 0) -> float:
    """Mutual information gap (Chen et al. 2018) on n codes of uniformly drawn factors: the mean over
    factors of `mig_per_factor`'s gaps."""
    gaps = [r["gap"] for r in mig_per_factor(represent, factor_sizes, n=n, bins=bins, seed=seed)]
    return float(sum(gaps) / len(gaps))
