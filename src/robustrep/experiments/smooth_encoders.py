"""Reproduce Cemgil et al. 2020, Figure 5 (and Figure 4 with --dataset color-mnist): train a VAE and
a smooth encoder with the same architecture, seed and budget; fit a linear probe on each frozen
encoder mean; attack both composed classifiers end to end with l_inf PGD (100 steps, 10 restarts)
at radii 0.01, 0.1, 0.2, 0.3. Writes results.json, robustness.png (Figure 5) and examples.png
(Figure 1: x, g(f(x)), x + d, g(f(x + d))) and report.html with all of it. Killed runs continue where
they stopped when run again with the same --out.

--attack pgd,ensemble adds AutoAttack's APGD-CE, APGD-T and Square on the points PGD left (each attack's
accuracy in models.NAME.by_attack); --certify-radii adds certified accuracy of probe(mu(x)) by the dual
and interval bounds (results.json "certified").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .. import data, models, plots, report, validate
from ..attacks import PGD, Ensemble, predict
from ..errors import UserError
from ..evaluation import clean_accuracy
from ..evaluation.pointwise import certified_points, survivors
from ..evaluation.probe import ProbedEncoder, certifiable_network, load_probe, save_probe, train_probe
from ..options import parse_radii
from ..runs import read_yaml
from ..training import fit_or_reuse
from ..utils import atomic_write, is_main_process, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "smooth-encoders"
HELP = "VAE vs smooth encoder: adversarial accuracy of a linear probe (Cemgil et al. 2020, Fig. 5)"

# --quick: MNIST in about 10 minutes on 2 CPU cores. Full: the paper's settings as far as a CPU allows.
BUDGETS = {
    "quick": dict(
        epochs=10,
        subset=0,
        latent_dim=32,
        obs_var=0.01,
        gamma=300.0,
        select_eps=0.2,
        select_steps=10,
        n_eval=1000,
        attack_steps=100,
        restarts=10,
        ensemble_queries=5000,
    ),
    "full": dict(
        epochs=20,
        subset=0,
        latent_dim=32,
        obs_var=0.01,
        gamma=300.0,
        select_eps=0.2,
        select_steps=20,
        n_eval=10000,
        attack_steps=100,
        restarts=10,
        ensemble_queries=5000,
    ),
}
RADII = (0.01, 0.1, 0.2, 0.3)
# The conv smooth encoder's own calibration (issue 11): with the MLP's gamma 300 it collapses to a constant
# encoder on Color-MNIST. Measured by `robustrep sweep configs/conv-calibration.yaml` (docs/results.md,
# "Color-MNIST, conv"); a conv SE (here with --arch conv, and in the figure commands) takes these unless
# its flags say otherwise.
CONV_SE = dict(gamma=30.0)


def conv_defaults(s: dict, args) -> dict:
    """s with CONV_SE's values for every setting that no flag gave (args.KEY is None when not given)."""
    return dict(s, **{k: v for k, v in CONV_SE.items() if getattr(args, k, None) is None})


# The probe is fitted on mu(x) + N(0, S^2 I) with S = 0.15 latent units (4 noisy copies of each code;
# Bishop 1995: training with input noise is Tikhonov regularisation). The paper's plain probe
# (--probe-noise 0), fitted to convergence by L-BFGS, puts 80-96% of its squared weight on the
# coordinates the encoder leaves near the prior, which any input change moves (docs/results.md,
# "Issue 11 levers"). S was chosen from the full-budget encoders' diagnostics over S in {0.1, 0.15,
# 0.2, 0.3}: the middle of the range, costing 3 points of the SE's nominal accuracy and 2 of the VAE's.
PROBE_NOISE = 0.15
# issue 11's levers: a gamma warm-up (epochs, off by default) and the linear probe's regularisation
LEVERS = {
    "gamma_warmup": lambda v, flag: validate.nonnegative(v, flag, integer=True, high=10**6),
    "probe_l2": lambda v, flag: validate.nonnegative(v, flag, high=1e6),
    "probe_noise": lambda v, flag: validate.nonnegative(v, flag, high=1e6),
    "probe_posterior_noise": lambda v, flag: validate.nonnegative(v, flag, high=1e6),
}
PROBE_LEVERS = ("probe_l2", "probe_noise", "probe_posterior_noise")
ATTACKS = ("pgd", "ensemble")  # --attack: the paper's PGD; AutoAttack's APGD-CE, APGD-T, Square
CERTIFY_METHODS = ("dual", "ibp")


