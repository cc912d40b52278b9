"""`robustrep report DIR [DIR ...]`: several runs of `robustrep reproduce` side by side in one HTML page."""

from __future__ import annotations

from pathlib import Path

from .. import report, validate
from ..errors import UserError


def register(sub) -> None:
    from ..options import add_common_options

    p = sub.add_parser(
        "report",
        help="put several reproduce runs side by side in one self-contained HTML page",
        description="Read each run folder's report.html (or its results.json) and write one page: "
        "the settings that differ between the runs, then each run's table, figures and provenance "
        "(command, code version, time) in its own column. Open the page in any browser.",
    )
    p.add_argument("runs", nargs="+", metavar="DIR", help="run folders written by `robustrep reproduce ... --out DIR`")
    p.add_argument("--out", default="comparison.html", help="the page to write (default comparison.html)")
    add_common_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    out = validate.output_file(args.out, "--out")
    for d in args.runs:
        validate.existing_dir(d, "DIR")
    if any(out.resolve() == (Path(d) / "report.html").resolve() for d in args.runs):
        raise UserError(f"--out {out} would overwrite a run's own report.html: choose another file")
    report.write_comparison(out, args.runs)
    print(f"wrote {out} ({len(args.runs)} runs)")
    return 0
