"""`robustrep train MODEL`: train any registered model; its hyper-parameters become flags."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import yaml

from .. import data, models, validate
from ..errors import UserError
from ..runs import read_yaml
from ..training import LR_SCHEDULES, fit, is_main_process, train_seconds
from ..utils import resolve_device, seed_everything

FILLED_FROM_DATA = ("input_shape", "num_classes")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def model_hparams(name: str) -> dict:
    """Keyword arguments of a registered model with scalar defaults (preset included)."""
    cls, preset = models.MODELS[name]
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self",) + FILLED_FROM_DATA or p.default is inspect.Parameter.empty:
            continue
        default = preset.get(p.name, p.default)
        if isinstance(default, (bool, int, float, str)):
            params[p.name] = default
    return params


def add_training_options(p) -> None:
    from ..options import add_common_options

    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(data.NAMES)} (default mnist)")
    p.add_argument("--task", default=None, help="label task where a data set has several (color-mnist: digit|color)")
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument(
        "--epochs", type=int, default=None, help="passes over the training set (default 10; with --resume, a new total)"
    )
    p.add_argument("--batch-size", type=int, default=128, help="examples per step (default 128)")
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate of every optimiser the model does not set itself (default 1e-3)",
    )
    p.add_argument(
        "--lr-schedule",
        default="constant",
        choices=LR_SCHEDULES,
        help="learning-rate schedule over the run (default constant)",
    )
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (default 0)")
    p.add_argument("--grad-clip", type=float, default=None, help="clip each step's gradient norm to this (default off)")
    p.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this decay, e.g. 0.999 "
        "(saved as ema.safetensors; default off)",
    )
    p.add_argument("--subset", type=int, default=0, help="train on a fixed random N training images (0: all)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--config", default=None, help="YAML file of flag values (names as in --help, with _ for -)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_options(p)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train a model; writes a run folder "
        "(config.yaml, model.safetensors, metrics.jsonl, checkpoint/). MODEL --help lists its options.",
    )
    which = p.add_subparsers(dest="model", metavar="MODEL", parser_class=type(p))
    for name in sorted(models.MODELS):
        cls, _ = models.MODELS[name]
        doc = (inspect.getdoc(sys.modules[cls.__module__]) or name).splitlines()[0]
        mp = which.add_parser(name, help=doc, description=doc)
        group = mp.add_argument_group(f"{name} hyper-parameters")
        for key, default in model_hparams(name).items():
            kind = _parse_bool if isinstance(default, bool) else type(default)
            explain = getattr(cls, "HPARAM_HELP", {}).get(key, "")
            group.add_argument(
                f"--{key.replace('_', '-')}",
                dest=key,
                type=kind,
                default=default,
                help=f"{explain} (default {default})".strip(),
            )
        add_training_options(mp)
        mp.set_defaults(func=train)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _apply_config_file(args) -> None:
    if not args.config:
        return
    values = read_yaml(Path(args.config))
    for key, value in values.items():
        key = key.replace("-", "_")
        if not hasattr(args, key):
            raise UserError(f"{args.config}: unknown option {key!r} for `train {args.model}`")
        setattr(args, key, value)


LOOP_SETTINGS = ("lr_schedule", "warmup_steps", "grad_clip", "ema_decay")


def _resumed_config(out: Path, epochs: int | None) -> tuple[str, dict, dict]:
    config = read_yaml(out / "config.yaml")
    missing = [k for k in ("model", "hparams", "training") if not isinstance(config.get(k), (str, dict))]
    if missing:
        raise UserError(f"{out / 'config.yaml'} has no {missing[0]!r}: it was not written by `robustrep train`")
    settings = config["training"]
    if epochs is not None:
        settings["epochs"] = epochs  # a new total; fit refuses one below the epochs already trained
    return config["model"], config["hparams"], settings


def train(args) -> int:
    out = Path(args.out)
    if args.resume:
        name, hparams, settings = _resumed_config(out, args.epochs)
    else:
        _apply_config_file(args)
        name = args.model
        settings = {
            "dataset": args.dataset,
            "task": args.task,
            "epochs": 10 if args.epochs is None else args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "subset": args.subset,
            **{k: getattr(args, k) for k in LOOP_SETTINGS},
        }
        hparams = {k: getattr(args, k) for k in model_hparams(name)}
    # the values the loop reads, checked before the data are loaded (fit checks them again for the API)
    validate.output_dir(out, "--out")
    validate.count(settings.get("subset", 0), "--subset")
    validate.nonnegative(settings.get("epochs"), "--epochs", integer=True, high=10**6)
    validate.positive(settings.get("batch_size"), "--batch-size", integer=True)
    validate.positive(settings.get("lr"), "--lr", high=1e3)
    validate.seed(settings.get("seed"), "--seed")
    X, y = data.load(settings["dataset"], "train", task=settings["task"])
    X, y = data.random_subset(X, y, settings["subset"], settings["seed"])
    if not args.resume:
        cls, _ = models.MODELS[name]
        accepted = inspect.signature(cls.__init__).parameters
        if "input_shape" in accepted:
            hparams["input_shape"] = list(X.shape[1:])
        if "num_classes" in accepted:
            hparams["num_classes"] = data.num_classes(settings["dataset"], settings["task"])
    seed_everything(settings["seed"])
    model = models.build(name, **hparams)
    config = {"model": name, "hparams": hparams, "training": settings}
    history = fit(
        model,
        X,
        y,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        run_dir=out,
        seed=settings["seed"],
        device=resolve_device(args.device),
        resume=args.resume,
        progress=not args.no_progress,
        config=config,
        **{k: settings[k] for k in LOOP_SETTINGS if settings.get(k) is not None},
    )
    if is_main_process():
        last = history[-1] if history else {}
        summary = {
            "run": str(out),
            "epochs": settings["epochs"],
            "train_seconds": train_seconds(history),
            **{k: round(v, 4) for k, v in last.items() if isinstance(v, float) and k != "seconds"},
        }
        print(yaml.safe_dump(summary, sort_keys=False).strip())
    return 0
