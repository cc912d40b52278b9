"""Reproduce Cemgil et al. 2020, Figure 4: Color-MNIST with the conv architecture, two probe tasks on one
code (the digit and the colour), the VAE against smooth encoders selected at radii 0.1 and 0.2. Each
encoder is trained once without labels; a linear probe per task on its frozen mean is attacked end to end
with the paper's l_inf PGD. Writes results.json, color-mnist.png (one panel per task) and report.html; a
killed run continues with the same --out.

The conv SE has its own gamma, se_figures.CONV_SE (30; with the MLP's 300 it collapsed to a constant
encoder, configs/conv-calibration*.yaml and docs/results.md); --gamma overrides it. The SE's collapse
watch warns while it trains and a probe at chance is marked in results.json.
`--dataset color-digits` (sklearn's 8x8 digits in the same 7 colours) is a seconds-long smoke test.
"""

from __future__ import annotations

from pathlib import Path

from . import se_figures as sf

NAME = "se-fig4"
HELP = "Color-MNIST, conv, digit and colour probes: VAE vs SE (Cemgil et al. 2020, Fig. 4)"
# Color-MNIST is 7 x 60000 images: a fixed random subset trains the encoders (the probes see them all)
BUDGETS = sf.budgets(
    quick=dict(epochs=3, subset=20000, n_eval=500, **sf.CONV_SE), full=dict(subset=60000, **sf.CONV_SE)
)
TASKS = ("digit", "color")


def add_arguments(p) -> None:
    sf.add_arguments(p, BUDGETS, datasets=("color-mnist", "color-digits"), arch=False)
    p.add_argument(
        "--select-radii",
        default="0.1,0.2",
        help="selection radii to train an SE with (default 0.1,0.2; replaces --select-eps)",
    )


def settings_from(args) -> dict:
    s = sf.settings_from(args, BUDGETS, tasks=TASKS, arch="conv")
    s.update(select_radii=sf.radius_list(args.select_radii, "--select-radii"))
    return s


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {"vae": sf.variant("vae", s, shape)}
    variants.update({f"se-{r}": sf.variant("se", s, shape, select_eps=r) for r in s["select_radii"]})
    results = sf.run_variants(s, variants, out, device, progress)
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["figure"] = "4"
    sf.write_results(out, results)
    title = f"{s['dataset']} (conv, L={s['select_steps']}, gamma {s['gamma']:g})"
    figure = sf.curves({f"task: {t}": results["tasks"][t] for t in s["tasks"]}, out / "color-mnist.png", title)
    sf.write_report(out, f"Figure 4: {title}", "One code per encoder, a linear probe per task.", results, [figure])
    return results
