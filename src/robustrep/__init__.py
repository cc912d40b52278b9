"""robustrep: learn representations and generative models, attack them, certify them."""
__version__ = "0.1.0"

from . import attacks, certify, data, divergences, evaluation, models, runs, training  # noqa: E402
from . import defenses, transforms  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = ["attacks", "certify", "data", "defenses", "divergences", "evaluation", "models", "runs", "training",
           "transforms", "UserError",
           "__version__"]
