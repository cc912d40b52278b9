"""Reproduce the MNIST row of Wong & Kolter (2018), Table 1 (seed 000): a normally trained and a provably
robust classifier at l_inf eps = 0.1, each with its test error, FGSM error, PGD error and robust error
bound (the dual network's certificate, no [0, 1] box). The full run follows the authors' recipe
(conv 1->16 4x4/2, conv 16->32 4x4/2, FC 100, FC 10; Adam 1e-3, batch 50, 20 epochs, eps rising linearly
from 0.05 to 0.1 over the first 10 epochs; the whole test set); --quick trains an MLP 784-100-100-10 on a
training subset for a few epochs, evaluated on 1000 test points, to run in minutes on a CPU.

Also the seed's Figure 6 (Gopalakrishnan et al.): PGD accuracy against eps on a binary task (MNIST 3 vs 7)
with no defense, a sparsifying DCT front end, and l1-constrained weights (with the Theorem-2 certificate
of that network). Writes results.json, table1.png and figure6.png; a run killed midway continues from
its checkpoints when started again with the same --out.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


from .. import data, models
from ..attacks import FGSM, PGD
from ..certify import certified_accuracy
from ..errors import UserError
from ..evaluation import adversarial_accuracy, clean_accuracy
from ..runs import load_weights
from ..training import fit
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "wong-kolter"
HELP = "Wong & Kolter 2018 Table 1, MNIST row (normal vs provably robust, eps 0.1) and sparsification Fig. 6"

# The seed's Table 1, MNIST, eps = 0.1, in percent.
SEED_TABLE = {"normal": {"test_error": 1.07, "fgsm_error": 50.01, "pgd_error": 81.68, "robust_error_bound": 100.0},
              "robust": {"test_error": 1.80, "fgsm_error": 3.93, "pgd_error": 4.11, "robust_error_bound": 5.82}}
COLUMNS = ("test_error", "fgsm_error", "pgd_error", "robust_error_bound")

BUDGETS = {
    "quick": dict(arch="mlp", hidden="100,100", epochs=10, warmup_epochs=5, batch_size=50, subset=12000, n_eval=1000,
                  pgd_steps=40, restarts=1, fig6_subset=3000, fig6_epochs=5, fig6_n_eval=500, fig6_steps=20),
    "full": dict(arch="wk-conv", hidden="100,100", epochs=20, warmup_epochs=10, batch_size=50, subset=0, n_eval=0,
                 pgd_steps=100, restarts=10, fig6_subset=0, fig6_epochs=20, fig6_n_eval=0, fig6_steps=100),
}
FIG6_RADII = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
FIG6_PAIR = (3, 7)


def add_arguments(p) -> None:
    p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"),
                   help="mnist (default) or digits (sklearn's 8x8, a seconds-long smoke test)")
    p.add_argument("--eps", type=float, default=0.1, help="l_inf radius of Table 1 (default 0.1)")
    add_budget_arguments(p, BUDGETS)
    p.add_argument("--front-k", type=int, default=50, help="coefficients kept by the DCT front end (default 50)")
    p.add_argument("--l1-gamma", type=float, default=3.0, help="l1 radius of every weight row (default 3.0)")
    p.add_argument("--skip-figure6", action="store_true", help="only the Table 1 part")


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    s.update(dataset=args.dataset, eps=args.eps, seed=args.seed, front_k=args.front_k, l1_gamma=args.l1_gamma,
             budget="quick" if args.quick else "full", skip_figure6=args.skip_figure6)
    if s["eps"] <= 0 or s["epochs"] < 1 or s["batch_size"] < 1 or s["restarts"] < 1:
        raise UserError("need --eps > 0, --epochs >= 1, --batch-size >= 1 and --restarts >= 1")
    return s


def _train(hparams, X, y, s, run_dir: Path, device, progress, epochs, batch_size):
    """Train (or continue, or reuse) one classifier in `run_dir`."""
    seed_everything(s["seed"])
    model = models.build("classifier", **hparams)
    if (run_dir / "model.safetensors").exists():
        return load_weights(model, run_dir / "model.safetensors").to(device).eval()
    config = {"model": "classifier", "hparams": hparams,
              "training": {"dataset": s["dataset"], "task": None, "epochs": epochs, "batch_size": batch_size,
                           "lr": 1e-3, "seed": s["seed"], "subset": s["subset"]}}
    fit(model, X, y, epochs=epochs, batch_size=batch_size, lr=1e-3, run_dir=run_dir, seed=s["seed"], device=device,
        resume=(run_dir / "checkpoint" / "last.pt").exists(), progress=progress, config=config)
    return model.eval()


def table1(s, out: Path, device, progress) -> dict:
    X, y = data.load(s["dataset"], "train")
    X, y = data.random_subset(X, y, s["subset"], s["seed"])
    Xt, yt = data.load(s["dataset"], "test")
    Xt, yt = data.random_subset(Xt, yt, s["n_eval"], s["seed"] + 1)
    Xt, yt = Xt.to(device), yt.to(device)
    rows = {}
    for name, robust in (("normal", "none"), ("robust", "dual")):
        hparams = {"input_shape": list(X.shape[1:]), "num_classes": 10, "arch": s["arch"], "hidden": s["hidden"],
                   "robust": robust, "eps": s["eps"], "eps_start": s["eps"] / 2, "warmup_epochs": s["warmup_epochs"]}
        t0 = time.perf_counter()
        model = _train(hparams, X, y, s, out / name, device, progress, s["epochs"], s["batch_size"])
        t1 = time.perf_counter()
        seed_everything(s["seed"])
        clean = clean_accuracy(model, Xt, yt)
        fgsm = adversarial_accuracy(model, Xt, yt, FGSM(model, eps=s["eps"]), batch_size=500)
        pgd = adversarial_accuracy(model, Xt, yt, PGD(model, eps=s["eps"], steps=s["pgd_steps"], restarts=s["restarts"]),
                                   batch_size=500, progress=progress)
        t2 = time.perf_counter()
        cert = certified_accuracy(model, Xt, yt, s["eps"], "dual", batch_size=50 if s["arch"] == "wk-conv" else 200,
                                  progress=progress)
        t3 = time.perf_counter()
        rows[name] = {"test_error": 100 * (1 - clean), "fgsm_error": 100 * (1 - fgsm), "pgd_error": 100 * (1 - pgd),
                      "robust_error_bound": 100 * (1 - cert),
                      "seconds": {"train": round(t1 - t0, 1), "attacks": round(t2 - t1, 1), "certify": round(t3 - t2, 1)}}
        print(f"{name}: " + ", ".join(f"{k} {rows[name][k]:.2f}%" for k in COLUMNS), file=sys.stderr)
    return {"n_train": len(X), "n_eval": len(Xt), "models": rows}


def figure6(s, out: Path, device, progress) -> dict:
    """PGD accuracy vs eps on a binary task, without and with each sparsification defense."""
    a, b = FIG6_PAIR
    def binary(split):
        X, y = data.load(s["dataset"], split)
        keep = (y == a) | (y == b)
        return X[keep], (y[keep] == b).long()
    X, y = binary("train")
    X, y = data.random_subset(X, y, s["fig6_subset"], s["seed"])
    Xt, yt = binary("test")
    Xt, yt = data.random_subset(Xt, yt, s["fig6_n_eval"], s["seed"] + 1)
    Xt, yt = Xt.to(device), yt.to(device)
    variants = {"no defense": {}, f"DCT front end (K={s['front_k']})": {"front_end": "dct", "front_k": s["front_k"]},
                f"l1 weights (gamma={s['l1_gamma']:g})": {"l1_gamma": s["l1_gamma"]}}
    curves = {}
    for i, (label, extra) in enumerate(variants.items()):
        hparams = {"input_shape": list(X.shape[1:]), "num_classes": 2, "arch": "mlp", "hidden": "100",
                   "robust": "none", **extra}
        model = _train(hparams, X, y, s, out / f"figure6-{i}", device, progress, s["fig6_epochs"], 50)
        acc, cert = {}, {}
        for eps in FIG6_RADII:
            seed_everything(s["seed"])
            acc[str(eps)] = clean_accuracy(model, Xt, yt) if eps == 0 else adversarial_accuracy(
                model, Xt, yt, PGD(model, eps=eps, steps=s["fig6_steps"], restarts=1), batch_size=500)
            if "l1_gamma" in extra:
                cert[str(eps)] = certified_accuracy(model, Xt, yt, eps, "theorem2", batch_size=500)
        curves[label] = {"pgd_accuracy": acc, **({"theorem2_certified": cert} if cert else {})}
        print(f"figure 6, {label}: " + ", ".join(f"{k}: {v:.3f}" for k, v in acc.items()), file=sys.stderr)
    return {"task": f"{s['dataset']} {a} vs {b}", "n_train": len(X), "n_eval": len(Xt), "pgd_steps": s["fig6_steps"],
            "curves": curves}


def _plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, ("normal", "robust")):
        ours = [results["table1"]["models"][name][c] for c in COLUMNS]
        seed = [SEED_TABLE[name][c] for c in COLUMNS]
        pos = range(len(COLUMNS))
        ax.bar([p - 0.2 for p in pos], seed, 0.4, label="Wong & Kolter (seed Table 1)")
        ax.bar([p + 0.2 for p in pos], ours, 0.4, label=f"ours ({results['settings']['budget']})")
        ax.set_xticks(list(pos), ["test", "FGSM", "PGD", "robust bound"])
        ax.set_ylabel("error (%)")
        ax.set_title(f"{name} model, MNIST, eps {results['settings']['eps']}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "table1.png", dpi=120)
    plt.close(fig)
    if "figure6" in results:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for label, curve in results["figure6"]["curves"].items():
            ax.plot([float(e) for e in curve["pgd_accuracy"]], list(curve["pgd_accuracy"].values()), "o-", label=label)
            if "theorem2_certified" in curve:
                ax.plot([float(e) for e in curve["theorem2_certified"]], list(curve["theorem2_certified"].values()),
                        "k:", label="l1 weights: Theorem-2 certified")
        ax.set_xlabel("eps (l_inf)")
        ax.set_ylabel("accuracy under PGD")
        ax.set_title(f"Figure 6 style: {results['figure6']['task']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "figure6.png", dpi=120)
        plt.close(fig)


def format_table(results: dict) -> str:
    lines = [f"{results['settings']['dataset']}, eps {results['settings']['eps']}: ours ({results['settings']['budget']}: {results['settings']['arch']}, "
             f"{results['table1']['n_train']} train, {results['table1']['n_eval']} test) vs seed Table 1",
             f"{'model':<8} {'':<6} {'test err':>9} {'FGSM err':>9} {'PGD err':>9} {'robust bound':>13}"]
    for name in ("normal", "robust"):
        for who, row in (("ours", results["table1"]["models"][name]), ("paper", SEED_TABLE[name])):
            lines.append(f"{name:<8} {who:<6} " + " ".join(f"{row[c]:8.2f}%" for c in COLUMNS[:3])
                         + f" {row[COLUMNS[3]]:12.2f}%")
    if "figure6" in results:
        lines.append(f"Figure 6 ({results['figure6']['task']}): PGD accuracy at eps " + ", ".join(
            k for k in next(iter(results["figure6"]["curves"].values()))["pgd_accuracy"]))
        for label, curve in results["figure6"]["curves"].items():
            lines.append(f"  {label:<28} " + " ".join(f"{v:.3f}" for v in curve["pgd_accuracy"].values()))
            if "theorem2_certified" in curve:
                lines.append(f"  {'  Theorem-2 certified':<28} " + " ".join(f"{v:.3f}" for v in curve["theorem2_certified"].values()))
    lines.append(f"total {results['seconds']:.0f} s")
    return "\n".join(lines)


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "settings.json"
    if saved.exists() and json.loads(saved.read_text()) != s:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete it")
    atomic_write(saved, lambda f: f.write(json.dumps(s, indent=2).encode()))
    results = {"settings": s, "seed_table1": SEED_TABLE, "table1": table1(s, out, device, progress)}
    if not s["skip_figure6"]:
        results["figure6"] = figure6(s, out, device, progress)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _plot(results, out)
    print(format_table(results))
    return results
