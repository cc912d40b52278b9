"""`robustrep reproduce NAME`: one command per paper figure or table (see robustrep.experiments)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

from .. import experiments, report, validate
from ..options import add_common_options
from ..utils import atomic_write, is_main_process


def experiment_modules() -> dict:
    """NAME -> module for every reproduction in robustrep.experiments (a module with a NAME)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{experiments.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found[module.NAME] = module
    return found


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a paper's figure or table in one command",
        description="Reproduce a result: trains, evaluates, writes results.json and figures to --out.",
    )
    which = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(p))
    for name, module in experiment_modules().items():
        ep = which.add_parser(name, help=module.HELP, description=(module.__doc__ or module.HELP))
        ep.add_argument("--quick", action="store_true", help="a small budget that runs in minutes on a CPU")
        ep.add_argument("--out", default=f"runs/{name}", help=f"output folder (default runs/{name})")
        ep.add_argument("--no-progress", action="store_true", help="no progress bars")
        module.add_arguments(ep)
        add_common_options(ep)
        ep.set_defaults(func=_runner(module))
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _runner(module):
    def run(args) -> int:
        out = validate.output_dir(args.out, "--out")
        settings = module.settings_from(args)  # every value checked here, before any work
        report.code_version()  # read now and kept: the results name the code this run started with
        module.run(settings, out=out, device=args.device, progress=not args.no_progress)
        if is_main_process():  # under torchrun the other ranks may finish first: rank 0 writes the file
            stamp_provenance(out / "results.json", getattr(args, "command_line", None))
        return 0

    return run


def stamp_provenance(path: Path, command: str | None = None) -> None:
    """Every results.json states how it was made: the command line, the code version and the time (the
    settings and the wall time, resumed parts included, are the experiment's own keys)."""
    if not path.exists():
        return
    results = json.loads(path.read_text())
    if isinstance(results, dict) and "provenance" not in results:
        results["provenance"] = report.provenance(command)
        atomic_write(path, lambda f: f.write(json.dumps(results, indent=2).encode()))
