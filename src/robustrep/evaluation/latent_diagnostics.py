"""Why is a probed encoder robust or not? Three measurements in latent units (issue 11, section 1).

For a classifier probe(mu(x)) with a linear probe z -> W z + b:

- spread: per latent dimension k, the standard deviation of mu_k(x) over the data, set against the
  probe's weight column norm ||W[:, k]||_2. A probe that leans with large weights on a dimension whose
  spread is tiny (an "inactive" unit, Var_x[mu_k] < 0.01, Burda et al. 2016) reads a coordinate that
  carries little signal and that a small input change may move by as much as the signal itself.
- margin: the l2 distance of mu(x) to the probe's decision boundary of the label y,
      m(z, y) = min_{j != y} ((w_y - w_j) . z + b_y - b_j) / ||w_y - w_j||_2,
  exact for a linear probe (the region where y wins is an intersection of half-spaces; from a point
  inside it, the nearest point outside lies on one of their boundaries). Negative when y loses.
  A successful attack must move mu by at least m: ||mu(x_adv) - mu(x)||_2 >= m(mu(x), y).
- movement: how far an attack moves the code, ||mu(x_adv) - mu(x)||_2, for PGD on probe(mu(x)) (the
  attack that is scored) and W2(q(z|x), q(z|x_adv)) for a long latent attack that maximises W2 itself
  (`LatentAttack`, the SE's own selection objective, with many steps).

The ratio movement / margin is free of the latent scale, so it compares a VAE and an SE directly.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .. import validate
from ..attacks import PGD
from ..attacks.latent import LatentAttack
from ..errors import UserError
from .probe import encode_means

ACTIVE_VARIANCE = 0.01  # Burda et al. 2016's threshold on Var_x[mu_k] for an "active unit"


def latent_margin(probe: nn.Linear, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N] signed l2 distance of each code z [N, D] to the boundary of the region where the linear
    probe predicts y (positive inside: the probe is right; negative: the distance it would need)."""
    if not isinstance(probe, nn.Linear):
        raise UserError(f"latent_margin needs an nn.Linear probe, got {type(probe).__name__}")
    if z.dim() != 2 or z.shape[1] != probe.in_features or len(y) != len(z):
        raise UserError(f"latent_margin needs codes [N, {probe.in_features}] and N labels, got {list(z.shape)}")
    W, b = probe.weight.detach(), probe.bias.detach()
    logits = z @ W.T + b  # [N, C]
    gap = logits.gather(1, y[:, None]) - logits  # [N, C]: z_y - z_j
    dist = (W[y][:, None, :] - W[None, :, :]).norm(dim=-1)  # [N, C]: ||w_y - w_j||
    ratio = gap / dist.clamp_min(1e-12)
    ratio[torch.arange(len(z)), y] = float("inf")  # j = y is no boundary
    return ratio.min(1).values


def dimension_spread(model: nn.Module, X) -> dict[str, torch.Tensor]:
    """Per latent dimension over the images X: std of mu_k(x) ("spread") and the root of the mean
    posterior variance E_x[var_k(x)] ("posterior_std")."""
    with torch.inference_mode():
        mus, variances = [], []
        for i in range(0, len(X), 2048):
            mu, var = model.encode(X[i : i + 2048])
            mus.append(mu)
            variances.append(var)
        mu, var = torch.cat(mus), torch.cat(variances)
    return {"spread": mu.std(0), "posterior_std": var.mean(0).sqrt()}


