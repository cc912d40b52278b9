"""`robustrep sweep CONFIG`: a hyper-parameter sweep (grid and/or random search) over one experiment or
model, ranked by the criterion the config states (see robustrep.sweep and docs/sweeps.md)."""

from __future__ import annotations

import sys

from .. import sweep


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a hyper-parameter sweep from a YAML config (grid and/or random search), ranked",
        description=(
            "Run every trial of a sweep config: one run folder per trial under the config's out (or --out), "
            "each trial's flags checked by the command's own parser before any trial starts; finished trials "
            "are skipped and a killed trial continues when the same command is run again. Writes sweep.json "
            "(every trial: flags, settings, criterion value, folder, seconds) and ranking.md. Trials run one "
            "after another here, or on Ray Tune with --ray (a local Ray) or --address (a cluster; needs "
            "pip install 'robustrep[sweep]'). Config format: docs/sweeps.md; examples: configs/table2*.yaml."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="the sweep's YAML file")
    p.add_argument("--out", default=None, help="sweep folder (default: the config's out, else runs/sweep)")
    p.add_argument("--dry-run", action="store_true", help="check every trial and print the plan; run nothing")
    p.add_argument("--ray", action="store_true", help="run the trials on a local Ray Tune")
    p.add_argument("--address", default=None, help="run the trials on the Ray cluster at this address (e.g. auto)")
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs Ray gives each trial (default 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, or cuda[:N] (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch in this process")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    config = sweep.load_config(args.config)
    if args.dry_run:
        out = sweep.validate.output_dir(args.out or config.get("out") or "runs/sweep", "--out")
        trials = sweep.plan(config)
        for trial in trials:
            sweep.parse_trial(config, trial, out / trial.name)
            print(f"{trial.name}: robustrep {' '.join(trial.argv)}")
        print(f"{len(trials)} trials, each checked; nothing run")
        return 0
    result = sweep.run_sweep(
        config,
        out=args.out,
        device=args.device,
        progress=not args.no_progress,
        use_ray=args.ray,
        address=args.address,
        cpus_per_trial=args.cpus_per_trial,
    )
    print(sweep.ranking_table(result), end="")
    failed = sum(r.get("status") == "failed" for r in result["trials"])
    print(
        f"{result['n_finished']} trials ({failed} failed), {result['seconds']:.0f} s; sweep.json and ranking.md in "
        f"{sweep.Path(result['trials'][0]['run_dir']).parent if result['trials'] else args.out}",
        file=sys.stderr,
    )
    return 0
