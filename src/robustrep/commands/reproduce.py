"""`robustrep reproduce NAME`: one command per paper figure or table (see robustrep.experiments)."""
from __future__ import annotations

import importlib
import pkgutil

from .. import experiments


def register(sub) -> None:
    from ..cli import add_common_options
    p = sub.add_parser("reproduce", help="reproduce a paper's figure or table in one command",
                       description="Reproduce a result: trains, evaluates, writes results.json and figures to --out.")
    which = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(p))
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{experiments.__name__}.{info.name}")
        if not hasattr(module, "NAME"):
            continue
        ep = which.add_parser(module.NAME, help=module.HELP, description=(module.__doc__ or module.HELP))
        ep.add_argument("--quick", action="store_true", help="a small budget that runs in minutes on a CPU")
        ep.add_argument("--out", default=f"runs/{module.NAME}", help=f"output folder (default runs/{module.NAME})")
        module.add_arguments(ep)
        add_common_options(ep)
        ep.set_defaults(func=module.run)
    p.set_defaults(func=lambda args: p.print_help() or 2)