def _quantiles(v: torch.Tensor) -> dict[str, float]:
    v = v.detach().float().cpu()
    if v.numel() == 0:
        return {"n": 0}
    q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9]))
    return {"n": v.numel(), "mean": float(v.mean()), "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2])}


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def probe_diagnostics(model: nn.Module, probe: nn.Linear, X_spread, Xe: torch.Tensor, ye: torch.Tensor) -> dict:
    """The attack-free part: per-dimension spread (over X_spread) against the probe's weights, and the
    margin of the probe at mu(x) for the evaluation points (Xe, ye)."""
    spread = dimension_spread(model, X_spread)
    w = probe.weight.detach().norm(dim=0)  # [D]: ||W[:, k]||
    active = spread["spread"].pow(2) > ACTIVE_VARIANCE
    share = w.pow(2) / w.pow(2).sum().clamp_min(1e-30)
    z = encode_means(model, Xe)
    margin = latent_margin(probe, z, ye)
    return {
        "per_dimension": {
            "spread": spread["spread"].tolist(),
            "posterior_std": spread["posterior_std"].tolist(),
            "weight_norm": w.tolist(),
        },
        "active_dims": int(active.sum()),
        "weight_share_inactive": float(share[~active].sum()),
        "spearman_spread_weight": _spearman(spread["spread"], w),
        "margin": _quantiles(margin[margin > 0]),
        "margin_values": margin.tolist(),
    }


def attack_movement(
    model: nn.Module,
    classifier: nn.Module,
    probe: nn.Linear,
    Xe: torch.Tensor,
    ye: torch.Tensor,
    eps: float,
    pgd_steps: int = 100,
    latent_steps: int = 200,
    batch_size: int = 500,
) -> dict:
    """How far attacks at l_inf radius eps move the code, against the margin, on the points the probe
    gets right: PGD on probe(mu(x)) run to its last step (no early stop, so the push is the attack's
    whole reach), and a long latent attack on W2(q(z|x), q(z|x')) itself."""
    pgd = PGD(classifier, eps=eps, steps=pgd_steps, restarts=1, early_stop=False)
    latent = LatentAttack(model, eps=eps, steps=latent_steps, divergence="w2")
    rows = {"margin": [], "pgd_move": [], "pgd_broken": [], "latent_w2": [], "latent_move": []}
    for i in range(0, len(Xe), batch_size):
        x, y = Xe[i : i + batch_size], ye[i : i + batch_size]
        with torch.no_grad():
            mu, var = model.encode(x)
        m = latent_margin(probe, mu, y)
        ok = m > 0
        if not ok.any():
            continue
        x, y, mu, var, m = x[ok], y[ok], mu[ok], var[ok], m[ok]
        x_pgd = pgd(x, y)
        x_lat = latent(x)
        with torch.no_grad():
            mu_p, _ = model.encode(x_pgd)
            mu_l, var_l = model.encode(x_lat)
            rows["pgd_move"].append((mu_p - mu).norm(dim=1))
            rows["pgd_broken"].append(latent_margin(probe, mu_p, y) <= 0)
            rows["latent_move"].append((mu_l - mu).norm(dim=1))
            rows["latent_w2"].append(((mu_l - mu).pow(2) + (var_l.sqrt() - var.sqrt()).pow(2)).sum(1).sqrt())
        rows["margin"].append(m)
    cat = {k: (torch.cat(v) if v else torch.zeros(0)) for k, v in rows.items()}
    margin = cat["margin"]
    broken = cat["pgd_broken"]
    return {
        "eps": eps,
        "pgd_steps": pgd_steps,
        "latent_steps": latent_steps,
        "points": int(len(margin)),
        "pgd_broken": float(broken.float().mean()) if len(margin) else 0.0,
        "pgd_move": _quantiles(cat["pgd_move"]),
        "pgd_move_over_margin": _quantiles(cat["pgd_move"] / margin) if len(margin) else {"n": 0},
        "latent_w2": _quantiles(cat["latent_w2"]),
        "latent_move": _quantiles(cat["latent_move"]),
        "latent_move_over_margin": _quantiles(cat["latent_move"] / margin) if len(margin) else {"n": 0},
        "latent_can_cross": float((cat["latent_move"] >= margin).float().mean()) if len(margin) else 0.0,
        "values": {k: v.float().tolist() for k, v in cat.items()},
    }


def find_encoder_runs(run) -> dict[str, Path]:
    """name -> folder of each probed encoder in `run`: the folder itself when it is an encoder run with a
    probe, else its sub-folders that are (a `reproduce smooth-encoders` folder: vae/, se/)."""
    from .. import preflight

    run = validate.existing_dir(run, "RUN")

    def probed(folder: Path) -> bool:
        return (
            (folder / "config.yaml").exists()
            and (folder / "model.safetensors").exists()
            and (folder / "probe.yaml").exists()
            and preflight.is_encoder(preflight.run_config(folder))
        )

    if (run / "config.yaml").exists():
        if not probed(run):
            raise UserError(f"{run} is not a trained encoder with a probe: train it and run `robustrep probe {run}`")
        return {run.name: run}
    found = {f.name: f for f in sorted(run.iterdir()) if f.is_dir() and probed(f)}
    if not found:
        raise UserError(
            f"{run} holds no trained encoder with a linear probe (expected a run folder, or a folder of them such "
            "as one written by `robustrep reproduce smooth-encoders`)"
        )
    return found


def probe_variants(l2: list[float], noise: list[float], posterior_noise=()) -> dict[str, dict]:
    """The probes to compare: the saved one, then one per l2 penalty, per code-noise level and per
    posterior-noise level (train_probe's l2, noise and posterior_noise)."""
    variants = {"saved": {}}
    variants.update({f"l2={v:g}": {"l2": v} for v in l2})
    variants.update({f"noise={v:g}": {"noise": v} for v in noise})
    variants.update({f"posterior={v:g}": {"posterior_noise": v} for v in posterior_noise})
    return variants


def diagnose_run(
    run,
    out=None,
    *,
    n_eval: int = 1000,
    eps: float = 0.1,
    radii=(0.1, 0.2),
    attack_steps: int = 100,
    restarts: int = 10,
    latent_steps: int = 200,
    probe_l2=(),
    probe_noise=(),
    probe_posterior_noise=(),
    seed: int = 0,
    device="cpu",
    command: str | None = None,
) -> dict:
    """Diagnose every probed encoder in `run` (see the module docstring) on a fixed random `n_eval` test
    points (the points `reproduce smooth-encoders` attacks with the same seed), and compare the saved
    probe with regularised linear probes (`probe_l2`, `probe_noise`) refitted on the same frozen codes,
    each attacked with l_inf PGD (`attack_steps` x `restarts`) at `radii`. Writes diagnostics.json and
    diagnostics.png to `out` (default: `run`) and returns the results. `probe_posterior_noise`: probes
    fitted on mu(x) + S sqrt(var(x)) u (train_probe's posterior_noise)."""
    from .. import data, report
    from ..runs import load_model, read_yaml
    from ..utils import atomic_write, resolve_device, seed_everything
    from .adversarial import clean_accuracy
    from .pointwise import survivors
    from .probe import ProbedEncoder, load_probe, train_probe

    t_start = time.perf_counter()
    settings = dict(
        n_eval=validate.number(n_eval, "--n-eval", low=0, high=10**7, integer=True),
        eps=validate.nonnegative(eps, "--eps", high=1.0),
        radii=[validate.nonnegative(r, "--radii", high=1.0) for r in radii],
        attack_steps=validate.positive(attack_steps, "--attack-steps", integer=True, high=10**5),
        restarts=validate.positive(restarts, "--restarts", integer=True, high=10**4),
        latent_steps=validate.positive(latent_steps, "--latent-steps", integer=True, high=10**5),
        probe_l2=[validate.positive(v, "--probe-l2", high=1e6) for v in probe_l2],
        probe_noise=[validate.positive(v, "--probe-noise", high=1e6) for v in probe_noise],
        probe_posterior_noise=[
            validate.positive(v, "--probe-posterior-noise", high=1e6) for v in probe_posterior_noise
        ],
        seed=validate.seed(seed, "--seed"),
    )
    runs = find_encoder_runs(run)
    out = validate.output_dir(out if out is not None else run, "--out")
    device = resolve_device(device)
    configs = {name: read_yaml(folder / "config.yaml") for name, folder in runs.items()}
    datasets = {(c["training"]["dataset"], c["training"].get("task") or "digit") for c in configs.values()}
    if len(datasets) != 1:
        raise UserError(f"{run} mixes encoders trained on different data ({sorted(datasets)}): diagnose one at a time")
    ((dataset, task),) = datasets
    settings.update(dataset=dataset, task=task)
    Xl, yl = data.load(dataset, "train", task=task)
    Xt, yt = data.load(dataset, "test", task=task)
    Xe, ye = data.random_subset(Xt, yt, settings["n_eval"], settings["seed"])
    Xe, ye = Xe[:].to(device), ye.to(device)
    num_classes = data.num_classes(dataset, task)

    results = {"run": str(run), "settings": settings, "models": {}}
    plot_values = {}
    for name, folder in runs.items():
        t0 = time.perf_counter()
        model = load_model(folder, device)
        saved = load_probe(folder, device)
        r = probe_diagnostics(model, saved, Xt[:].to(device), Xe, ye)
        seed_everything(settings["seed"])
        move = attack_movement(
            model,
            ProbedEncoder(model, saved).eval(),
            saved,
            Xe,
            ye,
            settings["eps"],
            settings["attack_steps"],
            settings["latent_steps"],
        )
        plot_values[name] = {
            "margin": move["values"]["margin"],
            "pgd_move": move["values"]["pgd_move"],
            "latent_move": move["values"]["latent_move"],
            **r["per_dimension"],
        }
        r["movement"] = {k: v for k, v in move.items() if k != "values"}
        del r["margin_values"]
        r["probes"] = {}
        for label, kw in probe_variants(
            settings["probe_l2"], settings["probe_noise"], settings["probe_posterior_noise"]
        ).items():
            t1 = time.perf_counter()
            probe = saved if not kw else train_probe(model, Xl, yl, num_classes, **kw).to(device)
            clf = ProbedEncoder(model, probe).eval()
            p = {
                "nominal": clean_accuracy(clf, Xe, ye),
                "adversarial": {},
                "weight_norm": float(probe.weight.detach().norm()),
            }
            diag = probe_diagnostics(model, probe, Xt[:].to(device), Xe, ye)
            p.update(margin=diag["margin"], weight_share_inactive=diag["weight_share_inactive"])
            for e in settings["radii"]:
                seed_everything(settings["seed"])  # as `reproduce smooth-encoders` seeds each radius
                atk = PGD(clf, eps=e, steps=settings["attack_steps"], restarts=settings["restarts"])
                p["adversarial"][str(e)] = int(survivors(clf, Xe, ye, atk, batch_size=500).sum()) / len(Xe)
            p["seconds"] = round(time.perf_counter() - t1, 1)
            r["probes"][label] = p
            print(
                f"{name} probe {label}: nominal {p['nominal']:.3f} "
                + " ".join(f"eps {e}: {a:.3f}" for e, a in p["adversarial"].items()),
                file=sys.stderr,
            )
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results["models"][name] = r
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["provenance"] = report.provenance(command)
    atomic_write(out / "diagnostics.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    diagnostics_figure(plot_values, out / "diagnostics.png", eps=settings["eps"])
    return results


def diagnostics_figure(values: dict[str, dict], path, eps: float) -> Path:
    """Three panels, one colour per model: spread of each latent dimension against the probe's weight on
    it; per point, the margin against how far PGD moves the code; the distributions of the margin and of
    the long latent attack's reach."""
    from .. import plots

    plt = plots.plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for i, (name, v) in enumerate(values.items()):
        color = plots.COLORS.get(name, f"C{i}")
        axes[0].scatter(v["spread"], v["weight_norm"], s=14, color=color, label=name.upper())
        axes[1].scatter(v["margin"], v["pgd_move"], s=4, alpha=0.5, color=color, label=name.upper())
        for key, ls in (("margin", "--"), ("latent_move", "-")):
            xs = sorted(v[key])
            if xs:
                axes[2].plot(
                    xs,
                    [(j + 1) / len(xs) for j in range(len(xs))],
                    ls,
                    color=color,
                    label=f"{name.upper()} {'margin' if key == 'margin' else 'latent attack ||d mu||'}",
                )
    axes[0].axvline(ACTIVE_VARIANCE**0.5, color="gray", lw=0.8, ls=":")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="spread of mu_k over the test set (std)",
        ylabel="probe weight norm ||W[:, k]||",
        title="latent dimensions (dotted: active-unit threshold)",
    )
    both = [d for v in values.values() for d in v["margin"] + v["pgd_move"] if d > 0] or [1e-3, 1.0]
    axes[1].plot([min(both), max(both)], [min(both), max(both)], color="gray", lw=0.8)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="margin of the probe at mu(x) (latent l2)",
        ylabel=f"||mu(x_pgd) - mu(x)||, eps {eps}",
        title="PGD's reach vs margin (above the line: can cross)",
    )
    axes[2].set(
        xscale="log",
        xlabel="latent l2 distance",
        ylabel="fraction of points",
        title=f"margin vs long latent attack, eps {eps}",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, path)
