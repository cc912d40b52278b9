"""robustrep: learn representations and generative models, attack them, certify them."""

__version__ = "0.1.0"

import sys as _sys

if _sys.argv and _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("robustrep", "robustrep.exe"):
    # Started as the `robustrep` command: Ctrl-C during the seconds of imports below (torch) is one line
    # and exit code 130, not a traceback. cli.main puts Python's own handler back once it runs.
    import signal as _signal

    def _interrupted_while_starting(signum, frame):
        # os._exit, not SystemExit: an exception raised inside torch's import machinery can surface as
        # another error (a RecursionError, exit code 1, was seen under load); nothing is written yet
        import os

        _sys.stderr.write("robustrep: interrupted while starting\n")
        _sys.stderr.flush()
        os._exit(130)

    _signal.signal(_signal.SIGINT, _interrupted_while_starting)

from . import attacks, certify, data, defenses, divergences, evaluation, models, runs, training, transforms  # noqa: E402  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = [
    "attacks",
    "certify",
    "data",
    "defenses",
    "divergences",
    "evaluation",
    "models",
    "runs",
    "training",
    "transforms",
    "UserError",
    "__version__",
]