def add_arguments(p) -> None:
    p.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "color-mnist", "digits"),
        help="mnist (default), color-mnist (Figure 4) or digits (a tiny smoke test)",
    )
    p.add_argument("--task", default=None, help="probe task: digit (default) or color for color-mnist")
    p.add_argument("--arch", default="mlp", choices=("mlp", "conv"), help="encoder/decoder architecture")
    add_budget_arguments(p, BUDGETS)
    p.add_argument("--radii", default=",".join(map(str, RADII)), help="attack radii (default 0.01,0.1,0.2,0.3)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument(
        "--attack",
        default="pgd",
        help="pgd (default), ensemble (APGD-CE, APGD-T, Square), or both as "
        "pgd,ensemble: each is reported; the ensemble then attacks the points PGD left",
    )
    p.add_argument(
        "--gamma-warmup",
        type=int,
        default=0,
        help="epochs over which the SE's gamma rises linearly to its value (default 0: none)",
    )
    p.add_argument(
        "--probe-l2",
        type=float,
        default=0.0,
        help="l2 penalty on the linear probe's weights (default 0: the paper's plain probe)",
    )
    p.add_argument(
        "--probe-noise",
        type=float,
        default=None,
        help=f"std of Gaussian noise on the codes the linear probe is fitted on, latent units (default "
        f"{PROBE_NOISE}, or 0 with --probe-posterior-noise; 0: the paper's plain probe)",
    )
    p.add_argument(
        "--probe-posterior-noise",
        type=float,
        default=0.0,
        help="fit the linear probe on mu(x) + S sqrt(var(x)) u, u ~ N(0, I): noise S times the encoder's own "
        "posterior std (1: draws of q(z|x); default 0: none)",
    )
    p.add_argument(
        "--certify-radii",
        default="",
        help="also certify probe(mu(x)) at these l_inf radii with the dual "
        "and interval bounds, e.g. 0.005,0.01,0.02,0.05 (default: no certification)",
    )


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    if args.arch == "conv":
        s = conv_defaults(s, args)
    s.update(
        dataset=args.dataset,
        task=args.task or "digit",
        arch=args.arch,
        batch_size=args.batch_size,
        seed=args.seed,
        radii=parse_radii(args.radii, "--radii"),
        attacks=_parse_attacks(args.attack),
        certify_radii=parse_radii(args.certify_radii, "--certify-radii") if args.certify_radii.strip() else [],
    )
    validate.nonnegative(s["ensemble_queries"], "--ensemble-queries", integer=True)
    # a lever enters the settings only when it is non-zero (the probe noise by default), so the encoders of
    # run folders made before the levers existed are still reused; their probes are refitted in a new --out
    given = {key: getattr(args, key, None) for key in LEVERS}
    if given["probe_noise"] is None:  # the default probe noise gives way to an explicit posterior noise
        given["probe_noise"] = 0.0 if given["probe_posterior_noise"] else PROBE_NOISE
    for key, value in LEVERS.items():
        checked = value(given[key] or 0, f"--{key.replace('_', '-')}")
        if checked:
            s[key] = checked
    if s.get("probe_noise") and s.get("probe_posterior_noise"):
        raise UserError("--probe-noise and --probe-posterior-noise exclude each other: give one of them")
    for key in ("epochs", "restarts", "batch_size"):
        validate.positive(s[key], f"--{key.replace('_', '-')}", integer=True)
    # the two models are built once here (milliseconds), so that every hyper-parameter (--gamma nan,
    # --select-steps -1, ...) is refused before any training instead of after the VAE has been trained
    for name, hparams in _model_hparams(s, (1, 28, 28)).items():
        models.build(name, **hparams)
    if s["dataset"] != "color-mnist" and s["task"] != "digit":
        raise UserError(f"--task {s['task']} needs --dataset color-mnist")
    return s


