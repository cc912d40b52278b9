"""Reproduce Cemgil et al. 2020, Figure 7b: the selection budget. Smooth encoders trained with L PGD
steps of selection for each L in --budgets (default 1, 5, 10, 20), and the VAE as the baseline, all with
one seed, architecture and training budget; a linear probe on each frozen mean attacked end to end with
the paper's l_inf PGD. Writes results.json, budget.png (adversarial accuracy against L, one line per
attack radius, the VAE dotted) and report.html; a killed run continues with the same --out.
"""

from __future__ import annotations

from pathlib import Path

from . import se_figures as sf

NAME = "se-fig7b"
HELP = "adversarial accuracy against the selection budget L (Cemgil et al. 2020, Fig. 7b)"
BUDGETS = sf.budgets(quick=dict(epochs=5, n_eval=500))
L_VALUES = (1, 5, 10, 20)


def add_arguments(p) -> None:
    sf.add_arguments(p, BUDGETS)
    p.add_argument(
        "--budgets",
        default=",".join(map(str, L_VALUES)),
        help="selection budgets L to train an SE with (default 1,5,10,20; replaces --select-steps)",
    )


def settings_from(args) -> dict:
    s = sf.settings_from(args, BUDGETS)
    s["budgets"] = sf.int_list(args.budgets, "--budgets", low=0, high=10**4)
    return s


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {"vae": sf.variant("vae", s, shape)}
    variants.update({f"se-L{L}": sf.variant("se", s, shape, select_steps=L) for L in s["budgets"]})
    results = sf.run_variants(s, variants, out, device, progress)
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["figure"] = "7b"
    sf.write_results(out, results)
    by_label = results["tasks"][s["task"]]
    radii = [str(r) for r in s["radii"] if r > 0]
    title = f"{s['dataset']} ({s['arch']}): selection budget L (sel. eps {s['select_eps']})"
    figure = sf.against_setting(
        s["budgets"],
        {L: by_label[f"se-L{L}"] for L in s["budgets"]},
        by_label["vae"],
        radii,
        out / "budget.png",
        "selection budget L (PGD steps)",
        title,
    )
    sf.write_report(
        out, f"Figure 7b: {title}", "SE trained with each selection budget L, and the VAE.", results, [figure]
    )
    return results
