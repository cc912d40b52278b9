"""What the smooth-encoder figures (Cemgil et al. 2020, Figures 4, 5, 7a, 7b) share, built on
experiments/smooth_encoders.py: its budgets, its `train_or_resume` (one seed and budget for every model)
and its `_model_hparams` (the VAE and the SE with the same architecture). A figure names its encoder
variants (a label, a model, settings that differ) and its probe tasks; `run_variants` trains each
variant in out/LABEL, fits a linear probe per task on the frozen mean, and attacks probe(mu(x)) with the
paper's PGD at every radius. Killed runs continue: models and probes are reused, and attacked radii are
kept in results.partial.json.

Not an experiment itself (no NAME): the figures are se_fig4.py, se_fig5.py, se_fig7a.py, se_fig7b.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .. import data, report, validate  # noqa: E402
from ..attacks import PGD, Ensemble  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..evaluation import clean_accuracy  # noqa: E402
from ..evaluation.pointwise import survivors  # noqa: E402
from ..evaluation.probe import ProbedEncoder, encode_means, load_probe, save_probe, train_probe  # noqa: E402
from ..options import parse_radii  # noqa: E402
from ..plots import save_figure  # noqa: E402
from ..runs import read_metrics  # noqa: E402
from ..utils import atomic_write, is_main_process, resolve_device, seed_everything  # noqa: E402
from . import smooth_encoders  # noqa: E402
from .budgets import add_budget_arguments, budget_settings  # noqa: E402

# The conv smooth encoder's own calibration, shared with `reproduce smooth-encoders --arch conv`
CONV_SE = smooth_encoders.CONV_SE


def budgets(**over) -> dict[str, dict]:
    """smooth_encoders' quick and full budgets with some settings changed for a figure."""
    return {k: dict(v, **over.get(k, {})) for k, v in smooth_encoders.BUDGETS.items()}


def add_arguments(
    p, figure_budgets: dict, datasets=("mnist", "digits"), arch: bool = True, radii=smooth_encoders.RADII
) -> None:
    p.add_argument(
        "--dataset",
        default=datasets[0],
        choices=datasets,
        help=f"{datasets[0]} (default; the paper's) or {', '.join(datasets[1:])} (a tiny smoke test)",
    )
    if arch:
        p.add_argument("--arch", default="mlp", choices=("mlp", "conv"), help="encoder/decoder architecture")
    add_budget_arguments(p, figure_budgets)
    p.add_argument(
        "--radii", default=",".join(map(str, radii)), help=f"attack radii (default {','.join(map(str, radii))})"
    )
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument(
        "--probe-subset",
        type=int,
        default=0,
        help="fit the linear probes on a fixed random subset of this many labelled training images "
        "(default 0: all of them, the paper's; a smaller one makes a calibration run cheap)",
    )
    p.add_argument(
        "--attack",
        default="pgd",
        help="pgd (default, the paper's), ensemble (APGD-CE, APGD-T, Square), or pgd,ensemble: each is reported; "
        "the ensemble then attacks the points PGD left",
    )


def settings_from(args, figure_budgets: dict, tasks: tuple[str, ...] = ("digit",), arch: str | None = None) -> dict:
    """The budget, dataset, radii and seed, every value checked before any work. `arch` (else --arch, else
    mlp): a conv encoder takes CONV_SE's calibration where no flag overrides it."""
    s = budget_settings(args, figure_budgets)
    arch = arch or getattr(args, "arch", "mlp")
    if arch == "conv":
        s = smooth_encoders.conv_defaults(s, args)
    s.update(
        dataset=args.dataset,
        tasks=list(tasks),
        task=tasks[0],
        arch=arch,
        batch_size=args.batch_size,
        seed=validate.seed(args.seed),
        radii=parse_radii(args.radii, "--radii"),
        attacks=smooth_encoders._parse_attacks(args.attack),
    )
    # only when given, so results.partial.json files written before the flag existed still resume
    if validate.count(getattr(args, "probe_subset", 0), "--probe-subset"):
        s["probe_subset"] = args.probe_subset
    for task in tasks:
        data.num_classes(s["dataset"], task)  # a UserError when the data set lacks the task
    check_budget(s)
    return s