def _parse_attacks(text: str) -> list[str]:
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    if not names or len(set(names)) != len(names) or not set(names) <= set(ATTACKS):
        raise UserError(f"--attack takes pgd, ensemble or pgd,ensemble, got {text!r}")
    return [a for a in ATTACKS if a in names]  # PGD first: the ensemble then takes the points it left


def _model_hparams(s: dict, input_shape) -> dict[str, dict]:
    common = dict(input_shape=list(input_shape), latent_dim=s["latent_dim"], arch=s["arch"], obs_var=s["obs_var"])
    return {
        "vae": dict(common),
        "se": dict(common, gamma=s["gamma"], select="pgd", select_eps=s["select_eps"], select_steps=s["select_steps"])
        | ({"gamma_warmup": s["gamma_warmup"]} if s.get("gamma_warmup") else {}),
    }


def train_or_resume(name, hparams, X, s, run_dir: Path, device, progress) -> tuple[torch.nn.Module, float]:
    """Train (or continue, or reuse) one model in `run_dir` with the shared seed and budget; returns it and
    its training wall time, resumed parts included. A model trained with other settings is never reused."""
    seed_everything(s["seed"])
    model = models.build(name, **hparams)
    config = {
        "model": name,
        "hparams": hparams,
        "training": {k: s[k] for k in ("dataset", "epochs", "batch_size", "seed", "subset")}
        | {"lr": 1e-3, "task": s["task"]},
    }
    return fit_or_reuse(
        model,
        X,
        run_dir=run_dir,
        config=config,
        device=device,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=1e-3,
        seed=s["seed"],
        progress=progress,
    )


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "results.partial.json"
    try:
        state = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    except (ValueError, OSError):  # a half-written or damaged file (it is written atomically since)
        raise UserError(f"{partial_path} is damaged: delete it (the trained models in {out} are kept)") from None
    if state.get("settings", s) != s:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete {partial_path}")
    state["settings"] = s
    state.setdefault("models", {})
    state.setdefault("seconds_before", 0.0)

    Xl, yl = data.load(s["dataset"], "train", task=s["task"])  # the probe sees all training labels
    X, _ = data.random_subset(Xl, None, s["subset"], s["seed"])  # a fixed random subset to train on
    Xt, yt = data.load(s["dataset"], "test", task=s["task"])
    Xe, ye = data.random_subset(Xt, yt, s["n_eval"], s["seed"])  # a fixed random test subset
    Xe, ye = Xe[:].to(device), ye.to(device)  # [:] makes real images of a lazy view
    n_eval = len(Xe)
    num_classes = data.num_classes(s["dataset"], s["task"])

    classifiers = {}
    for name, hparams in _model_hparams(s, X.shape[1:]).items():
        run_dir = out / name
        model, r_train_seconds = train_or_resume(name, hparams, X, s, run_dir, device, progress)
        if not is_main_process():
            continue  # under torchrun every rank trains (DDP); rank 0 alone probes, attacks and writes
        r = state["models"].setdefault(name, {"adversarial": {}})
        r["train_seconds"] = r_train_seconds
        probe_settings = {k: s[k] for k in PROBE_LEVERS if s.get(k)}
        if (run_dir / "probe.safetensors").exists():
            info = read_yaml(run_dir / "probe.yaml")
            if {k: info[k] for k in PROBE_LEVERS if info.get(k)} != probe_settings:
                raise UserError(f"{run_dir} holds a probe fitted with other settings: choose a new --out or delete it")
            probe = load_probe(run_dir, device)
        else:
            probe = train_probe(
                model,
                Xl,
                yl,
                num_classes,
                l2=s.get("probe_l2", 0.0),
                noise=s.get("probe_noise", 0.0),
                posterior_noise=s.get("probe_posterior_noise", 0.0),
            )
            save_probe(run_dir, probe, {"dataset": s["dataset"], "task": s["task"], **probe_settings})
        classifier = ProbedEncoder(model, probe).to(device).eval()
        classifiers[name] = classifier
        r["nominal"] = clean_accuracy(classifier, Xe, ye)
        if r["nominal"] < 1.5 / num_classes:
            # a collapsed encoder (mu constant in x) is trivially "robust": say so instead of reporting it quietly
            r["warning"] = (
                f"nominal accuracy {r['nominal']:.3f} is at chance: the {name} encoder collapsed, so its "
                "adversarial accuracies say nothing about robustness (lower gamma or the learning rate)"
            )
            print(f"warning: {r['warning']}", file=sys.stderr)
        for eps in s["radii"]:
            if str(eps) in r["adversarial"]:
                continue
            t0 = time.perf_counter()
            seed_everything(s["seed"])
            left = None  # each attack works on the points the earlier ones left
            for attack in s.get("attacks", ["pgd"]):
                atk = (
                    PGD(classifier, eps=eps, steps=s["attack_steps"], restarts=s["restarts"])
                    if attack == "pgd"
                    else Ensemble(classifier, eps=eps, steps=s["attack_steps"], queries=s["ensemble_queries"])
                )
                left = survivors(classifier, Xe, ye, atk, among=left, batch_size=500, progress=progress)
                r.setdefault("by_attack", {}).setdefault(attack, {})[str(eps)] = int(left.sum()) / n_eval
            r["adversarial"][str(eps)] = r["by_attack"][s.get("attacks", ["pgd"])[0]][str(eps)]
            r.setdefault("attack_seconds", {})[str(eps)] = round(time.perf_counter() - t0, 1)
            print(
                f"{name}: eps {eps}: adversarial accuracy {r['adversarial'][str(eps)]:.4f} "
                f"(nominal {r['nominal']:.4f}, {r['attack_seconds'][str(eps)]:.0f} s)",
                file=sys.stderr,
            )
            _save_state(partial_path, state, t_start)
        if s.get("certify_radii") and "certified" not in r:
            t0 = time.perf_counter()
            net = certifiable_network(model, probe)
            r["certified"] = {
                m: {str(e): int(certified_points(net, Xe, ye, e, m).sum()) / n_eval for e in s["certify_radii"]}
                for m in CERTIFY_METHODS
            }
            r["certified"]["seconds"] = round(time.perf_counter() - t0, 1)
            _save_state(partial_path, state, t_start)

    if not is_main_process():
        return {}
    seconds = state["seconds_before"] + time.perf_counter() - t_start
    results = {
        "dataset": s["dataset"],
        "task": s["task"],
        "arch": s["arch"],
        "attack": _describe(s.get("attacks", ["pgd"])[0], s),
        "attacks": {a: _describe(a, s) for a in s.get("attacks", ["pgd"])},
        "n_eval": n_eval,
        "settings": s,
        "models": {
            k: {
                "nominal": v["nominal"],
                "adversarial": v["adversarial"],
                "train_seconds": v.get("train_seconds"),
                "attack_seconds": v.get("attack_seconds", {}),
                "by_attack": v.get("by_attack", {}),
                **({"warning": v["warning"]} if "warning" in v else {}),
            }
            for k, v in state["models"].items()
        },
        "seconds": round(seconds, 1),
    }
    if s.get("certify_radii"):
        # l_inf balls intersected with [0, 1] (the set every attack searches), bounds of rr.certify.margin_bounds
        results["certified"] = {
            "methods": list(CERTIFY_METHODS),
            "input_bounds": [0.0, 1.0],
            **{k: v["certified"] for k, v in state["models"].items()},
        }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    title = f"{s['dataset']} ({s['arch']}, task {s['task']}, L={s['select_steps']}, sel. eps {s['select_eps']})"
    plots.robustness_curve(results, out / "robustness.png", title)
    _examples_figure(
        classifiers,
        Xe,
        ye,
        out / "examples.png",
        eps=0.1 if 0.1 in s["radii"] else s["radii"][0],
        steps=s["attack_steps"],
        seed=s["seed"],
    )
    radii = [str(r) for r in s["radii"]]
    rows = [
        [name.upper(), f"{100 * r['nominal']:.1f}%"] + [f"{100 * r['adversarial'][e]:.1f}%" for e in radii]
        for name, r in results["models"].items()
    ]
    rows += [
        [f"{name.upper()} ({attack})", ""] + [f"{100 * acc[e]:.1f}%" for e in radii]
        for name, r in results["models"].items()
        for attack, acc in list(r["by_attack"].items())[1:]
    ]
    report.write_html(
        out / "report.html",
        f"Smooth encoders vs VAE: {title}",
        f"Linear probe on the frozen encoder mean, attacked end to end with l_inf PGD "
        f"({s['attack_steps']} steps, {s['restarts']} restarts) on {n_eval} test points; "
        f"wall time {results['seconds']:.0f} s.",
        ["model", "nominal"] + [f"eps {e}" for e in radii],
        rows,
        [out / "robustness.png", out / "examples.png"],
        s,
    )
    _print_table(results)
    return results


