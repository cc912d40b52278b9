"""Hyper-parameter sweeps (Cemgil et al. 2020, Table 2's grid): many runs of one experiment or one model,
ranked by a criterion the config states.

A sweep is a YAML file:

    experiment: smooth-encoders      # a `robustrep reproduce` name; or `train: se` for a model
    fixed: {quick: true, dataset: digits}             # flags every trial gets (names as in --help)
    grid: {gamma: [0.01, 0.1], obs_var: [0.25, 1.0]}  # every combination
    random:                                           # optional: draws per grid point
      trials: 4
      seed: 0
      space: {select_eps: {uniform: [0.05, 0.3]}, gamma: {loguniform: [0.01, 50]}, latent_dim: {choice: [16, 32]}}
    criterion: {metric: 'models.se.adversarial["0.1"]', mode: max}
    out: runs/table2                                  # one folder per trial inside

Each trial's flags go through the very parser of the command line (`robustrep.cli.build_parser`) and the
experiment's own `settings_from`, so a value is checked exactly as `robustrep reproduce ...` would check
it, and every trial is checked before the first one starts. A trial runs in `out/trial-NNN/`; it is
finished when `trial.json` is there (skipped on the next run), and a killed trial continues in its folder
(experiments and `train --resume` pick up their checkpoints). `out/sweep.json` holds every trial (flags,
settings, criterion value, folder, seconds) and `out/ranking.md` the ranked table.

Trials run one after another in this process, or as Ray Tune trials (`ray=True` for a local Ray,
`address=` for a cluster whose workers see `out` on a shared file system). Ray is optional
(`pip install robustrep[sweep]`).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import validate
from .errors import UserError
from .utils import atomic_write

KINDS = ("experiment", "train")
MODES = ("max", "min")
KEYS = {"experiment", "train", "fixed", "grid", "random", "criterion", "out"}
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
RESERVED = ("out", "resume", "no_progress", "config", "device")  # flags the sweep sets itself
MAX_TRIALS = 10_000


@dataclass
class Trial:
    index: int
    flags: dict
    argv: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"trial-{self.index:03d}"


# ---------------------------------------------------------------------------------------------- config
def load_config(path) -> dict:
    """The sweep config at `path`, its shape checked (values are checked per trial by the parser)."""
    path = validate.readable_file(path, "CONFIG")
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return check_config(config, str(path))


def check_config(config, where: str = "the sweep config") -> dict:
    if not isinstance(config, dict):
        raise UserError(f"{where} must be a mapping with experiment (or train), grid and criterion")
    unknown = set(config) - KEYS
    if unknown:
        raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r}: use {', '.join(sorted(KEYS))}")
    kinds = [k for k in KINDS if k in config]
    if len(kinds) != 1:
        raise UserError(f"{where} needs exactly one of 'experiment: NAME' (robustrep reproduce) or 'train: MODEL'")
    if not isinstance(config[kinds[0]], str):
        raise UserError(f"{where}: {kinds[0]} must be a name, got {config[kinds[0]]!r}")
    for key in ("fixed", "grid"):
        if not isinstance(config.get(key) or {}, dict):
            raise UserError(f"{where}: {key} must map flag names to values")
    for key, values in (config.get("grid") or {}).items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: grid.{key} must be a non-empty list of values")
    _check_random(config.get("random"), where)
    criterion = config.get("criterion")
    if not isinstance(criterion, dict) or not isinstance(criterion.get("metric"), (str, list)):
        raise UserError(f"{where} needs criterion: {{metric: PATH, mode: max|min}} (e.g. models.se.nominal)")
    metric_path(criterion["metric"], where)
    validate.choice(criterion.get("mode", "max"), f"{where}: criterion.mode", MODES)
    if "out" in config and not isinstance(config["out"], str):
        raise UserError(f"{where}: out must be a folder name")
    clash = [k for k in _flag_names(config) if k.replace("-", "_") in RESERVED]
    if clash:
        raise UserError(f"{where}: {clash[0]!r} is set by the sweep itself (out: is the sweep's folder)")
    return config


def _flag_names(config) -> list[str]:
    space = (config.get("random") or {}).get("space") or {}
    return [*(config.get("fixed") or {}), *(config.get("grid") or {}), *space]


def _check_random(spec, where: str) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("space"), dict) or not spec["space"]:
        raise UserError(f"{where}: random needs space: {{FLAG: {{uniform|loguniform|choice|randint: ...}}}}")
    validate.positive(spec.get("trials", 1), f"{where}: random.trials", integer=True, high=MAX_TRIALS)
    validate.seed(spec.get("seed", 0), f"{where}: random.seed")
    for key, dist in spec["space"].items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise UserError(f"{where}: random.space.{key} must be one of {{{' | '.join(DISTRIBUTIONS)}: ...}}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise UserError(f"{where}: random.space.{key}.choice must be a non-empty list")
            continue
        if not isinstance(args, list) or len(args) != 2:
            raise UserError(f"{where}: random.space.{key}.{kind} needs [low, high]")
        integer = kind == "randint"
        low = validate.number(args[0], f"{where}: random.space.{key} low", integer=integer)
        high = validate.number(args[1], f"{where}: random.space.{key} high", integer=integer)
        if not low <= high or (kind == "loguniform" and low <= 0):
            raise UserError(
                f"{where}: random.space.{key}.{kind} needs {'0 < ' if kind == 'loguniform' else ''}"
                f"low <= high, got {args}"
            )


def metric_path(metric, where: str = "criterion") -> list[str]:
    """'models.se.adversarial["0.1"]' (or a list of keys) -> ['models', 'se', 'adversarial', '0.1']."""
    if isinstance(metric, list):
        keys = [str(k) for k in metric]
    else:
        keys, pos = [], 0
        token = re.compile(r"""\.?(?:\[\s*(?:"([^"]*)"|'([^']*)'|(\d+))\s*\]|([^.\[\]"']+))""")
        while pos < len(metric):
            m = token.match(metric, pos)
            if not m or m.end() == pos:
                raise UserError(f'{where}: cannot read the metric {metric!r} (use a.b["0.1"] or a list of keys)')
            keys.append(next(g for g in m.groups() if g is not None))
            pos = m.end()
    if not keys or any(not k for k in keys):
        raise UserError(f"{where}: empty metric path {metric!r}")
    return keys


def criterion_value(results: dict, keys: list[str]) -> float | None:
    """The number at `keys` in a trial's results; a UserError naming the keys there when it is missing."""
    node = results
    for i, key in enumerate(keys):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            here = ".".join(keys[:i]) or "the results"
            have = ", ".join(map(str, node)) if isinstance(node, dict) else type(node).__name__
            raise UserError(f"criterion: {here} has no {key!r} (it has: {have})")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise UserError(f"criterion: {'.'.join(keys)} is {node!r}, not a number")
    return float(node) if math.isfinite(node) else None


# ------------------------------------------------------------------------------------------------ plan
def plan(config: dict) -> list[Trial]:
    """Every trial of the sweep, in a fixed order: the grid's product, each point with its random draws."""
    fixed = dict(config.get("fixed") or {})
    grid = config.get("grid") or {}
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    spec = config.get("random")
    draws = [{}]
    if spec:
        rng = random.Random(spec.get("seed", 0))
        draws = [{k: _draw(rng, d) for k, d in spec["space"].items()} for _ in range(spec.get("trials", 1))]
    flags = [{**fixed, **point, **draw} for point in points for draw in draws]
    if len(flags) > MAX_TRIALS:
        raise UserError(f"the sweep has {len(flags)} trials, more than {MAX_TRIALS}: shrink the grid")
    return [Trial(i, f) for i, f in enumerate(flags)]


def _draw(rng: random.Random, dist: dict):
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return rng.choice(args)
    if kind == "randint":
        return rng.randint(int(args[0]), int(args[1]))
    if kind == "uniform":
        return round(rng.uniform(float(args[0]), float(args[1])), 6)
    return float(f"{math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))):.6g}")


def to_argv(flags: dict) -> list[str]:
    """Flag values as the command line spells them: True -> --flag, False/None -> absent, lists joined by commas."""
    argv = []
    for key, value in flags.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def command_argv(config: dict, trial: Trial, run_dir: Path) -> list[str]:
    if "experiment" in config:
        return ["reproduce", config["experiment"], *to_argv(trial.flags), "--out", str(run_dir)]
    return ["train", config["train"], *to_argv(trial.flags), "--out", str(run_dir)]


def parse_trial(config: dict, trial: Trial, run_dir: Path, resume: bool = False):
    """The trial's flags through the command line's own parser (and the experiment's settings_from):
    every value is checked exactly as on the command line, before any work."""
    from .cli import build_parser

    trial.argv = command_argv(config, trial, run_dir)
    argv = trial.argv + (["--resume"] if resume else []) + ["--no-progress"]
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1:] or ["refused"]
        raise UserError(f"trial {trial.index} ({' '.join(to_argv(trial.flags))}): {message[0]}") from None
    if "experiment" in config:
        try:
            trial.settings = _experiment(config).settings_from(args)
        except UserError as e:
            raise UserError(f"trial {trial.index} ({' '.join(to_argv(trial.flags))}): {e}") from None
    return args


