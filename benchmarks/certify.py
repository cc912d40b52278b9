"""Time and tightness of our Wong & Kolter dual bounds against convex_adversarial (the authors' code) on the
same network and batch; auto_LiRPA's CROWN too when it is installed (it needs torch < 1.13, so usually not).

    python benchmarks/certify.py [--batch 50] [--repeats 5] [--quick] [--run RUN_DIR ...]

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
    fn()                                                         # warm-up
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
    row["tightness"] = {"ours_mean_margin_bound": ours[off].mean().item(),
                        "convex_adversarial_mean_margin_bound": theirs[off].mean().item(),
                        "ibp_mean_margin_bound": ibp[off].mean().item(),
                        "max_abs_difference_ours_vs_convex_adversarial": (ours - theirs).abs().max().item(),
                        "certified_ours": int(rr.certify.certified(ours, y).sum()),
                        "certified_convex_adversarial": int(rr.certify.certified(theirs, y).sum()),
                        "certified_ibp": int(rr.certify.certified(ibp, y).sum())}

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

    t = {k: best_time(f, repeats) for k, f in [("ours_bound", ours_bound), ("convex_adversarial_bound", theirs_bound),
                                                 ("ours_loss_backward", ours_loss),
                                                 ("convex_adversarial_loss_backward", theirs_loss)]}
    row["seconds"] = {k: round(v, 4) for k, v in t.items()}
    row["ratio_ours_over_theirs"] = {"bound": round(t["ours_bound"] / t["convex_adversarial_bound"], 3),
                                     "loss_backward": round(t["ours_loss_backward"] / t["convex_adversarial_loss_backward"], 3)}
    print(f"{name:<22} batch {len(x):>3}: bound {t['ours_bound']:.3f}s vs {t['convex_adversarial_bound']:.3f}s "
          f"(x{row['ratio_ours_over_theirs']['bound']}), loss+backward {t['ours_loss_backward']:.3f}s vs "
          f"{t['convex_adversarial_loss_backward']:.3f}s (x{row['ratio_ours_over_theirs']['loss_backward']}); "
          f"max |diff| {row['tightness']['max_abs_difference_ours_vs_convex_adversarial']:.2e}")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="MLPs only (the conv net takes a minute)")
    parser.add_argument("--run", action="append", default=[],
                        help="also a trained classifier run folder (e.g. runs/wk-table1/robust); repeatable")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "certify.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        X, y = rr.data.load("mnist", "test")
        source = "mnist test"
    except Exception:                                            # no MNIST here: digits upsampled would
        X = torch.rand(1000, 1, 28, 28)                          # change the nets; random images keep them
        y = torch.randint(0, 10, (1000,))
        source = "uniform random images (MNIST unavailable)"
    x, yb = X[:args.batch], y[:args.batch]
    nets = [("mlp 784-100-100-10", mlp((1, 28, 28), 10, [100, 100])),
            ("mlp 784-500-500-10", mlp((1, 28, 28), 10, [500, 500]))]
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
    result = {"inputs": source, "threads": 1, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "note": "untrained (default-initialised) networks; ours and convex_adversarial compute the same bound",
              "auto_lirpa": crown, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
