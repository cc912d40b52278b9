"""A registry of trainable models: `@register("vae")` on a class, `build("vae", **hparams)` to make one.

The command line builds `robustrep train NAME` from this registry: every keyword argument of a
registered class's `__init__` with a default of type int, float, str or bool becomes a flag.
"""

from __future__ import annotations

from ..errors import UserError

MODELS: dict[str, tuple[type, dict]] = {}


def register(name: str, **preset):
    """Register a class under `name`; `preset` overrides defaults (e.g. beta-vae = VAE with beta=4)."""

    def wrap(cls):
        MODELS[name] = (cls, preset)
        return cls

    return wrap


def build(name: str, **hparams):
    try:
        cls, preset = MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}") from None
    return cls(**{**preset, **hparams})
