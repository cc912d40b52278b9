"""The `robustrep` command line.

Each sub-command lives in its own module under `robustrep.commands` and exposes
`register(subparsers)`; this file finds them, parses, and turns user errors into one plain line on
stderr with exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shlex
import sys

from .errors import UserError
from .options import add_common_options, parse_radii  # noqa: F401  (re-exported)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (instead of usage + error) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> Parser:
    from . import __version__, commands

    parser = Parser(
        prog="robustrep",
        description="Learn representations and generative models, attack them, certify them. Every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"robustrep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def apply_threads(threads: int | None) -> None:
    """--threads N: torch's intra-op threads in this process (oversubscribed OpenMP threads on a loaded
    machine slow runs by an order of magnitude)."""
    if threads is None:
        return
    from . import validate

    validate.positive(threads, "--threads", integer=True, high=4096)
    import torch

    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()  # imports every command (seconds); Ctrl-C here is robustrep/__init__'s one line
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C -> KeyboardInterrupt -> one line below
    args.command_line = shlex.join(["robustrep", *(sys.argv[1:] if argv is None else argv)])  # for provenance
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None else 0
    finished = False
    try:
        apply_threads(getattr(args, "threads", None))
        if getattr(args, "seed", None) is not None:  # every command's --seed, before any work
            from . import validate

            validate.seed(args.seed, "--seed")
        result = args.func(args)
        finished = True
    except UserError as err:
        sys.stderr.write(f"robustrep {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("robustrep: interrupted; a run with --resume continues from the last checkpoint\n")
        return 130
    finally:
        _end_distributed(finished)
    return result if isinstance(result, int) else 0


def _end_distributed(finished: bool) -> None:
    """Close the process group that a training under torchrun opened (torch warns at exit otherwise).

    After a finished command every rank first meets the others at a barrier: the other ranks finish
    training while rank 0 still evaluates, and a rank that tears its group down (and exits) while a peer
    still holds the group open was seen to abort now and then. After an error no barrier: the other
    ranks may never arrive."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
