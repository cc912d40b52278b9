"""The `robustrep` command line.

Each sub-command lives in its own module under `robustrep.commands` and exposes
`register(subparsers)`; this file finds them, parses, and turns user errors into one plain line on
stderr with exit code 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (instead of usage + error) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command has."""
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, or cuda[:N] (default auto)")


def parse_radii(text: str, what: str = "--eps") -> list[float]:
    """Comma-separated radii >= 0 from a flag, or a UserError naming the flag."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} takes comma-separated numbers, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise UserError(f"{what} needs at least one radius >= 0, got {text!r}")
    return values


def build_parser() -> Parser:
    from . import __version__, commands

    parser = Parser(prog="robustrep", description="Learn representations and generative models, attack them, "
                    "certify them. Every command has --help.")
    parser.add_argument("--version", action="version", version=f"robustrep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None else 0
    try:
        result = args.func(args)
    except UserError as err:
        sys.stderr.write(f"robustrep {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("robustrep: interrupted; a run with --resume continues from the last checkpoint\n")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
