"""EOT-PGD against the Adversarial Robustness Toolbox's EOT wrappers, side by side in one process.

    python benchmarks/physical.py [--quick] [--threads 1] [--out benchmarks/results/physical.json]

- EOT-PGD (l_inf eps 0.3, targeted towards (y + 1) mod 10, K draws per gradient) against ART's
  ProjectedGradientDescentPyTorch on a PyTorchClassifier whose preprocessing is ART's
  EoTBrightnessPyTorch (the one EOT transformation both libraries share exactly: x + b, b uniform in
  [-0.1, 0.1], clipped to [0, 1]; ART's rotation needs torchvision). Equal K, steps, step size,
  images, model, no random start. ART runs its attack loop `_generate_batch` directly: its
  `generate` ends by scoring success with predict(), which under an EoT preprocessor returns K
  predictions per image and fails on the shape (ART 1.20). Times and the ratio theirs / ours; the
  expected targeted success of both on fresh draws (robustrep's evaluation, 100 draws) as a check
  that both did the same work.
- The warp (rotation +-30, scale 0.8-1.2, translation +-3 px; forward and backward, 1600 images)
  with plain affine_grid/grid_sample (ours) and, when kornia is importable, kornia's RandomAffine:
  the measurement behind docs/physical.md's choice of plain torch.

The model is the small CNN of `robustrep reproduce physical` (classifier arch "cnn"), trained for one
epoch on MNIST here (speed does not depend on its accuracy). ART is in the `bench` extra; it installs
without a new torch (`pip install adversarial-robustness-toolbox` pulls only six); kornia is not a
dependency at all (`pip install --no-deps kornia kornia_rs` for its arm).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import robustrep as rr
from robustrep.attacks import EOT, PGD
from robustrep.transforms import Distribution

ROOT = Path(__file__).resolve().parent


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def model_for_bench(epochs: int, n_train: int):
    X, y = rr.data.load("mnist", "train")
    torch.manual_seed(0)
    model = rr.models.build("classifier", arch="cnn")
    rr.training.fit(model, X[:n_train], y[:n_train], epochs=epochs, batch_size=50, progress=False, device="cpu")
    return model.eval()


def bench_eot(model, x, y, t, k, steps, eps):
    alpha = 2.5 * eps / steps
    dist = Distribution(brightness=0.1, seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    ours_atk = EOT(PGD(model, eps=eps, steps=steps, alpha=alpha, random_start=False, early_stop=False), dist, samples=k)
    t0 = time.perf_counter()
    ours = ours_atk(x, y, target=t)
    ours_s = time.perf_counter() - t0

    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier
    from art.preprocessing.expectation_over_transformation.natural_corruptions.brightness.pytorch import (
        EoTBrightnessPyTorch,
    )

    eot = EoTBrightnessPyTorch(nb_samples=k, clip_values=(0.0, 1.0), delta=0.1)
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), preprocessing_defences=[eot], device_type="cpu")  # fmt: skip
    art_atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, targeted=True,
                                              num_random_init=0, batch_size=len(x), verbose=False)  # fmt: skip
    onehot = torch.from_numpy(np.eye(10, dtype=np.float32)[t.numpy()])
    np.random.seed(0)
    t0 = time.perf_counter()
    # ART's attack loop itself: its generate() ends by scoring success with predict(), which under an EoT
    # preprocessor returns K predictions per image and fails on the shape (ART 1.20)
    theirs = torch.from_numpy(art_atk._generate_batch(x, onehot, None, eps, alpha)).float()
    art_s = time.perf_counter() - t0
    fresh = Distribution(brightness=0.1, seed=123)
    judge = {name: rr.evaluation.transformation_robustness(model, xa.clamp(0, 1), y, t, fresh, draws=100)["success_eot"]
             for name, xa in (("robustrep", ours), ("art", theirs))}  # fmt: skip
    return {"robustrep_seconds": round(ours_s, 3), "art_seconds": round(art_s, 3),
            "ratio_art_over_robustrep": round(art_s / ours_s, 2), "expected_success": judge}  # fmt: skip


def bench_warp(n=1600, repeats=10):
    x = torch.rand(n, 1, 28, 28, requires_grad=True)
    dist = Distribution(rotation=(-30, 30), scale=(0.8, 1.2), translate=3, seed=0)

    def timed(f):
        f().sum().backward()
        t0 = time.perf_counter()
        for _ in range(repeats):
            f().sum().backward()
        return (time.perf_counter() - t0) / repeats

    out = {"images": n, "plain_seconds": round(timed(lambda: dist(x)), 4)}
    try:
        import kornia
        import kornia.augmentation as KA
    except ImportError:
        out["kornia"] = "not installed"
        return out
    aug = KA.RandomAffine(degrees=30, translate=(3 / 28, 3 / 28), scale=(0.8, 1.2), p=1.0)
    out.update(kornia_version=kornia.__version__, kornia_seconds=round(timed(lambda: aug(x)), 4))
    out["ratio_kornia_over_plain"] = round(out["kornia_seconds"] / out["plain_seconds"], 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer images and steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "physical.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, steps = (20, 10) if args.quick else (100, 20)
    t_all = time.perf_counter()
    model = model_for_bench(1, 60000 if not args.quick else 5000)
    Xt, yt = rr.data.load("mnist", "test")
    x, y = Xt[:n], yt[:n]
    t = (y + 1) % 10
    results = {"settings": {"images": n, "steps": steps, "eps": 0.3, "transformation": "brightness +-0.1",
                            "threads": args.threads, "torch": torch.__version__, "python": platform.python_version()},
               "eot_pgd": {}}  # fmt: skip
    for k in (4, 16):
        results["eot_pgd"][f"K={k}"] = r = bench_eot(model, x, y, t, k, steps, 0.3)
        log(f"EOT-PGD K={k}: ours {r['robustrep_seconds']} s, ART {r['art_seconds']} s "
            f"({r['ratio_art_over_robustrep']}x); success {r['expected_success']}")  # fmt: skip
    results["warp"] = bench_warp()
    log(f"warp: {results['warp']}")
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rr.utils.atomic_write(args.out, lambda f: f.write(json.dumps(results, indent=2).encode()))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
