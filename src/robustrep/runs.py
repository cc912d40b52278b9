"""Run directories (DESIGN.md): `config.yaml` (enough to rebuild the model), `model.safetensors`,
`metrics.jsonl`, `checkpoint/{last,best}.pt`, and for representation models a linear probe
(`probe.safetensors` + `probe.yaml`). Nothing is unpickled: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from . import manifest
from .errors import UserError


def write_yaml(path: Path, data: dict) -> None:
    manifest.write(path, yaml.safe_dump(data, sort_keys=False).encode())


def read_yaml(path) -> dict:
    path = Path(path)
    manifest.verify(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found: is {path.parent} a robustrep run folder?") from None
    except (OSError, UnicodeDecodeError) as err:  # a folder, no permission, not text
        raise UserError(f"{path} cannot be read ({type(err).__name__})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err.__class__.__name__}); fix or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a mapping")
    return data


def save_weights(module: nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    manifest.write(path, save_safetensors(tensors))


def load_weights(module: nn.Module, path: Path) -> nn.Module:
    manifest.verify(path)  # a flipped byte is an error naming the file, not a quietly different model
    try:
        module.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise UserError(f"{path} not found: has training finished? (resume it with --resume)") from None
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise UserError(f"{path} is corrupt or does not match its config ({str(err).splitlines()[0][:120]})") from None
    return module


def check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist: train one with `robustrep train`")
    return run_dir


def load_model(run_dir, device="cpu", ema: bool = False) -> nn.Module:
    """Rebuild the model of a run from config.yaml and load its final weights (or, with `ema`, the moving
    average of its weights that `fit(..., ema_decay=...)` kept)."""
    run_dir = check_run_dir(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    if not isinstance(config.get("model"), str):
        raise UserError(f"{run_dir / 'config.yaml'} names no model: it was not written by `robustrep train`")
    from .models import build  # here, not at the top: models import the trainer, which imports this module

    model = build(config["model"], **config.get("hparams", {}))
    weights = run_dir / ("ema.safetensors" if ema else "model.safetensors")
    if ema and not weights.exists():
        raise UserError(f"{run_dir} kept no moving average: train it with --ema-decay, or drop --ema")
    return load_weights(model, weights).to(device).eval()


def __getattr__(name: str):
    # rr.runs.load_classifier, kept for callers: loading a classifier belongs with the probe (this module is
    # storage only), and importing it here lazily keeps runs free of an import of the evaluation package
    if name == "load_classifier":
        from .evaluation.probe import load_classifier

        return load_classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    manifest.verify(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
