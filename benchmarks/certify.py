"""Time and tightness of our Wong & Kolter dual bounds against convex_adversarial (the authors' code) on the
same network and batch; auto_LiRPA's CROWN too when it is installed (it needs torch < 1.13, so usually not).

    python benchmarks/certify.py [--batch 50] [--repeats 5] [--quick] [--run RUN_DIR ...]
    python benchmarks/certify.py --part scaling [--run RUN_DIR ...]     # -> benchmarks/results/certify_scaling.json

--part scaling: (1) one robust training step (loss + backward, batch 50) of the Table-1 conv net, exact and
with k = 50 random Cauchy projections, ours and convex_adversarial's (`proj=50, norm_type="l1_median"`),
and how far each projected loss is from the exact one; (2) certified accuracy at eps 0.02, 0.05, 0.1 of
the same trained nets (an MLP trained normally, one trained robustly with k = 50, plus any --run) by IBP,
the dual network, the dual with the [0, 1] box, CROWN, CROWN with the box, and convex_adversarial's dual
with and without its `bounded_input` box, with the seconds each took and PGD accuracy as the ceiling.

Writes benchmarks/results/certify.json: per network, best-of-N seconds of the certificate (no gradient) and
of the robust loss with its backward pass, ours vs theirs and the ratio ours/theirs (< 1: we are faster);
and the mean margin bound and max |ours - theirs| of the bounds, with IBP's mean for scale. One CPU thread
(the machine is shared; several threads fight each other and the numbers wander by 10x).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

import robustrep as rr
from robustrep.models.classifier import mlp, wk_conv


def best_time(fn, repeats):
    """Best of `repeats` (timeit's rule: on a shared machine the minimum is the least disturbed run)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def their_margins(net, x, y, eps):
    from convex_adversarial import DualNetwork

    k = net[-1].out_features
    eye = torch.eye(k, dtype=x.dtype)
    return DualNetwork(net, x, eps)(eye[y].unsqueeze(1) - eye.unsqueeze(0))


def their_loss(net, x, y, eps):
    from convex_adversarial import robust_loss

    return robust_loss(net, eps, x, y)[0]


def bench(name, net, x, y, eps, repeats):
    for p in net.parameters():
        p.requires_grad_(True)
    row = {"network": name, "batch": len(x), "eps": eps, "parameters": sum(p.numel() for p in net.parameters())}
    with torch.no_grad():
        ours = rr.certify.margin_bounds(net, x, y, eps, "dual")
        theirs = their_margins(net, x, y, eps)
        ibp = rr.certify.margin_bounds(net, x, y, eps, "ibp")
    off = torch.ones_like(ours, dtype=torch.bool).scatter(1, y[:, None], False)
    row["tightness"] = {
        "ours_mean_margin_bound": ours[off].mean().item(),
        "convex_adversarial_mean_margin_bound": theirs[off].mean().item(),
        "ibp_mean_margin_bound": ibp[off].mean().item(),
        "max_abs_difference_ours_vs_convex_adversarial": (ours - theirs).abs().max().item(),
        "certified_ours": int(rr.certify.certified(ours, y).sum()),
        "certified_convex_adversarial": int(rr.certify.certified(theirs, y).sum()),
        "certified_ibp": int(rr.certify.certified(ibp, y).sum()),
    }

    def ours_bound():
        with torch.no_grad():
            rr.certify.margin_bounds(net, x, y, eps, "dual")

    def theirs_bound():
        with torch.no_grad():
            their_margins(net, x, y, eps)

    def ours_loss():
        net.zero_grad()
        rr.certify.robust_loss(net, x, y, eps, "dual").backward()

    def theirs_loss():
        net.zero_grad()
        their_loss(net, x, y, eps).backward()

    t = {
        k: best_time(f, repeats)
        for k, f in [
            ("ours_bound", ours_bound),
            ("convex_adversarial_bound", theirs_bound),
            ("ours_loss_backward", ours_loss),
            ("convex_adversarial_loss_backward", theirs_loss),
        ]
    }
    row["seconds"] = {k: round(v, 4) for k, v in t.items()}
    row["ratio_ours_over_theirs"] = {
        "bound": round(t["ours_bound"] / t["convex_adversarial_bound"], 3),
        "loss_backward": round(t["ours_loss_backward"] / t["convex_adversarial_loss_backward"], 3),
    }
    print(
        f"{name:<22} batch {len(x):>3}: bound {t['ours_bound']:.3f}s vs {t['convex_adversarial_bound']:.3f}s "
        f"(x{row['ratio_ours_over_theirs']['bound']}), loss+backward {t['ours_loss_backward']:.3f}s vs "
        f"{t['convex_adversarial_loss_backward']:.3f}s (x{row['ratio_ours_over_theirs']['loss_backward']}); "
        f"max |diff| {row['tightness']['max_abs_difference_ours_vs_convex_adversarial']:.2e}"
    )
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="MLPs only (the conv net takes a minute)")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        help="also a trained classifier run folder (e.g. runs/wk-table1/robust); repeatable",
    )
    parser.add_argument(
        "--part",
        choices=("bounds", "scaling", "replot"),
        default="bounds",
        help="bounds: dual vs convex_adversarial (certify.json); scaling: projections, box, CROWN "
        "(certify_scaling.json and .png); replot: redraw certify_scaling.png from its JSON",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = Path(__file__).parent / "results"
    if args.part == "scaling":
        return scaling(args, args.out or results / "certify_scaling.json")
    if args.part == "replot":  # the figure again from the JSON, without measuring anything
        out = Path(args.out or results / "certify_scaling.json")
        return plot_tightness(json.loads(out.read_text()), out.with_suffix(".png"))
    args.out = args.out or str(results / "certify.json")
    try:
        X, y = rr.data.load("mnist", "test")
        source = "mnist test"
    except Exception:  # no MNIST here: digits upsampled would
        X = torch.rand(1000, 1, 28, 28)  # change the nets; random images keep them
        y = torch.randint(0, 10, (1000,))
        source = "uniform random images (MNIST unavailable)"
    x, yb = X[: args.batch], y[: args.batch]
    nets = [
        ("mlp 784-100-100-10", mlp((1, 28, 28), 10, [100, 100])),
        ("mlp 784-500-500-10", mlp((1, 28, 28), 10, [500, 500])),
    ]
    if not args.quick:
        nets.append(("wk-conv (Table 1 net)", wk_conv((1, 28, 28), 10)))
    from robustrep.runs import load_classifier

    for run in args.run:
        nets.append((f"trained {run}", load_classifier(run).net))
    rows = []
    for name, net in nets:
        for batch in sorted({args.batch, 10} if "conv" in name else {args.batch}):
            rows.append(bench(name, net, x[:batch], yb[:batch], args.eps, args.repeats if "conv" not in name else 3))
    try:
        import auto_LiRPA  # noqa: F401

        crown = "installed but not benchmarked"
    except ImportError:
        crown = "not installed (auto_LiRPA 0.3 requires torch < 1.13; we run torch " + torch.__version__ + ")"
    result = {
        "inputs": source,
        "threads": 1,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "note": "untrained (default-initialised) networks; ours and convex_adversarial compute the same bound",
        "auto_lirpa": crown,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


# ---------------------------------------------------------------- --part scaling


def robust_steps(x, y, eps, k, repeats_exact, repeats_projected):
    """Seconds of one robust loss + backward on the Table-1 conv net: exact and k projections, ours and theirs."""
    from convex_adversarial import robust_loss as their_robust_loss

    torch.manual_seed(0)
    net = wk_conv((1, 28, 28), 10)

    def step(fn):
        def go():
            net.zero_grad()
            loss = fn()
            loss.backward()
            return loss.item()

        return go

    runs = {
        "ours_exact": (step(lambda: rr.certify.robust_loss(net, x, y, eps)), repeats_exact),
        "ours_projected": (step(lambda: rr.certify.robust_loss(net, x, y, eps, projections=k)), repeats_projected),
        "convex_adversarial_exact": (step(lambda: their_robust_loss(net, eps, x, y)[0]), repeats_exact),
        "convex_adversarial_projected": (
            step(lambda: their_robust_loss(net, eps, x, y, proj=k, norm_type="l1_median")[0]),
            repeats_projected,
        ),
    }
    seconds = {name: round(best_time(fn, reps), 3) for name, (fn, reps) in runs.items()}
    # how far the projected losses are from the exact one (20 draws each)
    exact = runs["ours_exact"][0]()
    spread = {}
    for name in ("ours_projected", "convex_adversarial_projected"):
        values = torch.tensor([runs[name][0]() for _ in range(20)])
        spread[name] = {
            "mean": values.mean().item(),
            "std": values.std().item(),
            "mean_abs_relative_error": ((values - exact).abs() / exact).mean().item(),
        }
    row = {
        "network": "wk-conv (Table 1 net, default init)",
        "batch": len(x),
        "eps": eps,
        "k": k,
        "seconds": seconds,
        "exact_loss": exact,
        "projected_loss": spread,
        "speedup_projected_over_exact": {
            "ours": round(seconds["ours_exact"] / seconds["ours_projected"], 1),
            "convex_adversarial": round(
                seconds["convex_adversarial_exact"] / seconds["convex_adversarial_projected"], 1
            ),
        },
        "ratio_ours_over_theirs": {
            "exact": round(seconds["ours_exact"] / seconds["convex_adversarial_exact"], 3),
            "projected": round(seconds["ours_projected"] / seconds["convex_adversarial_projected"], 3),
        },
    }
    print(f"robust step, conv net, batch {len(x)}: {seconds}")
    return row


def train_mlp(X, y, robust: bool, epochs: int, k: int, eps: float):
    """A seeded MLP 784-100-100-10: plain cross-entropy, or the robust loss with k projections and eps rising
    linearly from eps/2 to eps (Wong & Kolter's warm-up, squeezed into the epochs)."""
    torch.manual_seed(0)
    net = mlp((1, 28, 28), 10, [100, 100])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        e = eps / 2 + (eps / 2) * epoch / max(epochs - 1, 1)
        for idx in torch.randperm(len(X)).split(50):
            opt.zero_grad()
            if robust:
                loss = rr.certify.robust_loss(net, X[idx], y[idx], e, projections=k)
            else:
                loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
            loss.backward()
            opt.step()
    return net.eval()


def their_certified(net, x, y, eps, bounded):
    from convex_adversarial import DualNetwork

    k = net[-1].out_features
    eye = torch.eye(k, dtype=x.dtype)
    ok = 0
    with torch.no_grad():
        for i in range(0, len(x), 50):
            xb, yb = x[i : i + 50], y[i : i + 50]
            b = DualNetwork(net, xb, eps, bounded_input=bounded)(eye[yb].unsqueeze(1) - eye.unsqueeze(0))
            ok += int(rr.certify.certified(b, yb).sum())
    return ok / len(x)


def tightness(name, net, x, y, radii):
    from robustrep.attacks import PGD

    methods = {
        "ibp": ("ibp", None),
        "dual": ("dual", None),
        "dual_box": ("dual", (0.0, 1.0)),
        "crown": ("crown", None),
        "crown_box": ("crown", (0.0, 1.0)),
    }
    out = {"network": name, "n": len(x), "clean": rr.evaluation.clean_accuracy(net, x, y), "eps": {}}
    for eps in radii:
        row, secs = {}, {}
        for key, (method, box) in methods.items():
            t = time.perf_counter()
            row[key] = rr.certify.certified_accuracy(net, x, y, eps, method, batch_size=50, input_bounds=box)
            secs[key] = round(time.perf_counter() - t, 2)
        for key, bounded in (("convex_adversarial_dual", False), ("convex_adversarial_dual_box", True)):
            t = time.perf_counter()
            row[key] = their_certified(net, x, y, eps, bounded)
            secs[key] = round(time.perf_counter() - t, 2)
        torch.manual_seed(0)
        row["pgd_accuracy"] = rr.evaluation.adversarial_accuracy(net, x, y, PGD(net, eps=eps, steps=40, restarts=1))
        out["eps"][str(eps)] = {"certified": row, "seconds": secs}
        print(f"{name} eps {eps}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    return out


def scaling(args, out):
    t0 = time.perf_counter()
    X, y = rr.data.load("mnist", "train")
    Xt, yt = rr.data.load("mnist", "test")
    X, y = rr.data.random_subset(X, y, 12000, 0)
    xt, ytb = rr.data.random_subset(Xt, yt, 500, 1)
    step = robust_steps(Xt[: args.batch], yt[: args.batch], 0.1, 50, repeats_exact=2, repeats_projected=3)
    nets = [
        ("mlp 784-100-100-10, normal (2 epochs, 12k images)", train_mlp(X, y, False, 2, 0, 0.1)),
        ("mlp 784-100-100-10, robust k=50 eps 0.1 (4 epochs, 12k images)", train_mlp(X, y, True, 4, 50, 0.1)),
    ]
    from robustrep.runs import load_classifier

    for run in args.run:
        nets.append((f"trained {run}", load_classifier(run).net))
    radii = (0.02, 0.05, 0.1)
    rows = []
    for name, net in nets:
        n = 200 if isinstance(net[0], torch.nn.Conv2d) else 500
        rows.append(tightness(name, net, xt[:n], ytb[:n], radii))
    result = {
        "inputs": "mnist (train: a fixed random 12000; test: a fixed random 500, 200 for conv nets)",
        "threads": 1,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "robust_step": step,
        "tightness": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": "OMP_NUM_THREADS=1 python benchmarks/certify.py --part scaling"
        + "".join(f" --run {r}" for r in args.run),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    plot_tightness(result, Path(out).with_suffix(".png"))
    print(f"wrote {out}")


def plot_tightness(result: dict, path: Path) -> None:
    """Certified accuracy of each method and PGD accuracy against the radius, one panel per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["tightness"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 3.8), squeeze=False)
    styles = {
        "pgd_accuracy": ("k", "o-", "PGD accuracy (ceiling)"),
        "crown_box": ("C3", "s-", "CROWN, box"),
        "dual_box": ("C1", "^-", "dual, box"),
        "crown": ("C3", "s:", "CROWN"),
        "dual": ("C0", "^:", "dual"),
        "convex_adversarial_dual_box": ("C2", "x", "convex_adversarial, box"),
        "convex_adversarial_dual": ("C2", "+", "convex_adversarial"),
        "ibp": ("C7", "v:", "IBP"),
    }
    for ax, row in zip(axes[0], rows):
        radii = [float(e) for e in row["eps"]]
        for key, (colour, style, label) in styles.items():
            ax.plot(radii, [v["certified"][key] for v in row["eps"].values()], style, color=colour, label=label)
        ax.set_xlabel("eps (l_inf)")
        ax.set_ylabel("accuracy")
        ax.set_title(row["network"], fontsize=8)
        ax.set_ylim(-0.02, 1.0)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