def _describe(attack: str, s: dict) -> dict:
    if attack == "pgd":
        return {"name": "pgd", "norm": "linf", "steps": s["attack_steps"], "restarts": s["restarts"]}
    return {
        "name": "ensemble",
        "norm": "linf",
        "stages": ["apgd-ce", "apgd-t", "square"],
        "steps": s["attack_steps"],
        "restarts": 1,
        "targets": 9,
        "queries": s["ensemble_queries"],
        "after_pgd": "pgd" in s.get("attacks", []),
    }


def _save_state(path: Path, state: dict, t_start: float) -> None:
    snapshot = dict(state, seconds_before=state["seconds_before"] + time.perf_counter() - t_start)
    atomic_write(path, lambda f: f.write(json.dumps(snapshot, indent=2).encode()))


def _examples_figure(classifiers: dict, X, y, path: Path, eps: float, steps: int, seed: int, k: int = 8) -> None:
    rows = {}
    for name, clf in classifiers.items():
        seed_everything(seed)
        x = X[:k]
        x_adv = PGD(clf, eps=eps, steps=steps, restarts=1)(x, y[:k])
        with torch.inference_mode():
            enc = clf.encoder
            rows[name] = {
                "x": x,
                "recon": enc.reconstruct(x),
                "x_adv": x_adv,
                "recon_adv": enc.reconstruct(x_adv),
                "pred": predict(clf, x),
                "pred_adv": predict(clf, x_adv),
            }
    plots.attacked_examples(rows, path, title=f"PGD on probe(mu(x)), l_inf eps {eps}: x, g(f(x)), x + d, g(f(x + d))")


def _print_table(results: dict) -> None:
    radii = sorted(next(iter(results["models"].values()))["adversarial"], key=float)
    print(f"{'model':<6} {'nominal':>8} " + " ".join(f"{'eps ' + r:>9}" for r in radii))
    for name, r in results["models"].items():
        print(f"{name:<6} {100 * r['nominal']:7.1f}% " + " ".join(f"{100 * r['adversarial'][e]:8.1f}%" for e in radii))
        for attack, acc in list(r.get("by_attack", {}).items())[1:]:
            print(f"  {attack:<13}  " + " ".join(f"{100 * acc[e]:8.1f}%" for e in radii))
    for name in results["models"]:
        for method, acc in results.get("certified", {}).get(name, {}).items():
            if method in CERTIFY_METHODS:
                print(f"{name} certified ({method}): " + ", ".join(f"eps {e}: {100 * a:.1f}%" for e, a in acc.items()))
    print(f"wall time {results['seconds']:.0f} s")
