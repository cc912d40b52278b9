"""Reproduce the MNIST row of Wong & Kolter (2018), Table 1 (seed 000): a normally trained and a provably
robust classifier at l_inf eps = 0.1, each with its test error, FGSM error, PGD error and robust error
bound (the dual network's certificate, no [0, 1] box, as in the paper; the box-clipped dual and CROWN
bounds beside it for the robust models). The full run follows the authors' recipe (conv 1->16 4x4/2,
conv 16->32 4x4/2, FC 100, FC 10; Adam 1e-3, batch 50, 20 epochs, eps rising linearly from 0.05 to 0.1
over the first 10; the whole test set), with the robust models trained on random Cauchy projections
(k = 50, Wong, Schmidt, Metzen & Kolter 2018) and certified exactly, plus the MLP 784-100-100-10 on all
the data as a second robust row; --quick trains the MLP on a training subset for a few epochs,
evaluated on 1000 test points, to run in minutes on a CPU.

--max-minutes stops training between epochs when the next epoch would not fit (its length measured on
the last epoch, or estimated from two timed steps before the first); the models are evaluated as far as
they got and results.json says how many epochs each ran. Started again with the same --out, the run
continues from its checkpoints.

Also the seed's Figure 6 (Gopalakrishnan et al.): PGD accuracy against eps on a binary task (MNIST 3 vs 7)
with no defense, a sparsifying DCT front end, and l1-constrained weights (with the Theorem-2 certificate
of that network). Writes results.json, table1.png, figure6.png and report.html.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from .. import data, models, plots, report, validate
from ..attacks import FGSM, PGD
from ..certify import certified_accuracy
from ..errors import UserError
from ..evaluation import adversarial_accuracy, clean_accuracy
from ..runs import load_weights, read_metrics
from ..training import fit, train_seconds
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "wong-kolter"
HELP = "Wong & Kolter 2018 Table 1, MNIST row (normal vs provably robust, eps 0.1) and sparsification Fig. 6"

# The seed's Table 1, MNIST, eps = 0.1, in percent (the conv net, 20 epochs).
SEED_TABLE = {
    "normal": {"test_error": 1.07, "fgsm_error": 50.01, "pgd_error": 81.68, "robust_error_bound": 100.0},
    "robust": {"test_error": 1.80, "fgsm_error": 3.93, "pgd_error": 4.11, "robust_error_bound": 5.82},
}
COLUMNS = ("test_error", "fgsm_error", "pgd_error", "robust_error_bound")
EXTRA_BOUNDS = {"robust_error_bound_box": ("dual", (0.0, 1.0)), "robust_error_bound_crown_box": ("crown", (0.0, 1.0))}

BUDGETS = {
    "quick": dict(
        arch="mlp",
        hidden="100,100",
        epochs=10,
        warmup_epochs=5,
        batch_size=50,
        subset=12000,
        n_eval=1000,
        pgd_steps=40,
        restarts=1,
        projections=0,
        second_arch="none",
        fig6_subset=3000,
        fig6_epochs=5,
        fig6_n_eval=500,
        fig6_steps=20,
    ),
    "full": dict(
        arch="wk-conv",
        hidden="100,100",
        epochs=20,
        warmup_epochs=10,
        batch_size=50,
        subset=0,
        n_eval=0,
        pgd_steps=100,
        restarts=10,
        projections=50,
        second_arch="mlp",
        fig6_subset=0,
        fig6_epochs=20,
        fig6_n_eval=0,
        fig6_steps=100,
    ),
}
FIG6_RADII = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
FIG6_PAIR = (3, 7)
# Settings that steer a run without changing its results: a resumed run may change them.
RUN_CONTROL = ("max_minutes",)
CERTIFIABLE = ("mlp", "wk-conv")  # the classifier archs the dual network can bound


def add_arguments(p) -> None:
    p.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "digits"),
        help="mnist (default) or digits (sklearn's 8x8, a seconds-long smoke test)",
    )
    p.add_argument("--eps", type=float, default=0.1, help="l_inf radius of Table 1 (default 0.1)")
    add_budget_arguments(p, BUDGETS)
    p.add_argument("--front-k", type=int, default=50, help="coefficients kept by the DCT front end (default 50)")
    p.add_argument("--l1-gamma", type=float, default=3.0, help="l1 radius of every weight row (default 3.0)")
    p.add_argument("--skip-figure6", action="store_true", help="only the Table 1 part")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop training between epochs when the next would end after this many minutes from the "
        "start; evaluate what was reached (default 0: no limit). Run again to continue",
    )


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    s.update(
        dataset=args.dataset,
        eps=args.eps,
        seed=args.seed,
        front_k=args.front_k,
        l1_gamma=args.l1_gamma,
        budget="quick" if args.quick else "full",
        skip_figure6=args.skip_figure6,
        max_minutes=args.max_minutes,
    )
    for key in ("eps", "l1_gamma"):
        if not (isinstance(s[key], (int, float)) and math.isfinite(s[key]) and s[key] > 0):
            raise UserError(f"--{key.replace('_', '-')} must be a finite number > 0, got {s[key]!r}")
    if not (math.isfinite(s["max_minutes"]) and s["max_minutes"] >= 0):
        raise UserError(f"--max-minutes must be a finite number >= 0 (0: no limit), got {s['max_minutes']!r}")
    for key in ("epochs", "batch_size", "restarts", "front_k", "fig6_epochs"):
        if s[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    for key in (
        "warmup_epochs",
        "subset",
        "n_eval",
        "pgd_steps",
        "projections",
        "fig6_subset",
        "fig6_n_eval",
        "fig6_steps",
    ):
        if s[key] < 0:
            raise UserError(f"--{key.replace('_', '-')} must be >= 0, got {s[key]}")
    for key in ("arch", "second_arch"):
        allowed = CERTIFIABLE if key == "arch" else ("none", *CERTIFIABLE)
        if s[key] not in allowed:
            raise UserError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, got {s[key]!r}")
    try:
        widths = [int(h) for h in s["hidden"].split(",") if h.strip()]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise UserError(f"--hidden takes comma-separated positive widths, got {s['hidden']!r}")
    # upper limits too: a huge value is refused here, not after hours (robustrep.validate)
    for w in widths:
        validate.width(w, "--hidden (each width)")
    for key, high in (("eps", 1e6), ("l1_gamma", 1e6), ("max_minutes", 1e7)):
        validate.number(s[key], f"--{key.replace('_', '-')}", low=0, high=high)
    validate.nonnegative(s["front_k"], "--front-k", integer=True, high=10**7)
    return s


def _epoch_estimate(model, X, y, batch_size: int, device) -> float:
    """Seconds for one epoch, from two timed training steps (gradients, no update) after a warm-up one."""
    model.to(device).train()
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(0, 1)
    xb, yb = X[:batch_size].to(device), y[:batch_size].to(device)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model.zero_grad()
        model.loss(xb, yb)["loss"].backward()
        times.append(time.perf_counter() - t)
    model.zero_grad()
    return min(times[1:]) * math.ceil(len(X) / batch_size)


def _train(hparams, X, y, s, run_dir: Path, device, progress, epochs, batch_size, deadline=None):
    """Train (or continue, or reuse) one classifier in `run_dir`, epoch by epoch while the deadline (a
    time.time() value, or None) allows. Returns (model or None if no epoch is done, facts about it)."""
    seed_everything(s["seed"])
    model = models.build("classifier", **hparams)
    config = {
        "model": "classifier",
        "hparams": hparams,
        "training": {
            "dataset": s["dataset"],
            "task": None,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": 1e-3,
            "seed": s["seed"],
            "subset": s["subset"],
        },
    }
    history = read_metrics(run_dir) if (run_dir / "checkpoint" / "last.pt").exists() else []
    info: dict = {"epochs_planned": epochs}
    while len(history) < epochs:
        target = epochs
        if deadline is not None:
            need = history[-1]["seconds"] if history else _epoch_estimate(model, X, y, batch_size, device)
            if time.time() + need > deadline:
                info["stopped"] = (
                    f"the next epoch (~{need:.0f} s) would pass --max-minutes; "
                    f"run again with the same --out to continue"
                )
                info["next_epoch_seconds_estimate"] = round(need, 1)
                break
            target = len(history) + 1
        seed_everything(s["seed"])
        fit(
            model,
            X,
            y,
            epochs=target,
            batch_size=batch_size,
            lr=1e-3,
            run_dir=run_dir,
            seed=s["seed"],
            device=device,
            resume=bool(history),
            progress=progress,
            config=config,
        )
        history = read_metrics(run_dir)
    info.update(epochs=len(history), train_seconds=train_seconds(history))
    if not history:
        return None, info
    return load_weights(model, run_dir / "model.safetensors").to(device).eval(), info


def _rows(s) -> list[tuple[str, str, str]]:
    """(row name, arch, robust training) in the order they train. Under a time limit the first rows get the
    time: the second (cheaper) robust model first, as the certified defense is the point of the table;
    then the normal model; the main robust model last (on a CPU its epoch is the longest by far)."""
    rows = []
    if s["second_arch"] != "none":
        rows.append((f"robust-{s['second_arch']}", s["second_arch"], "dual"))
    rows.append(("normal", s["arch"], "none"))
    rows.append(("robust", s["arch"], "dual"))
    return rows


def table1(s, out: Path, device, progress, deadline=None) -> dict:
    X, y = data.load(s["dataset"], "train")
    X, y = data.random_subset(X, y, s["subset"], s["seed"])
    Xt, yt = data.load(s["dataset"], "test")
    Xt, yt = data.random_subset(Xt, yt, s["n_eval"], s["seed"] + 1)
    Xt, yt = Xt.to(device), yt.to(device)
    rows = {}
    for name, arch, robust in _rows(s):
        hparams = {
            "input_shape": list(X.shape[1:]),
            "num_classes": 10,
            "arch": arch,
            "hidden": s["hidden"],
            "robust": robust,
            "eps": s["eps"],
            "eps_start": s["eps"] / 2,
            "warmup_epochs": s["warmup_epochs"],
            "projections": s["projections"] if robust == "dual" else 0,
        }
        model, info = _train(hparams, X, y, s, out / name, device, progress, s["epochs"], s["batch_size"], deadline)
        row = {"arch": arch, "projections": hparams["projections"], **info}
        if model is None:
            rows[name] = row
            print(f"{name}: not trained ({info['stopped']})", file=sys.stderr)
            continue
        t1 = time.perf_counter()
        seed_everything(s["seed"])
        clean = clean_accuracy(model, Xt, yt)
        fgsm = adversarial_accuracy(model, Xt, yt, FGSM(model, eps=s["eps"]), batch_size=500)
        pgd = adversarial_accuracy(
            model,
            Xt,
            yt,
            PGD(model, eps=s["eps"], steps=s["pgd_steps"], restarts=s["restarts"]),
            batch_size=500,
            progress=progress,
        )
        t2 = time.perf_counter()
        batch = 50 if arch == "wk-conv" else 200
        cert = certified_accuracy(model, Xt, yt, s["eps"], "dual", batch_size=batch, progress=progress)
        t3 = time.perf_counter()
        row.update(
            test_error=100 * (1 - clean),
            fgsm_error=100 * (1 - fgsm),
            pgd_error=100 * (1 - pgd),
            robust_error_bound=100 * (1 - cert),
        )
        seconds = {"attacks": round(t2 - t1, 1), "certify": round(t3 - t2, 1)}
        if robust != "none":
            for key, (method, box) in EXTRA_BOUNDS.items():
                t = time.perf_counter()
                acc = certified_accuracy(
                    model, Xt, yt, s["eps"], method, batch_size=batch, progress=progress, input_bounds=box
                )
                row[key] = 100 * (1 - acc)
                seconds[f"certify_{method}_box"] = round(time.perf_counter() - t, 1)
        row["seconds"] = seconds
        rows[name] = row
        print(
            f"{name} ({row['epochs']}/{row['epochs_planned']} epochs): "
            + ", ".join(f"{k} {row[k]:.2f}%" for k in COLUMNS),
            file=sys.stderr,
        )
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
    variants = {
        "no defense": {},
        f"DCT front end (K={s['front_k']})": {"front_end": "dct", "front_k": s["front_k"]},
        f"l1 weights (gamma={s['l1_gamma']:g})": {"l1_gamma": s["l1_gamma"]},
    }
    curves = {}
    for i, (label, extra) in enumerate(variants.items()):
        hparams = {
            "input_shape": list(X.shape[1:]),
            "num_classes": 2,
            "arch": "mlp",
            "hidden": "100",
            "robust": "none",
            **extra,
        }
        model, _ = _train(hparams, X, y, s, out / f"figure6-{i}", device, progress, s["fig6_epochs"], 50)
        acc, cert = {}, {}
        for eps in FIG6_RADII:
            seed_everything(s["seed"])
            acc[str(eps)] = (
                clean_accuracy(model, Xt, yt)
                if eps == 0
                else adversarial_accuracy(
                    model, Xt, yt, PGD(model, eps=eps, steps=s["fig6_steps"], restarts=1), batch_size=500
                )
            )
            if "l1_gamma" in extra:
                cert[str(eps)] = certified_accuracy(model, Xt, yt, eps, "theorem2", batch_size=500)
        curves[label] = {"pgd_accuracy": acc, **({"theorem2_certified": cert} if cert else {})}
        print(f"figure 6, {label}: " + ", ".join(f"{k}: {v:.3f}" for k, v in acc.items()), file=sys.stderr)
    return {
        "task": f"{s['dataset']} {a} vs {b}",
        "n_train": len(X),
        "n_eval": len(Xt),
        "pgd_steps": s["fig6_steps"],
        "curves": curves,
    }


def _paper_row(name: str) -> dict:
    return SEED_TABLE["normal" if name == "normal" else "robust"]


def _trained(results: dict) -> dict:
    return {k: v for k, v in results["table1"]["models"].items() if "test_error" in v}


def _plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = _trained(results)
    if trained:
        fig, axes = plt.subplots(1, len(trained), figsize=(5 * len(trained), 3.6), squeeze=False)
        for ax, (name, row) in zip(axes[0], trained.items()):
            pos = range(len(COLUMNS))
            ax.bar(
                [p - 0.2 for p in pos],
                [_paper_row(name)[c] for c in COLUMNS],
                0.4,
                label="Wong & Kolter (seed Table 1, conv, 20 epochs)",
            )
            ax.bar(
                [p + 0.2 for p in pos],
                [row[c] for c in COLUMNS],
                0.4,
                label=f"ours ({row['arch']}, {row['epochs']}/{row['epochs_planned']} epochs)",
            )
            ax.set_xticks(list(pos), ["test", "FGSM", "PGD", "robust bound"])
            ax.set_ylabel("error (%)")
            ax.set_title(f"{name}, {results['settings']['dataset']}, eps {results['settings']['eps']}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        plots.save_figure(fig, out / "table1.png", dpi=120)
    if "figure6" in results:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for label, curve in results["figure6"]["curves"].items():
            ax.plot([float(e) for e in curve["pgd_accuracy"]], list(curve["pgd_accuracy"].values()), "o-", label=label)
            if "theorem2_certified" in curve:
                ax.plot(
                    [float(e) for e in curve["theorem2_certified"]],
                    list(curve["theorem2_certified"].values()),
                    "k:",
                    label="l1 weights: Theorem-2 certified",
                )
        ax.set_xlabel("eps (l_inf)")
        ax.set_ylabel("accuracy under PGD")
        ax.set_title(f"Figure 6 style: {results['figure6']['task']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots.save_figure(fig, out / "figure6.png", dpi=120)


def table_rows(results: dict) -> tuple[list[str], list[list]]:
    """The Table 1 rows (ours and the paper's) as strings, for the terminal and the HTML report."""
    header = [
        "model",
        "source",
        "epochs",
        "test err %",
        "FGSM err %",
        "PGD err %",
        "robust bound %",
        "bound, box %",
        "CROWN, box %",
    ]
    rows = []
    for name, row in results["table1"]["models"].items():
        paper = _paper_row(name)
        rows.append([name, "paper (conv)", "20", *(f"{paper[c]:.2f}" for c in COLUMNS), "", ""])
        who = f"ours ({row['arch']}" + (f", k={row['projections']}" if row.get("projections") else "") + ")"
        epochs = f"{row['epochs']}/{row['epochs_planned']}"
        if "test_error" not in row:
            rows.append([name, who, epochs, "not trained", "", "", "", "", ""])
            continue
        extra = [f"{row[k]:.2f}" if k in row else "" for k in EXTRA_BOUNDS]
        rows.append([name, who, epochs, *(f"{row[c]:.2f}" for c in COLUMNS), *extra])
    return header, rows


def format_table(results: dict) -> str:
    s = results["settings"]
    header, rows = table_rows(results)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"{s['dataset']}, eps {s['eps']}: ours ({s['budget']}, {results['table1']['n_train']} train, "
        f"{results['table1']['n_eval']} test) vs seed Table 1",
        "  ".join(h.rjust(w) for h, w in zip(header, widths)),
    ]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    for name, row in results["table1"]["models"].items():
        if "stopped" in row:
            lines.append(f"{name}: stopped after {row['epochs']} of {row['epochs_planned']} epochs: {row['stopped']}")
    if "figure6" in results:
        lines.append(
            f"Figure 6 ({results['figure6']['task']}): PGD accuracy at eps "
            + ", ".join(k for k in next(iter(results["figure6"]["curves"].values()))["pgd_accuracy"])
        )
        for label, curve in results["figure6"]["curves"].items():
            lines.append(f"  {label:<28} " + " ".join(f"{v:.3f}" for v in curve["pgd_accuracy"].values()))
            if "theorem2_certified" in curve:
                lines.append(
                    f"  {'  Theorem-2 certified':<28} "
                    + " ".join(f"{v:.3f}" for v in curve["theorem2_certified"].values())
                )
    lines.append(f"total {results['seconds']:.0f} s")
    return "\n".join(lines)


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    deadline = time.time() + 60 * s["max_minutes"] if s.get("max_minutes") else None
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "settings.json"
    fixed = {k: v for k, v in s.items() if k not in RUN_CONTROL}
    if saved.exists() and {k: v for k, v in json.loads(saved.read_text()).items() if k not in RUN_CONTROL} != fixed:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete it")
    atomic_write(saved, lambda f: f.write(json.dumps(s, indent=2).encode()))
    results = {"settings": s, "seed_table1": SEED_TABLE, "table1": table1(s, out, device, progress, deadline)}
    results["complete"] = all(r["epochs"] == r["epochs_planned"] for r in results["table1"]["models"].values())
    if not s["skip_figure6"]:
        results["figure6"] = figure6(s, out, device, progress)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["provenance"] = report.provenance()
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _plot(results, out)
    header, rows = table_rows(results)
    report.write_html(
        out / "report.html",
        "Wong & Kolter 2018, Table 1 (MNIST) and Figure 6",
        f"Error rates in percent at eps {s['eps']} ({s['budget']} budget"
        + ("" if results["complete"] else "; training not complete, see the epochs column")
        + ").",
        header,
        rows,
        [out / "table1.png", out / "figure6.png"],
        s,
    )
    print(format_table(results))
    return results