def _experiment(config: dict):
    from .commands.reproduce import experiment_modules

    found = experiment_modules()
    if config["experiment"] not in found:
        raise UserError(f"unknown experiment {config['experiment']!r}: choose one of {', '.join(found)}")
    return found[config["experiment"]]


# ------------------------------------------------------------------------------------------------- run
def run_trial(config: dict, trial: Trial, out: Path, device="auto", progress: bool = False) -> dict:
    """Run (or continue, or skip when finished) one trial in out/trial-NNN; returns its record."""
    run_dir = out / trial.name
    done = run_dir / "trial.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("flags") != trial.flags:
            raise UserError(f"{run_dir} holds a trial with other flags: the config changed; choose a new out")
        if record.get("status") == "ok":
            return record
        done.unlink()  # a failed trial is tried again (its failure may have been the machine's, not its flags')
    t0 = time.perf_counter()
    keys = metric_path(config["criterion"]["metric"])
    record = {"index": trial.index, "flags": trial.flags, "run_dir": str(run_dir), "argv": None}
    results = None
    try:
        if "experiment" in config:
            parse_trial(config, trial, run_dir)
            results = _experiment(config).run(trial.settings, out=run_dir, device=device, progress=progress)
            record["settings"] = trial.settings
        else:
            results = _train_trial(config, trial, run_dir, device, progress)
            record["settings"] = _read_settings(run_dir)
            record["epochs"] = results["epochs"]
    except UserError as err:  # a diverged or refused trial is a result of the sweep, not its end
        record.update(argv=trial.argv, value=None, status="failed", error=str(err))
        print(f"sweep: trial {trial.index} failed: {err}", file=sys.stderr)
    else:  # a criterion missing from the results stops the sweep: the config names the wrong metric
        record.update(argv=trial.argv, value=criterion_value(results, keys), status="ok")
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if isinstance(results, dict) and isinstance(results.get("seconds"), (int, float)):
        record["seconds"] = results["seconds"]  # the experiment's own total, resumed parts included
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(done, lambda f: f.write(json.dumps(record, indent=2).encode()))
    return record


