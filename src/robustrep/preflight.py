"""Checks a command makes before it does any work: the run folder and what it holds, the folder it will
write to, and whether the data fit the model. Each raises `UserError` with one line; numbers and paths
themselves are checked by `robustrep.validate`.

    config = preflight.run_config(args.run)                 # RUN exists and its config.yaml rebuilds a model
    preflight.writable(Path(args.run) / "evaluation.json")  # before the attack, not after it
    preflight.data_fit(X, config, dataset)                  # --dataset mnist on a digits run is refused
"""

from __future__ import annotations

import inspect
from pathlib import Path

from . import validate
from .errors import UserError


def run_config(run, name: str = "RUN") -> dict:
    """The run's config.yaml, checked: a readable run folder whose config names a registered model with
    hyper-parameters that model accepts and a training section naming its data set."""
    from .models import MODELS
    from .runs import read_yaml

    run = validate.existing_dir(run, name)
    path = run / "config.yaml"
    if path.exists():
        validate.readable_file(path, f"{name} config")
    config = read_yaml(path)
    model = config.get("model")
    if not isinstance(model, str) or model not in MODELS:
        raise UserError(f"{path}: 'model' must name a registered model ({', '.join(sorted(MODELS))}), got {model!r}")
    hparams = config.get("hparams", {})
    if not isinstance(hparams, dict):
        raise UserError(f"{path}: 'hparams' must be a mapping, got {type(hparams).__name__}")
    cls, _ = MODELS[model]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(hparams) - set(params) - {"self"})
        if unknown:
            raise UserError(f"{path}: {model} has no hyper-parameter {', '.join(map(repr, unknown))}")
    training = config.get("training")
    if not isinstance(training, dict) or not isinstance(training.get("dataset"), str):
        raise UserError(f"{path}: 'training' must be a mapping with the run's 'dataset'")
    return config


def is_encoder(config: dict) -> bool:
    """Whether the run's model is a representation model (has encode), i.e. is attacked through a probe."""
    from .models import MODELS

    return hasattr(MODELS[config["model"]][0], "encode")


def probe_info(run) -> dict:
    """probe.yaml of a run ({} when there is none yet), checked for the fields the probe is rebuilt from."""
    from .runs import read_yaml

    path = Path(run) / "probe.yaml"
    if not path.exists():
        return {}
    info = read_yaml(path)
    for key in ("in_features", "num_classes"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: {key!r} must be a whole number >= 1, got {value!r}; rerun `robustrep probe`")
    if not isinstance(info.get("dataset", ""), str):
        raise UserError(f"{path}: 'dataset' must be a name; rerun `robustrep probe`")
    return info


def writable(path, name: str = "output") -> Path:
    """A file the command will write at the end: refused now if its folder cannot take it."""
    return validate.output_file(path, name)


def data_fit(X, config: dict, dataset: str, flag: str = "--dataset") -> None:
    """The images of `dataset` have the shape the run's model was built for."""
    expected = config.get("hparams", {}).get("input_shape")
    if expected is not None and tuple(X.shape[1:]) != tuple(expected):
        trained = config["training"]["dataset"]
        raise UserError(
            f"{flag} {dataset} has images of shape {list(X.shape[1:])}, the run's model takes "
            f"{list(expected)} (it was trained on {trained})"
        )
