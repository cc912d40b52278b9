"""`robustrep diagnose RUN`: why a probed encoder is (not) robust, in latent units (issue 11)."""

from __future__ import annotations

from ..errors import UserError
from ..options import parse_radii


def register(sub) -> None:
    from ..options import add_common_options

    p = sub.add_parser(
        "diagnose",
        help="latent diagnostics of probed encoders: spread vs probe weights, margin vs attack reach",
        description="For each probed encoder in RUN (a run folder with a probe, or a folder of them such as "
        "`robustrep reproduce smooth-encoders` writes): the spread of each latent dimension of mu(x) over the "
        "test set against the probe's weight on it; the probe's margin at mu(x) in latent l2 units against "
        "how far l_inf PGD on probe(mu(x)) moves mu at --eps; the W2 a long latent attack reaches at --eps. "
        "With --probe-l2/--probe-noise/--probe-posterior-noise, linear probes refitted with an l2 penalty, "
        "Gaussian code noise or noise scaled by the posterior std "
        "are attacked beside the saved one (PGD, --attack-steps x --restarts, at --radii) on the same points. "
        "Writes diagnostics.json and diagnostics.png to --out (default RUN).",
    )
    p.add_argument(
        "run", help="a probed encoder run folder, or a folder of them (e.g. reproduce smooth-encoders --out)"
    )
    p.add_argument("--out", default=None, help="folder for diagnostics.json and diagnostics.png (default RUN)")
    p.add_argument("--n-eval", type=int, default=1000, help="test points, a fixed random subset (default 1000; 0: all)")
    p.add_argument("--eps", type=float, default=0.1, help="l_inf radius of the movement diagnostics (default 0.1)")
    p.add_argument("--radii", default="0.1,0.2", help="l_inf radii at which each probe is attacked (default 0.1,0.2)")
    p.add_argument("--attack-steps", type=int, default=100, help="PGD steps (default 100)")
    p.add_argument("--restarts", type=int, default=10, help="PGD restarts for the probe comparison (default 10)")
    p.add_argument("--latent-steps", type=int, default=200, help="steps of the long latent W2 attack (default 200)")
    p.add_argument(
        "--probe-l2",
        default="",
        help="comma-separated l2 penalties (> 0) on the probe weights, one refitted probe each (default none)",
    )
    p.add_argument(
        "--probe-noise",
        default="",
        help="comma-separated std (> 0, latent units) of Gaussian noise on the training codes, one "
        "refitted probe each (default none)",
    )
    p.add_argument(
        "--probe-posterior-noise",
        default="",
        help="comma-separated S (> 0): probes fitted on mu(x) + S sqrt(var(x)) u, noise S times the encoder's "
        "own posterior std (1: draws of q(z|x)), one each (default none)",
    )
    add_common_options(p)
    p.set_defaults(func=diagnose)


def _values(text: str, flag: str) -> list[float]:
    """Comma-separated numbers > 0 from a flag (empty: none)."""
    if not str(text).strip():
        return []
    values = parse_radii(text, flag)  # finite numbers >= 0, or one line naming the flag
    if any(v <= 0 for v in values):
        raise UserError(f"{flag} takes numbers > 0 (leave it out for none), got {text!r}")
    return values


def diagnose(args) -> int:
    from ..evaluation.latent_diagnostics import diagnose_run

    results = diagnose_run(
        args.run,
        args.out,
        n_eval=args.n_eval,
        eps=args.eps,
        radii=parse_radii(args.radii, "--radii"),
        attack_steps=args.attack_steps,
        restarts=args.restarts,
        latent_steps=args.latent_steps,
        probe_l2=_values(args.probe_l2, "--probe-l2"),
        probe_noise=_values(args.probe_noise, "--probe-noise"),
        probe_posterior_noise=_values(args.probe_posterior_noise, "--probe-posterior-noise"),
        seed=args.seed,
        device=args.device,
        command=getattr(args, "command_line", None),
    )
    for name, r in results["models"].items():
        m = r["movement"]
        print(
            f"{name}: {r['active_dims']} active dims, {100 * r['weight_share_inactive']:.1f}% of the probe's "
            f"squared weight on inactive ones; margin median {r['margin'].get('median', 0):.3g}; "
            f"at eps {m['eps']}: PGD moves mu {m['pgd_move'].get('median', 0):.3g} (median), the latent attack "
            f"{m['latent_move'].get('median', 0):.3g} (W2 {m['latent_w2'].get('median', 0):.3g})"
        )
        for label, p in r["probes"].items():
            print(
                f"  probe {label}: nominal {100 * p['nominal']:.1f}% "
                + " ".join(f"eps {e}: {100 * a:.1f}%" for e, a in p["adversarial"].items())
            )
    print(f"wall time {results['seconds']:.0f} s")
    return 0
