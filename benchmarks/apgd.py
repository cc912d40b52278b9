"""Our attack ensemble against AutoAttack (pyautoattack, the authors' code) on the same classifiers and
the same points, in one process: robust accuracy, which points each breaks that the other does not,
and wall time.

    OMP_NUM_THREADS=1 python benchmarks/apgd.py --runs runs/se-quick/vae runs/se-quick/se --eps 0.1 \\
        --n 500 --threads 1 --out benchmarks/results/apgd.json

Rows per classifier and radius (l_inf), all on the same n test points (a fixed random subset):
- pgd: the paper's protocol, PGD 100 steps x 10 restarts (ours);
- ensemble: ours, APGD-CE (100 steps), APGD-T (9 target classes x 100 steps), Square (5000 queries),
  each on the points the earlier ones left;
- autoattack-apgd: AutoAttack's APGD-CE + APGD-T ("custom" version with those two);
- autoattack-standard: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square 5000), unless
  --no-standard.
Without --runs, a 784-200-200-10 MNIST MLP is trained (2 epochs, Adam) and cached in runs/bench-cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import robustrep as rr
from robustrep.attacks import PGD, Ensemble, predict
from robustrep.options import parse_radii
from robustrep.utils import atomic_write

ROOT = Path(__file__).resolve().parent


def mnist_mlp(cache: Path) -> nn.Module:
    from safetensors.torch import load_file, save_file

    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)
    )
    path = cache / "apgd-mlp-200-200-e2.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    X, y = rr.data.load("mnist", "train")
    X = X[:]
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        for idx in torch.randperm(len(X)).split(128):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    cache.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def autoattack(model, x, y, eps, version, attacks=None):
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="Linf", eps=eps, version=version, attacks=attacks, seed=0, device=str(x.device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]


def compare(model, x, y, eps, standard: bool, log) -> dict:
    """Every attack on the same points; a point counts as robust if right on x and on its x_adv."""
    clean = predict(model, x) == y
    rows = {}

    def row(name, fn):
        torch.manual_seed(0)
        x_adv, seconds = timed(fn)
        delta = (x_adv - x).abs().flatten(1).amax(1)
        assert float(delta.max()) <= eps + 1e-5, f"{name} left the ball"
        left = clean & (predict(model, x_adv) == y)
        rows[name] = {"robust_accuracy": int(left.sum()) / len(x), "seconds": round(seconds, 2), "_left": left}
        log(f"  {name:<20} robust {rows[name]['robust_accuracy']:.4f}  {seconds:7.1f} s")

    row("pgd", lambda: PGD(model, eps=eps, steps=100, restarts=10)(x, y))
    ens = Ensemble(model, eps=eps)
    row("ensemble", lambda: ens(x, y))
    rows["ensemble"]["broken_by"] = ens.broken_by
    rows["ensemble"]["stage_seconds"] = {k: round(v, 2) for k, v in ens.seconds.items()}
    row("autoattack-apgd", lambda: autoattack(model, x, y, eps, "custom", ["apgd-ce", "apgd-t"]))
    if standard:
        row("autoattack-standard", lambda: autoattack(model, x, y, eps, "standard"))
    ours = rows["ensemble"]["_left"]
    for name in [k for k in rows if k.startswith("autoattack")]:
        theirs = rows[name]["_left"]
        rows[name]["broken_by_it_not_by_ensemble"] = int((ours & ~theirs).sum())
        rows[name]["broken_by_ensemble_not_by_it"] = int((theirs & ~ours).sum())
        rows[name]["time_ratio_to_ensemble"] = round(rows[name]["seconds"] / max(rows["ensemble"]["seconds"], 1e-9), 2)
    for r in rows.values():
        del r["_left"]
    return {"clean_accuracy": int(clean.sum()) / len(x), **rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="*", default=[], help="encoder runs with a probe (attacked as probe(mu(x)))")
    p.add_argument("--eps", default="0.1", help="comma-separated l_inf radii (default 0.1)")
    p.add_argument("--n", type=int, default=500, help="test points (a fixed random subset; default 500)")
    p.add_argument("--no-standard", action="store_true", help="skip AutoAttack's standard version (FAB-T is slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--cache", default="runs/bench-cache", help="where the default MLP is kept")
    p.add_argument("--out", default=str(ROOT / "results" / "apgd.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    radii = parse_radii(args.eps, "--eps")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    targets = {}
    for run in args.runs:
        targets[run] = rr.runs.load_classifier(run, "cpu").eval()
    if not targets:
        targets["mnist-mlp-200-200"] = mnist_mlp(Path(args.cache))
    Xt, yt = rr.data.load("mnist", "test")
    x, y = rr.data.random_subset(Xt, yt, args.n, args.seed)
    x = x[:]
    result = {
        "command": "python benchmarks/apgd.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": len(x),
        "seed": args.seed,
        "radii": radii,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "code_version": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "pyautoattack": __import__("importlib.metadata").metadata.version("pyautoattack"),
        "results": {},
    }
    for name, model in targets.items():
        for p_ in model.parameters():
            p_.requires_grad_(False)
        for eps in radii:
            log(f"{name} eps {eps}")
            result["results"].setdefault(name, {})[str(eps)] = compare(model, x, y, eps, not args.no_standard, log)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=2).encode()))
    log(f"wrote {args.out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