def check_budget(s: dict) -> None:
    """Every budget value of smooth_encoders.BUDGETS, checked by the flag that sets it."""
    v = validate
    v.nonnegative(s["epochs"], "--epochs", integer=True, high=10**6)
    v.count(s["subset"], "--subset")
    v.width(s["latent_dim"], "--latent-dim")
    v.positive(s["obs_var"], "--obs-var", high=1e6)
    v.positive(s["gamma"], "--gamma", high=1e12)
    v.number(s["select_eps"], "--select-eps", low=0, high=1)
    v.nonnegative(s["select_steps"], "--select-steps", integer=True, high=10**4)
    v.count(s["n_eval"], "--n-eval")
    v.positive(s["attack_steps"], "--attack-steps", integer=True, high=10**6)
    v.positive(s["restarts"], "--restarts", integer=True, high=10**4)
    v.positive(s["batch_size"], "--batch-size", integer=True, high=10**6)
    v.nonnegative(s["ensemble_queries"], "--ensemble-queries", integer=True, high=10**9)
    if any(r > 1 for r in s["radii"]):
        raise UserError(f"--radii must be at most 1 (images live in [0, 1]), got {s['radii']}")


def radius_list(text: str, flag: str, high: float = 1.0) -> list[float]:
    values = parse_radii(text, flag)
    if any(v > high for v in values):
        raise UserError(f"{flag} must be at most {high:g}, got {text!r}")
    return values


def int_list(text: str, flag: str, low: int = 0, high: int = 10**4) -> list[int]:
    try:
        values = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values) or len(set(values)) != len(values):
        raise UserError(f"{flag} needs distinct integers in [{low}, {high}], got {text!r}")
    return values


def variant(model: str, s: dict, input_shape, **over) -> dict:
    """One encoder variant: smooth_encoders' hyper-parameters of `model` ("vae" or "se") with `over` applied
    to the settings they come from (arch, select_eps, select_steps, gamma, ...) and to the model itself
    (select, ...)."""
    from_settings = {k: v for k, v in over.items() if k in s}
    hparams = smooth_encoders._model_hparams(dict(s, **from_settings), input_shape)[model]
    hparams.update({k: v for k, v in over.items() if k not in s})
    return {"model": model, "hparams": hparams}


def load_data(s: dict, device):
    """Training images (the encoders' subset and the probes' set: all, or a fixed random `probe_subset`),
    labels per task, and the fixed random test subset with its labels per task (the same points for
    every task and variant)."""
    Xall, labels, test = None, {}, {}
    for task in s["tasks"]:
        Xall, y = data.load(s["dataset"], "train", task=task, root=s.get("root"))
        # the same seed and size draw the same images for every task
        Xl, labels[task] = data.random_subset(Xall, y, s.get("probe_subset", 0), s["seed"])
        Xt, yt = data.load(s["dataset"], "test", task=task, root=s.get("root"))
        Xe, test[task] = data.random_subset(Xt, yt, s["n_eval"], s["seed"])
    X, _ = data.random_subset(Xall, None, s["subset"], s["seed"])
    return X, Xl, labels, Xe[:].to(device), {t: y.to(device) for t, y in test.items()}


