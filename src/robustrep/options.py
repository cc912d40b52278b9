"""Command-line pieces that every command shares, in a leaf module (imports nothing of robustrep but
the error type), so that commands and experiments need not import the CLI itself."""

from __future__ import annotations

import argparse

from .errors import UserError


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command has."""
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, or cuda[:N] (default auto)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch in this process (default: the cores torch sees; "
        "use 1 per process when several share a machine)",
    )


MAX_RADIUS = 1e6  # images live in [0, 1]: a larger radius means nothing more


def parse_radii(text: str, what: str = "--eps") -> list[float]:
    """Comma-separated finite radii >= 0 from a flag, or a UserError naming the flag."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} takes comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 <= v <= MAX_RADIUS for v in values):
        raise UserError(f"{what} needs at least one finite radius in [0, {MAX_RADIUS:g}], got {text!r}")
    return values
