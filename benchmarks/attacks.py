"""Attacks side by side with their peers on the same trained MNIST models, in one process.

    python benchmarks/attacks.py [--quick] [--threads 1] [--out benchmarks/results/attacks.json]

- PGD (l_inf, eps 0.1, 100 steps, alpha 0.01, one random start) against torchattacks.PGD on an
  MLP 784-200-200-10: adversarial accuracy of each and the throughput ratio (theirs / ours time).
- DeepFool (50 steps, overshoot 0.02, 10 candidates) against foolbox's L2DeepFoolAttack (and
  torchattacks.DeepFool on a few points): success rate, mean l_2, rho_adv, ms per image.
- CW-L2 (kappa 0, 100 steps, lr 0.01, c 1 and c 10) against torchattacks.CW: success rate, mean l_2
  on the points both break, time; ours at equal settings (one c, no early abort) and with its
  binary search over c (5 steps, per-example early abort).
- DeepFool's rho_adv on FC500-150-10 (the paper's Table 1 reports 0.11).
- A transferability matrix (PGD eps 0.15) over four MNIST models, and a universal perturbation
  (l_inf 0.2) with its fooling rate on test images; both with figures.
Models are trained once and cached under runs/bench-cache (git-ignored). Peers are imported here
only; the package never imports them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

import robustrep as rr
from robustrep.attacks import CW, PGD, DeepFool, UniversalPerturbation, predict
from robustrep.attacks.plots import plot_examples, plot_transfer, plot_universal

ROOT = Path(__file__).resolve().parent


def mlp(*widths):
    layers = [nn.Flatten()]
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


MODELS = {
    "mlp-200-200": lambda: mlp(784, 200, 200, 10),
    "fc-500-150": lambda: mlp(784, 500, 150, 10),
    "cnn": cnn,
    "softmax": lambda: mlp(784, 10),
}


def trained(name, X, y, epochs, cache: Path, log):
    """Train (Adam, batch 128) or load from the cache; returns the model in eval mode."""
    from safetensors.torch import load_file, save_file

    model = MODELS[name]()
    path = cache / f"{name}-e{epochs}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(128):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    cache.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    log(f"trained {name} ({epochs} epochs) in {time.perf_counter() - t0:.0f}s")
    return model.eval()


REPEAT = 3  # timings are the best of REPEAT runs: the machines these run on are often shared


def timed(fn, repeat=None):
    """(output of the last run, best wall time over `repeat` runs of fn)."""
    best = float("inf")
    for _ in range(repeat or REPEAT):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def accuracy(model, x, y):
    return float((predict(model, x) == y).float().mean())


def norms(x_adv, x):
    d = (x_adv - x).flatten(1)
    return d.norm(dim=1), d.abs().amax(1)


def bench_pgd(model, x, y, torchattacks):
    eps, steps, alpha = 0.1, 100, 0.01
    ours, t_ours = timed(lambda: PGD(model, eps=eps, steps=steps, alpha=alpha)(x, y))
    full, t_full = timed(lambda: PGD(model, eps=eps, steps=steps, alpha=alpha, early_stop=False)(x, y))
    theirs, t_theirs = timed(
        lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    )
    return {
        "settings": {"eps": eps, "steps": steps, "alpha": alpha, "restarts": 1, "n": len(x)},
        "ours": {
            "adv_accuracy": accuracy(model, ours, y),
            "seconds": t_ours,
            "max_linf": float(norms(ours, x)[1].max()),
        },
        "ours_no_early_stop": {"adv_accuracy": accuracy(model, full, y), "seconds": t_full},
        "torchattacks": {
            "adv_accuracy": accuracy(model, theirs, y),
            "seconds": t_theirs,
            "max_linf": float(norms(theirs, x)[1].max()),
        },
        "throughput_ratio": t_theirs / t_ours,
        "throughput_ratio_no_early_stop": t_theirs / t_full,
    }


def deepfool_row(model, x, y, x_adv, seconds):
    won = predict(model, x_adv) != y
    l2 = norms(x_adv, x)[0]
    rho = l2 / x.flatten(1).norm(dim=1)
    return {
        "success_rate": float(won.float().mean()),
        "mean_l2": float(l2[won].mean()) if won.any() else None,
        "rho_adv": float(rho[won].mean()) if won.any() else None,
        "ms_per_image": 1000 * seconds / len(x),
    }


def bench_deepfool(model, x, y, torchattacks, foolbox, n_ta):
    atk = DeepFool(model, steps=50, overshoot=0.02, candidates=10)
    ours, t_ours = timed(lambda: atk(x, y))
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    fb_atk = foolbox.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    (_, theirs, _), t_theirs = timed(lambda: fb_atk(fmodel, x, y, epsilons=None))
    out = {
        "settings": {"steps": 50, "overshoot": 0.02, "candidates": 10, "n": len(x)},
        "ours": deepfool_row(model, x, y, ours, t_ours),
        "foolbox": deepfool_row(model, x, y, theirs, t_theirs),
    }
    out["ours"]["rho_adv_attribute"] = atk.rho_adv
    xs, ys = x[:n_ta], y[:n_ta]
    ta, t_ta = timed(lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(xs, ys), repeat=1)
    out["torchattacks"] = {**deepfool_row(model, xs, ys, ta, t_ta), "n": n_ta}
    out["time_ratio_foolbox"] = out["foolbox"]["ms_per_image"] / out["ours"]["ms_per_image"]
    out["l2_ratio_foolbox"] = out["ours"]["mean_l2"] / out["foolbox"]["mean_l2"]
    return out


def bench_cw(model, x, y, torchattacks, c):
    settings = dict(c=c, kappa=0.0, steps=100, lr=0.01)
    theirs, t_theirs = timed(lambda: torchattacks.CW(model, **settings)(x, y))
    rows = {"torchattacks": (theirs, t_theirs)}
    # equal settings: one c, every step run (torchattacks' own early stop compares with a cost it never updates)
    rows["ours_equal"] = timed(lambda: CW(model, **settings, binary_search_steps=1, abort_early=False)(x, y))
    rows["ours_search5"] = timed(lambda: CW(model, **settings, binary_search_steps=5)(x, y))
    won = {k: predict(model, v[0]) != y for k, v in rows.items()}
    l2 = {k: norms(v[0], x)[0] for k, v in rows.items()}
    out = {"settings": {**settings, "n": len(x)}}
    for k, (_, t) in rows.items():
        both = won[k] & won["torchattacks"]
        out[k] = {
            "success_rate": float(won[k].float().mean()),
            "mean_l2": float(l2[k][won[k]].mean()),
            "mean_l2_where_both_succeed": float(l2[k][both].mean()),
            "seconds": t,
        }
    for k in ("ours_equal", "ours_search5"):
        out[f"{k}_vs_torchattacks"] = {
            "success_ratio": out[k]["success_rate"] / out["torchattacks"]["success_rate"],
            "l2_ratio_where_both_succeed": out[k]["mean_l2_where_both_succeed"]
            / out["torchattacks"]["mean_l2_where_both_succeed"],
            "time_ratio": out[k]["seconds"] / out["torchattacks"]["seconds"],
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points and epochs: a few minutes on a laptop CPU")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--out", default=str(ROOT / "results" / "attacks.json"))
    p.add_argument("--cache", default="runs/bench-cache", help="where trained models are kept")
    args = p.parse_args(argv)
    import foolbox
    import torchattacks

    torch.set_num_threads(args.threads)
    rr.utils.seed_everything(0)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figures = out_path.parent
    cache = Path(args.cache)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    q = args.quick
    n = {
        "pgd": 500 if q else 1000,
        "deepfool": 1000 if q else 10000,
        "cw": 100 if q else 300,
        "deepfool_peer": 500 if q else 1000,
        "torchattacks_deepfool": 30 if q else 100,
        "transfer": 300 if q else 1000,
        "universal_fit": 1000 if q else 4000,
        "universal_test": 1000 if q else 10000,
    }
    epochs = 2 if q else 5
    t_start = time.perf_counter()
    X, y = rr.data.load("mnist", "train")
    Xt, yt = rr.data.load("mnist", "test")
    models = {name: trained(name, X, y, epochs, cache, log) for name in MODELS}
    main_model = models["mlp-200-200"]
    result = {
        "quick": q,
        "threads": args.threads,
        "timing": f"best of {REPEAT} runs",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "epochs": epochs,
        "clean_accuracy": {k: accuracy(m, Xt, yt) for k, m in models.items()},
    }
    log(f"clean accuracy {result['clean_accuracy']}")

    # attack points the model gets right, so both libraries face the same task
    ok = predict(main_model, Xt) == yt
    xs, ys = Xt[ok], yt[ok]

    result["pgd"] = bench_pgd(main_model, xs[: n["pgd"]], ys[: n["pgd"]], torchattacks)
    log(f"pgd {result['pgd']}")
    result["deepfool"] = bench_deepfool(
        main_model,
        xs[: n["deepfool_peer"]],
        ys[: n["deepfool_peer"]],
        torchattacks,
        foolbox,
        n["torchattacks_deepfool"],
    )
    log(f"deepfool {result['deepfool']}")
    result["cw"] = {
        f"c={c:g}": bench_cw(main_model, xs[: n["cw"]], ys[: n["cw"]], torchattacks, c) for c in (1.0, 10.0)
    }
    log(f"cw {result['cw']}")

    fc = models["fc-500-150"]
    ok_fc = predict(fc, Xt) == yt
    atk = DeepFool(fc)
    x_adv, t = timed(lambda: atk(Xt[ok_fc][: n["deepfool"]], yt[ok_fc][: n["deepfool"]]), repeat=1)
    result["deepfool_rho_fc500_150"] = {
        "rho_adv": atk.rho_adv,
        "paper": 0.11,
        "n": int(min(ok_fc.sum(), n["deepfool"])),
        "test_error": 1 - result["clean_accuracy"]["fc-500-150"],
        "success_rate": float(atk.success.float().mean()),
        "ms_per_image": 1000 * t / min(int(ok_fc.sum()), n["deepfool"]),
    }
    log(f"rho {result['deepfool_rho_fc500_150']}")
    show = slice(0, 8)
    plot_examples(
        Xt[ok_fc][show],
        x_adv[show],
        yt[ok_fc][show],
        predict(fc, Xt[ok_fc][show]),
        predict(fc, x_adv[show]),
        figures / "deepfool_fc500.png",
        title=f"DeepFool on FC500-150-10, rho_adv {atk.rho_adv:.3f}",
    )

    m = rr.evaluation.transfer_matrix(
        models, Xt[: n["transfer"]], yt[: n["transfer"]], lambda f: PGD(f, eps=0.15, steps=20)
    )
    result["transfer"] = {**m, "attack": "PGD l_inf eps 0.15, 20 steps"}
    plot_transfer(m, figures / "transfer.png", title="accuracy (%) under transferred PGD, eps 0.15")
    log(f"transfer {m['accuracy']}")

    uap = UniversalPerturbation(main_model, eps=0.2, norm="linf", max_epochs=3 if q else 5, target_fooling=0.8)
    _, t_fit = timed(lambda: uap.fit(X[: n["universal_fit"]]), repeat=1)
    xu = Xt[: n["universal_test"]]
    pred, pred_u = predict(main_model, xu), predict(main_model, uap(xu, yt[: n["universal_test"]]))
    result["universal"] = {
        "eps": 0.2,
        "norm": "linf",
        "fit_points": n["universal_fit"],
        "fooling_rate_fit": uap.fooling_rate,
        "fooling_rate_test": float((pred != pred_u).float().mean()),
        "accuracy_test": float((pred_u == yt[: n["universal_test"]]).float().mean()),
        "fit_seconds": t_fit,
    }
    plot_universal(
        uap.perturbation,
        xu[:6],
        pred[:6],
        pred_u[:6],
        figures / "universal.png",
        title=f"universal l_inf 0.2: fooling rate {result['universal']['fooling_rate_test']:.2f} (test)",
    )
    log(f"universal {result['universal']}")

    result["seconds"] = time.perf_counter() - t_start
    out_path.write_text(json.dumps(result, indent=2))
    log(f"wrote {out_path} in {result['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