def run_variants(s: dict, variants: dict[str, dict], out: Path, device="auto", progress: bool = True) -> dict | None:
    """Train, probe and attack every variant (label -> {"model", "hparams"}); returns the results dict
    (without figures): models[label] = its model, hparams and training time; tasks[task][label] = nominal
    and adversarial accuracies. Under torchrun every rank trains (DDP) and rank 0 alone probes, attacks
    and gets the results; the other ranks get None (and write nothing)."""
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "results.partial.json"
    state = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    if state.get("settings", s) != s or state.get("variants", variants) != variants:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete {partial_path}")
    state.update(settings=s, variants=variants)
    state.setdefault("tasks", {t: {} for t in s["tasks"]})
    state.setdefault("models", {})
    state.setdefault("seconds_before", 0.0)
    X, Xl, labels, Xe, ye = load_data(s, device)
    classifiers = {}
    for label, v in variants.items():
        run_dir = out / label
        model, seconds = smooth_encoders.train_or_resume(v["model"], v["hparams"], X, s, run_dir, device, progress)
        if not is_main_process():
            continue
        last = (read_metrics(run_dir) or [{}])[-1]
        # code_nats: what the SE's mean carried in its last epoch (its collapse watch; near 0 = a constant encoder)
        state["models"][label] = {
            **v,
            "train_seconds": seconds,
            **({"code_nats": last["code_nats"]} if "code_nats" in last else {}),
        }
        codes = {}  # mu(x) of the probes' images, encoded once for all tasks (Color-MNIST: 420000 images)
        for task in s["tasks"]:
            classifier = _probed(model, run_dir, task, s, Xl, labels[task], device, codes)
            classifiers[(label, task)] = classifier
            r = state["tasks"][task].setdefault(label, {"adversarial": {}, "attack_seconds": {}})
            r["nominal"] = clean_accuracy(classifier, Xe, ye[task])
            chance = 1.0 / data.num_classes(s["dataset"], task)
            if r["nominal"] < 1.5 * chance:
                r["warning"] = (
                    f"nominal accuracy {r['nominal']:.3f} is at chance: the {label} encoder collapsed, "
                    "so its adversarial accuracies say nothing about robustness"
                )
                print(f"warning: {task}: {r['warning']}", file=sys.stderr)
            for eps in s["radii"]:
                if str(eps) in r["adversarial"]:
                    continue
                t0 = time.perf_counter()
                r["adversarial"][str(eps)] = attack_chain(classifier, Xe, ye[task], eps, s, r, progress)
                r["attack_seconds"][str(eps)] = round(time.perf_counter() - t0, 1)
                print(
                    f"{label} ({task}): eps {eps}: adversarial accuracy {r['adversarial'][str(eps)]:.4f} "
                    f"(nominal {r['nominal']:.4f})",
                    file=sys.stderr,
                )
                smooth_encoders._save_state(partial_path, state, t_start)
    if not is_main_process():
        return None
    seconds = state["seconds_before"] + time.perf_counter() - t_start
    return {
        "dataset": s["dataset"],
        "tasks": state["tasks"],
        "models": state["models"],
        "attack": smooth_encoders._describe(s["attacks"][0], s),
        "attacks": {a: smooth_encoders._describe(a, s) for a in s["attacks"]},
        "n_eval": len(Xe),
        "settings": s,
        "seconds": round(seconds, 1),
    }


def attack_chain(classifier, Xe, ye, eps: float, s: dict, r: dict, progress: bool) -> float:
    """The accuracy under the first of s["attacks"] at `eps`; with pgd,ensemble the ensemble then attacks
    the points PGD left (smooth_encoders' protocol). Each attack's accuracy goes to r["by_attack"]."""
    seed_everything(s["seed"])
    left = None
    for name in s["attacks"]:
        if name == "pgd":
            attack = PGD(classifier, eps=eps, steps=s["attack_steps"], restarts=s["restarts"])
        else:
            attack = Ensemble(classifier, eps=eps, steps=s["attack_steps"], queries=s["ensemble_queries"])
        left = survivors(classifier, Xe, ye, attack, among=left, batch_size=500, progress=progress)
        r.setdefault("by_attack", {}).setdefault(name, {})[str(eps)] = int(left.sum()) / len(Xe)
    return r["by_attack"][s["attacks"][0]][str(eps)]


def _probed(model, run_dir: Path, task: str, s: dict, Xl, yl, device, codes: dict | None = None) -> ProbedEncoder:
    """probe(mu(x)) for `task`: the first task's probe in the run folder (so `robustrep evaluate RUN` finds
    it), the others' in RUN/probe-TASK; trained once and reused. `codes` caches mu(Xl) across tasks."""
    probe_dir = run_dir if task == s["tasks"][0] else run_dir / f"probe-{task}"
    if (probe_dir / "probe.safetensors").exists():
        probe = load_probe(probe_dir, device)
    else:
        codes = {} if codes is None else codes
        if "mu" not in codes:
            codes["mu"] = encode_means(model, Xl)
        probe = train_probe(model, Xl, yl, data.num_classes(s["dataset"], task), means=codes["mu"])  # the paper's
        probe_dir.mkdir(parents=True, exist_ok=True)
        save_probe(probe_dir, probe, {"dataset": s["dataset"], "task": task})
    return ProbedEncoder(model, probe).to(device).eval()


