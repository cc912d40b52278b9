"""Models. Each model owns its loss: `model.loss(x, y=None)` returns a dict of scalars, "loss" minimised."""
from .registry import MODELS, build, register
from .smooth_encoder import SmoothEncoder
from .vae import VAE
from . import classifier  # noqa: F401
from . import autoencoder, info_vae, linear, sparse, wae  # noqa: F401  (the autoencoder zoo, issue 9)
from . import gan  # noqa: F401
from . import ddpm  # noqa: F401
from . import ncsn  # noqa: F401
from . import progan  # noqa: F401

__all__ = ["MODELS", "build", "register", "SmoothEncoder", "VAE"]
