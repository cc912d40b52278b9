"""The two budgets every reproduction has, `--quick` (minutes on a CPU) and the full one, and the
flags that override any of their settings."""

from __future__ import annotations


def add_budget_arguments(parser, budgets: dict[str, dict], helps: dict[str, str] | None = None) -> None:
    """One `--key` flag per setting of the budgets, typed like the quick default; None = not given.
    `helps` says what a setting means, ahead of its two defaults in --help."""
    helps = helps or {}
    for key, default in budgets["quick"].items():
        what = f"{helps[key]}; " if key in helps else ""
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=type(default),
            default=None,
            help=f"{what}override (quick {default}, full {budgets['full'][key]})",
        )


def budget_settings(args, budgets: dict[str, dict]) -> dict:
    """The chosen budget's settings with every given override applied."""
    from .. import validate

    settings = dict(budgets["quick" if args.quick else "full"])
    for key in settings:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
            # every override finite, >= 0 and below a limit no CPU or GPU budget reaches (refused before any
            # work); each reproduction checks its own lower limits (epochs >= 1, ...) in settings_from
            flag = f"--{key.replace('_', '-')}"
            if isinstance(settings[key], bool) or not isinstance(settings[key], (int, float)):
                continue
            validate.nonnegative(settings[key], flag, integer=isinstance(settings[key], int), high=MAX_SETTING)
    return settings


MAX_SETTING = 10**7