def write_results(out: Path, results: dict) -> None:
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))


def table_rows(results: dict) -> tuple[list[str], list[list]]:
    """One row per (task, variant): nominal and adversarial accuracy at each radius."""
    radii = [str(r) for r in results["settings"]["radii"]]
    rows = [
        [task, label, f"{100 * r['nominal']:.1f}%"] + [f"{100 * r['adversarial'][e]:.1f}%" for e in radii]
        for task, by_label in results["tasks"].items()
        for label, r in by_label.items()
    ]
    rows += [  # the later attacks of a chain (pgd,ensemble), each on the points the earlier ones left
        [task, f"{label} (ens.)", ""] + [f"{100 * acc[e]:.1f}%" for e in radii]
        for task, by_label in results["tasks"].items()
        for label, r in by_label.items()
        for acc in list(r.get("by_attack", {}).values())[1:]
    ]
    return ["task", "encoder", "nominal"] + [f"eps {e}" for e in radii], rows


def write_report(out: Path, title: str, summary: str, results: dict, figures: list[Path]) -> None:
    header, rows = table_rows(results)
    s = results["settings"]
    summary += (
        " Linear probe on the frozen encoder mean, attacked end to end with "
        + (
            f"l_inf PGD ({s['attack_steps']} steps, {s['restarts']} restarts)"
            if s["attacks"][0] == "pgd"
            else f"the ensemble (APGD-CE, APGD-T: {s['attack_steps']} steps; Square: {s['ensemble_queries']} queries)"
        )
        + (", then the ensemble on the points PGD left (rows 'ens.')" if len(s["attacks"]) > 1 else "")
        + f" on {results['n_eval']} test points; wall time {results['seconds']:.0f} s."
    )
    report.write_html(out / "report.html", title, summary, header, rows, figures, s)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
    print(f"wall time {results['seconds']:.0f} s")


def curves(panels: dict[str, dict[str, dict]], path: Path, title: str = "") -> Path:
    """Adversarial accuracy against attack radius, one panel per entry (title -> label -> task results),
    one line per variant, its nominal accuracy as the point at radius 0."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (panel, by_label) in zip(axes[0], panels.items()):
        for i, (label, r) in enumerate(by_label.items()):
            radii = sorted(r["adversarial"], key=float)
            xs = [0.0] + [float(e) for e in radii]
            ys = [100 * r["nominal"]] + [100 * r["adversarial"][e] for e in radii]
            ax.plot(xs, ys, "o-" if label.startswith("se") else "s--", color=f"C{i}", label=label)
        ax.set(xlabel="attack radius (l_inf)", ylabel="adversarial accuracy (%)", ylim=(0, 100), title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def against_setting(
    xs: list,
    by_x: dict,
    baseline: dict | None,
    radii: list[str],
    path: Path,
    xlabel: str,
    title: str = "",
    log_x: bool = False,
) -> Path:
    """Adversarial accuracy against a setting of the SE (Figure 7b: the selection budget L), one line per
    attack radius; the VAE's accuracy at each radius as a dotted line of the same colour."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, eps in enumerate(radii):
        ax.plot(xs, [100 * by_x[x]["adversarial"][eps] for x in xs], "o-", color=f"C{i}", label=f"SE, eps {eps}")
        if baseline is not None:
            ax.axhline(100 * baseline["adversarial"][eps], ls=":", color=f"C{i}", label=f"VAE, eps {eps}")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="adversarial accuracy (%)", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def input_shape(s: dict) -> list[int]:
    X, _ = data.load(s["dataset"], "train", task=s["tasks"][0], root=s.get("root"))
    return list(X.shape[1:])