def _train_trial(config: dict, trial: Trial, run_dir: Path, device, progress: bool) -> dict:
    """`robustrep train MODEL ...` for one trial; its results are the last epoch's metrics."""
    from .runs import read_metrics

    resume = (run_dir / "config.yaml").exists() and not (run_dir / "model.safetensors").exists()
    if not (run_dir / "model.safetensors").exists():
        args = parse_trial(config, trial, run_dir, resume=resume)
        args.device, args.no_progress = device, not progress
        args.func(args)
    else:
        trial.argv = command_argv(config, trial, run_dir)
    history = read_metrics(run_dir)
    return {**(history[-1] if history else {}), "epochs": len(history)}


def _read_settings(run_dir: Path) -> dict:
    from .runs import read_yaml

    path = run_dir / "config.yaml"
    return read_yaml(path) if path.exists() else {}


def run_sweep(
    config,
    out=None,
    device="auto",
    progress: bool = False,
    use_ray: bool = False,
    address: str | None = None,
    cpus_per_trial: int = 1,
) -> dict:
    """Run every trial of `config` (a dict or a YAML path) not yet finished; write out/sweep.json and
    out/ranking.md; return the sweep's record (trials in index order, `ranking` best first)."""
    if not isinstance(config, dict):
        config = load_config(config)
    else:
        config = check_config(config)
    out = validate.output_dir(out or config.get("out") or "runs/sweep", "--out").resolve()
    cpus_per_trial = validate.positive(cpus_per_trial, "--cpus-per-trial", integer=True, high=4096)
    trials = plan(config)
    for trial in trials:  # every trial checked before the first one starts
        parse_trial(config, trial, out / trial.name)
    if use_ray or address:
        _require_ray()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    previous = _read_previous(out / "sweep.json")
    records: dict[int, dict] = {}

    def save():
        return _write_sweep(
            out, config, trials, records, previous + time.perf_counter() - t0, "ray" if use_ray or address else "local"
        )

    if use_ray or address:
        records.update(_run_on_ray(config, trials, out, device, address, cpus_per_trial))
    else:
        for trial in trials:
            records[trial.index] = run_trial(config, trial, out, device, progress)
            save()
    return save()


