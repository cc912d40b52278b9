"""The linear probe (Cemgil et al. 2020, Section 4): freeze the encoder, compute the posterior mean
mu(x) of every training image once, fit a linear classifier on it with plain cross-entropy (no
adversarial training), and compose `probe(mu(x))` into one classifier to attack end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..attacks.base import eval_mode
from ..errors import UserError
from ..runs import check_run_dir, load_model, load_weights, read_yaml, save_weights, write_yaml

NOISE_COPIES = 4  # noisy copies of the training codes a `noise` probe is fitted on


class ProbedEncoder(nn.Module):
    """x -> probe(mu(x)): the encoder's posterior mean followed by the linear probe.

    The encoder and the probe are used as they are: their parameters' requires_grad is left alone (it
    belongs to the caller, who may train the encoder again); attacks take gradients with respect to
    the input only."""

    def __init__(self, encoder: nn.Module, probe: nn.Linear):
        super().__init__()
        if not hasattr(encoder, "encode"):
            raise UserError(f"ProbedEncoder needs a model with encode(x), got {type(encoder).__name__}")
        if not isinstance(probe, nn.Linear):
            raise UserError(f"ProbedEncoder needs an nn.Linear probe, got {type(probe).__name__}")
        self.encoder, self.probe = encoder, probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder.encode(x)[0])


def certifiable_network(model: nn.Module, probe: nn.Linear) -> nn.Sequential:
    """probe(mu(x)) as one plain nn.Sequential of Linear, Conv2d, ReLU and Flatten layers, the form that
    `rr.certify` bounds: the encoder body, the mu half of the Gaussian head (its first latent_dim rows)
    and the probe. The same function as `ProbedEncoder(model, probe)`; the weights are frozen copies.

        >>> net = certifiable_network(se, probe)
        >>> rr.certify.certified_accuracy(net, x, y, eps=0.01, method="dual")"""
    from ..nn import GaussianHead

    encoder = getattr(model, "encoder", None)
    if not (isinstance(encoder, nn.Sequential) and len(encoder) == 2 and isinstance(encoder[1], GaussianHead)):
        raise UserError(
            f"certifiable_network needs an encoder built as Sequential(body, GaussianHead) (the VAE "
            f"family), got {type(model).__name__}"
        )
    if not isinstance(probe, nn.Linear):
        raise UserError(f"certifiable_network needs an nn.Linear probe, got {type(probe).__name__}")
    body, head = encoder
    latent = head.linear.out_features // 2
    if probe.in_features != latent:
        raise UserError(f"the probe reads {probe.in_features} features but the encoder has {latent} latent dimensions")
    mu = nn.Linear(head.linear.in_features, latent).to(head.linear.weight)
    with torch.no_grad():
        mu.weight.copy_(head.linear.weight[:latent])  # GaussianHead: mu, s = linear(h).chunk(2)
        mu.bias.copy_(head.linear.bias[:latent])
    net = nn.Sequential(*copy.deepcopy(list(body)), mu, copy.deepcopy(probe))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


@torch.inference_mode()
def encode_means(model: nn.Module, X, batch_size: int = 2048) -> torch.Tensor:
    """mu(x) for every image in X (a tensor or a lazy view), in batches, without gradients."""
    with eval_mode(model):
        return torch.cat([model.encode(X[i : i + batch_size])[0] for i in range(0, len(X), batch_size)])


@torch.inference_mode()
def encode_posteriors(model: nn.Module, X, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu(x), var(x)) for every image in X, in batches, without gradients."""
    with eval_mode(model):
        parts = [model.encode(X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def fit_linear(
    features: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    max_iter: int = 500,
    chunk: int = 65536,
    l2: float = 0.0,
    noise: float = 0.0,
    noise_copies: int = NOISE_COPIES,
    seed: int = 0,
    noise_scale: torch.Tensor | None = None,
) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS (deterministic, converges in seconds).

    Still a linear classifier, optionally regularised (issue 11's probe lever):
    `l2` adds l2/2 ||W||_F^2 to the mean cross-entropy (the bias is not penalised); `noise` trains on
    `noise_copies` copies of the features with N(0, noise^2 I) added (drawn once from `seed`, so the
    fit stays deterministic), which keeps the probe from leaning with large weights on coordinates
    whose spread over the data is small next to `noise`; `noise_scale` (the shape of `features`)
    multiplies that noise per entry (the posterior std: codes drawn from q(z|x), see train_probe)."""
    l2 = validate.nonnegative(l2, "probe l2", high=1e6)
    noise = validate.nonnegative(noise, "probe noise", high=1e6)
    noise_copies = validate.positive(noise_copies, "probe noise_copies", integer=True, high=1000)
    features, y = features.detach().clone(), y.detach().clone()  # plain tensors, out of inference mode
    if noise_scale is not None and noise_scale.shape != features.shape:
        raise UserError(
            f"noise_scale must have the features' shape {list(features.shape)}, got {list(noise_scale.shape)}"
        )
    if noise > 0:
        g = torch.Generator(device=features.device).manual_seed(seed)
        scale = noise * (noise_scale.detach().clone() if noise_scale is not None else 1.0)
        features = torch.cat(
            [
                features + scale * torch.randn(features.shape, generator=g, device=features.device)
                for _ in range(noise_copies)
            ]
        )
        y = y.repeat(noise_copies)
    probe = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(
        probe.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure():
        # the full-batch loss, accumulated over chunks so memory stays flat for large feature sets
        opt.zero_grad()
        total = torch.zeros((), device=features.device)
        for i in range(0, len(features), chunk):
            loss = F.cross_entropy(probe(features[i : i + chunk]), y[i : i + chunk], reduction="sum") / len(features)
            loss.backward()
            total += loss.detach()
        if l2 > 0:
            penalty = 0.5 * l2 * probe.weight.pow(2).sum()
            penalty.backward()
            total += penalty.detach()
        return total

    opt.step(closure)
    return probe.eval()


def train_probe(
    model: nn.Module,
    X,
    y: torch.Tensor,
    num_classes: int | None = None,
    l2: float = 0.0,
    noise: float = 0.0,
    posterior_noise: float = 0.0,
    means: torch.Tensor | None = None,
) -> nn.Linear:
    """Fit the linear probe on the frozen encoder mean of `model` (`l2`, `noise`: see fit_linear; the
    default 0, 0, 0 is the paper's plain cross-entropy probe). `means`: mu(X) when the caller has already
    encoded X (several probes on the same images), so it is not encoded again (a posterior-noise probe
    encodes X itself: it needs the variances too). `posterior_noise` S fits it on codes
    mu(x) + S sqrt(var(x)) u, u ~ N(0, I) (S = 1: draws from the encoder's posterior q(z|x)): noise as
    large as the encoder's own uncertainty on each coordinate, so a coordinate the encoder leaves at the
    prior (spread over the data far below its posterior std) gets no weight. The probe still reads mu(x)."""
    validate.nonnegative(l2, "probe l2", high=1e6)
    validate.nonnegative(noise, "probe noise", high=1e6)
    validate.nonnegative(posterior_noise, "probe posterior_noise", high=1e6)
    if noise and posterior_noise:
        raise UserError("a probe takes either noise or posterior_noise, not both")
    if not hasattr(model, "encode"):
        raise UserError(f"a linear probe needs an encoder (a model with encode(x)), got {type(model).__name__}")
    if num_classes is not None:
        validate.number(num_classes, "num_classes", low=2, high=10**6, integer=True)
    validate.labels(y, len(X), "y", num_classes=num_classes)
    if len(X) == 0:
        raise UserError("train_probe needs at least one training image")
    if means is not None and tuple(means.shape[:1]) != (len(X),):
        raise UserError(f"train_probe: means must hold one code per image ({len(X)}), got shape {tuple(means.shape)}")
    num_classes = num_classes or max(int(y.max()) + 1, 2)
    y = y.to(next(model.parameters()).device)
    if posterior_noise:
        mu, var = encode_posteriors(model, X)
        return fit_linear(mu, y, num_classes, l2=l2, noise=posterior_noise, noise_scale=var.sqrt())
    mu = encode_means(model, X) if means is None else means
    return fit_linear(mu, y.to(mu.device), num_classes, l2=l2, noise=noise)


def save_probe(run_dir, probe: nn.Linear, info: dict) -> None:
    run_dir = Path(run_dir)
    save_weights(probe, run_dir / "probe.safetensors")
    write_yaml(run_dir / "probe.yaml", {"in_features": probe.in_features, "num_classes": probe.out_features, **info})


def load_probe(run_dir, device="cpu") -> nn.Linear:
    run_dir = check_run_dir(run_dir)
    if not (run_dir / "probe.yaml").exists():
        raise UserError(f"{run_dir} has no linear probe yet: run `robustrep probe {run_dir}` first")
    info = read_yaml(run_dir / "probe.yaml")
    probe = nn.Linear(int(info["in_features"]), int(info["num_classes"]))
    return load_weights(probe, run_dir / "probe.safetensors").to(device).eval()


def load_classifier(run_dir, device="cpu") -> nn.Module:
    """A classifier mapping images to logits: the run's own model if it is a classifier, else the
    representation model with its linear probe on the posterior mean (`robustrep probe` first)."""
    model = load_model(run_dir, device)
    if not hasattr(model, "encode"):
        return model
    return ProbedEncoder(model, load_probe(run_dir, device)).eval()
