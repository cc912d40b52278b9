"""Speed of the generative models (issue 10), in one process:

  - training images/s of each model through robustrep.training.fit (an epoch of 60000 MNIST images
    extrapolated from --batches batches; a GAN's step is one phase, so n_critic critic steps and one
    generator step all count their batch);
  - the same DCGAN steps in a bare hand-written two-optimiser loop (the "peer": what a user writes without
    the trainer), and the ratio fit / bare;
  - DDPM sampling images/s: one reverse step of the U-Net on a batch, and the implied images/s of the
    ancestral sampler (T = 1000 steps) and of DDIM with 50 steps.

Absolute numbers mean something only on a quiet machine (the JSON records the thread count and the load);
the ratio holds better on a loaded one.

    python benchmarks/generative.py [--quick] [--device auto] [--out benchmarks/results/generative.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import robustrep as rr
from robustrep.training import fit
from robustrep.utils import atomic_write, resolve_device

MODELS = {
    "gan": {},
    "dcgan": {},
    "wgan": {},
    "wgan-gp": {},
    "progan": {},
    "ddpm": {"width": 32},
    "ncsn": {"width": 32},
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bare_dcgan(model, X, batch_size):
    """One discriminator and one generator step per pair of batches, by hand (the DCGAN paper's loop)."""
    d_opt = torch.optim.Adam(model.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    g_opt = torch.optim.Adam(model.generator.parameters(), 2e-4, betas=(0.5, 0.999))
    order = torch.randperm(len(X), device=X.device)
    for k, i in enumerate(range(0, len(X), batch_size)):
        real = 2 * X[order[i : i + batch_size]] - 1
        z = torch.randn(len(real), model.noise_dim, device=X.device)
        if k % 2 == 0:
            with torch.no_grad():
                fake = model.generator(z)
            loss = F.softplus(-model.discriminator(real)).mean() + F.softplus(model.discriminator(fake)).mean()
            d_opt.zero_grad(set_to_none=True)
            loss.backward()
            d_opt.step()
        else:
            loss = F.softplus(-model.discriminator(model.generator(z))).mean()
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, default=None, help="batches timed per model (default 20, quick 6)")
    ap.add_argument("--out", default="benchmarks/results/generative.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    batches = args.batches or (6 if args.quick else 20)
    repeats = 2 if args.quick else 3
    bs = 128
    X, _ = rr.data.load("mnist", "train")
    X = X[: batches * bs].to(device)
    t_start = time.perf_counter()
    train = {}
    for name, kw in MODELS.items():
        # untimed warm-up: the first fit of a model pays for lazy imports, kernel selection and allocator
        # growth (7.6 s against 0.1 s for the MLP GAN's first repeat, which a median of two cannot drop)
        fit(rr.models.build(name, **kw), X[:bs], epochs=1, batch_size=bs, device=device, progress=False)
        times = []
        for r in range(repeats):
            torch.manual_seed(r)
            model = rr.models.build(name, **kw)
            epoch = lambda m=model: fit(m, X, epochs=1, batch_size=bs, device=device, progress=False)  # noqa: E731
            times.append(timed(epoch, device))
        med = statistics.median(times)
        train[name] = {
            "images_per_s": round(len(X) / med, 1),
            "epoch_60000_s": round(60000 / (len(X) / med), 1),
            "seconds": times,
            "hparams": kw,
        }
    bare, fitted = [], []
    for r in range(repeats):  # interleaved, so drifts in load hit both alike
        torch.manual_seed(r)
        model = rr.models.build("dcgan").to(device).train()
        bare.append(timed(lambda m=model: bare_dcgan(m, X, bs), device))
        torch.manual_seed(r)
        model = rr.models.build("dcgan")
        fitted.append(timed(lambda m=model: fit(m, X, epochs=1, batch_size=bs, device=device, progress=False), device))
    model = rr.models.build("ddpm", width=32).to(device).eval()
    x = torch.randn(bs, 1, 32, 32, device=device)
    t = torch.full((bs,), 500, device=device, dtype=torch.long)
    with torch.no_grad():
        step = statistics.median(timed(lambda: model.eps(x, t), device) for _ in range(repeats * 3))
    sampling = {
        "batch": bs,
        "unet_eval_s": step,
        "ancestral_1000_images_per_s": round(bs / (1000 * step), 3),
        "ddim_50_images_per_s": round(bs / (50 * step), 2),
    }
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "batch_size": bs,
        "batches": batches,
        "repeats": repeats,
        "train": train,
        "dcgan_fit_over_bare": round(statistics.median(fitted) / statistics.median(bare), 3),
        "dcgan_seconds": {"fit": fitted, "bare": bare},
        "ddpm_sampling": sampling,
        "seconds": round(time.perf_counter() - t_start, 1),
        "command": "python benchmarks/generative.py"
        + (" --quick" if args.quick else "")
        + (f" --batches {args.batches}" if args.batches else ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(args.out), lambda f: f.write(json.dumps(result, indent=2).encode()))
    print(json.dumps({k: v for k, v in result.items() if k != "dcgan_seconds"}, indent=2))


if __name__ == "__main__":
    main()
