"""Training-loop overheads, measured side by side in one process (ratios; absolute times only mean
something on a quiet machine or a GPU):

  (b) a VAE epoch in robustrep.training.fit against a bare PyTorch loop over the same model and data
      (target: at most 10% slower);
  (b') the same fit epoch keeping an EMA of the weights (ema_decay=0.999), against fit without it
      (target: at most 15% slower);
  (c) an SE epoch against a VAE epoch (target: at most L/2 + 2 times, since a selection step costs
      one encoder forward and backward, about half a VAE step).

    python benchmarks/training.py [--quick] [--device auto] [--out benchmarks/results/training.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import robustrep as rr
from robustrep.divergences import gaussian_nll, kl_standard_normal
from robustrep.training import fit
from robustrep.utils import resolve_device


def bare_epoch(model, X, batch_size, opt):
    """The loop a user would write by hand: no progress bar, no logging, no checkpoints."""
    order = torch.randperm(len(X), device=X.device)
    for i in range(0, len(X), batch_size):
        x = X[order[i : i + batch_size]]
        mu, var = model.encode(x)
        z = mu + var.sqrt() * torch.randn_like(mu)
        loss = (gaussian_nll(x, model.decode(z), model.obs_var) + kl_standard_normal(mu, var)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def git_version() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10000 images, 3 repeats")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--select-steps", type=int, default=10, help="SE selection budget L (default 10)")
    ap.add_argument("--out", default="benchmarks/results/training.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    X, _ = rr.data.load("mnist", "train", device=device)
    X = X[: 10000 if args.quick else 60000]
    repeats = 3 if args.quick else 5
    bs = 128
    make = dict(input_shape=(1, 28, 28), latent_dim=32, obs_var=0.1)
    times = {"fit_vae": [], "bare_vae": [], "fit_vae_ema": [], "fit_se": []}
    for r in range(repeats):  # interleaved, so drifts in machine load hit all three alike
        torch.manual_seed(r)
        vae = rr.models.VAE(**make).to(device)
        opt = torch.optim.Adam(vae.parameters(), 1e-3)
        times["bare_vae"].append(timed(lambda: bare_epoch(vae, X, bs, opt), device))
        torch.manual_seed(r)
        vae = rr.models.VAE(**make)
        times["fit_vae"].append(
            timed(lambda: fit(vae, X, epochs=1, batch_size=bs, device=device, progress=True), device)
        )
        torch.manual_seed(r)
        vae = rr.models.VAE(**make)
        times["fit_vae_ema"].append(
            timed(lambda: fit(vae, X, epochs=1, batch_size=bs, device=device, progress=True, ema_decay=0.999), device)
        )
        torch.manual_seed(r)
        se = rr.models.SmoothEncoder(**make, gamma=10.0, select_eps=0.2, select_steps=args.select_steps)
        times["fit_se"].append(timed(lambda: fit(se, X, epochs=1, batch_size=bs, device=device, progress=True), device))
    med = {k: statistics.median(v) for k, v in times.items()}
    L = args.select_steps
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "images": len(X),
        "batch_size": bs,
        "repeats": repeats,
        "seconds_median": med,
        "seconds_all": times,
        "fit_over_bare_vae": med["fit_vae"] / med["bare_vae"],
        "fit_over_bare_target": 1.10,
        "ema_over_fit_vae": med["fit_vae_ema"] / med["fit_vae"],
        "ema_over_fit_target": 1.15,
        "se_over_vae": med["fit_se"] / med["fit_vae"],
        "select_steps": L,
        "se_over_vae_target": L / 2 + 2,
    }
    result["command"] = "python benchmarks/training.py" + (" --quick" if args.quick else "")
    result["git"] = git_version()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k not in ("seconds_all",)},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