def _read_previous(path: Path) -> float:
    try:
        return float(json.loads(path.read_text()).get("seconds", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def _write_sweep(out: Path, config: dict, trials: list[Trial], records: dict, seconds: float, mode: str) -> dict:
    criterion = config["criterion"]
    mode_sign = 1 if criterion.get("mode", "max") == "max" else -1
    done = [records[t.index] for t in trials if t.index in records]
    ranked = sorted((r for r in done if r.get("value") is not None), key=lambda r: -mode_sign * r["value"])
    varied = sorted({k for t in trials for k in t.flags if len({json.dumps(u.flags.get(k)) for u in trials}) > 1})
    sweep = {
        "kind": "experiment" if "experiment" in config else "train",
        "target": config.get("experiment") or config.get("train"),
        "criterion": {"metric": criterion["metric"], "mode": criterion.get("mode", "max")},
        "mode": mode,
        "n_trials": len(trials),
        "n_finished": len(done),
        "varied": varied,
        "trials": done,
        "ranking": [r["index"] for r in ranked],
        "best": ranked[0] if ranked else None,
        "config": config,
        "seconds": round(seconds, 1),
    }
    atomic_write(out / "sweep.json", lambda f: f.write(json.dumps(sweep, indent=2).encode()))
    table = ranking_table(sweep)
    atomic_write(out / "ranking.md", lambda f: f.write(table.encode()))
    return sweep


def ranking_table(sweep: dict) -> str:
    """The ranked trials as a Markdown table (finished trials without a value last)."""
    varied = sweep["varied"]
    metric = sweep["criterion"]["metric"]
    metric = metric if isinstance(metric, str) else ".".join(map(str, metric))
    head = ["rank", "trial", f"{metric} ({sweep['criterion']['mode']})", *varied, "seconds", "folder"]
    order = sweep["ranking"] + [r["index"] for r in sweep["trials"] if r["index"] not in sweep["ranking"]]
    by_index = {r["index"]: r for r in sweep["trials"]}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, index in enumerate(order, 1):
        r = by_index[index]
        value = "failed" if r.get("status") == "failed" else ("-" if r.get("value") is None else f"{r['value']:.4g}")
        cells = [
            str(rank) if r.get("value") is not None else "-",
            str(index),
            value,
            *(str(r["flags"].get(k, "")) for k in varied),
            f"{r.get('seconds', 0):.0f}",
            Path(r["run_dir"]).name,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- Ray
def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray() -> None:
    if not ray_available():
        raise UserError(
            "--ray and --address need Ray Tune: pip install 'robustrep[sweep]' (or drop them to run "
            "the trials one after another here)"
        )


def _run_on_ray(config: dict, trials: list[Trial], out: Path, device, address, cpus_per_trial: int) -> dict:
    """Each unfinished trial as one Ray Tune trial (a grid over trial indices: the sweep's own plan, so the
    local loop and Ray run the same trials). Workers write the trial folders; the records are read back
    from trial.json, so `out` must be on a file system every worker sees."""
    import ray
    from ray import tune

    todo = [t for t in trials if not _finished(out / t.name / "trial.json")]
    if todo:
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False) if address else ray.init(
                num_cpus=cpus_per_trial * len(todo), include_dashboard=False, log_to_driver=False
            )
        by_index = {t.index: t for t in todo}

        def trainable(params):
            import torch

            torch.set_num_threads(cpus_per_trial)
            record = run_trial(config, by_index[params["index"]], out, device, progress=False)
            return {"value": record.get("value"), "status": record["status"]}

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            param_space={"index": tune.grid_search([t.index for t in todo])},
            run_config=_ray_run_config(out),
        )
        tuner.fit()
        if started:
            ray.shutdown()
    records = {}
    for t in trials:
        path = out / t.name / "trial.json"
        if not path.exists():
            raise UserError(f"Ray finished without {path}: see the trial's error under {out / 'ray'}")
        records[t.index] = json.loads(path.read_text())
    return records


def _finished(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def _ray_run_config(out: Path):
    try:
        from ray.tune import RunConfig  # Ray >= 2.7
    except ImportError:  # older Ray
        from ray.air import RunConfig
    return RunConfig(storage_path=str(out / "ray"), name="tune", verbose=0)
