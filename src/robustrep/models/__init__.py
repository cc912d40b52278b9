"""Models. Each model owns its loss: `model.loss(x, y=None)` returns a dict of scalars, "loss" minimised."""

from . import (  # noqa: F401  (the autoencoder zoo, issue 9)
    autoencoder,
    classifier,  # noqa: F401
    ddpm,  # noqa: F401
    gan,  # noqa: F401
    info_vae,
    linear,
    ncsn,  # noqa: F401
    progan,  # noqa: F401
    sparse,
    wae,
)
from .registry import MODELS, build, register
from .smooth_encoder import SmoothEncoder
from .vae import VAE

__all__ = ["MODELS", "build", "register", "SmoothEncoder", "VAE"]
