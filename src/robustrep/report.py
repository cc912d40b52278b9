"""Self-contained HTML reports: one page per run (its settings, results table, figures embedded as base64,
and provenance: the command, the code version, the time), and a page that puts several runs side by
side (`robustrep report DIR [DIR ...]`).

Each run page also carries its content as JSON (`<script type="application/json" id="robustrep-report">`),
so that the side-by-side page is built from the runs' own tables rather than from scraped HTML.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import json
import subprocess
import sys
from pathlib import Path

from .errors import UserError
from .utils import atomic_write

STYLE = """body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left;white-space:nowrap}img{max-width:100%}
figure{margin:1em 0}figcaption{color:#666;font-size:.9em}.prov{color:#555;font-size:.9em}
.runs{display:grid;gap:1.5em;grid-template-columns:repeat(auto-fit,minmax(22em,1fr))}
.run{border:1px solid #ddd;border-radius:6px;padding:0 1em;overflow-x:auto}.diff{background:#fff3c4}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}"""
DATA_ID = "robustrep-report"


@functools.cache
def code_version() -> str:
    """`git describe --always --dirty` of the source tree when it is a git checkout, else the package version.
    Read once per process: a long run reports the code it started with, not the tree as it is when it ends."""
    from . import __version__

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__} (git {out.stdout.strip()})"
    except (OSError, subprocess.SubprocessError):
        pass
    return str(__version__)


def provenance(command: str | None = None) -> dict:
    """What made a page: the command line, the code version and the time (UTC, ISO 8601)."""
    if command is None:
        command = " ".join(["robustrep" if i == 0 else a for i, a in enumerate(sys.argv)]) if sys.argv else ""
    return {
        "command": command,
        "code_version": code_version(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path) -> str:
    name = html.escape(path.name)
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def _provenance_html(prov: dict) -> str:
    return (
        '<p class="prov">'
        + "<br>".join(
            f"{html.escape(k.replace('_', ' '))}: <code>{html.escape(str(v))}</code>" for k, v in prov.items()
        )
        + "</p>"
    )


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def write_html(
    path,
    title: str,
    summary: str,
    header: list[str],
    rows: list[list],
    figures: list[Path],
    settings: dict,
    prov: dict | None = None,
) -> Path:
    """Write `path` (an .html file) with a results table, the figures inline (those that exist), the
    settings and the provenance (`provenance()` of this process unless given)."""
    prov = provenance() if prov is None else prov
    figures = [Path(f) for f in figures if Path(f).exists()]
    data = {
        "title": title,
        "summary": summary,
        "header": [str(h) for h in header],
        "rows": [[str(c) for c in r] for r in rows],
        "figures": [f.name for f in figures],
        "settings": settings,
        "provenance": prov,
    }
    blob = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the script element
    body = (
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{_table(rows, header)}"
        + "".join(_figure(f) for f in figures)
        + f"<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre>"
        + f"<h2>Provenance</h2>{_provenance_html(prov)}"
        + f'<script type="application/json" id="{DATA_ID}">{blob}</script>'
    )
    page = _page(title, body)
    atomic_write(path, lambda f: f.write(page.encode()))
    return Path(path)


def read_run(folder) -> dict:
    """The report content of a run folder: from its report.html's JSON, else from results.json (its settings
    and its numbers flattened into rows). Figures: the folder's PNGs the page names (or all of them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give run folders written by `robustrep reproduce`")
    page = folder / "report.html"
    marker = f'<script type="application/json" id="{DATA_ID}">'
    if page.exists() and marker in (text := page.read_text(errors="replace")):
        blob = text.split(marker, 1)[1].split("</script>", 1)[0]
        try:
            data = json.loads(blob)
        except json.JSONDecodeError:
            raise UserError(f"{page} is damaged (its report data is not JSON): run the experiment again") from None
        data["figures"] = [folder / f for f in data.get("figures", []) if (folder / f).exists()]
        return data
    results = folder / "results.json"
    if not results.exists():
        raise UserError(f"{folder} holds neither report.html nor results.json: is it a `robustrep reproduce` --out?")
    try:
        res = json.loads(results.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{results} is not valid JSON: run the experiment again") from None
    if not isinstance(res, dict):
        raise UserError(f"{results} does not hold a results object")
    flat = [[k, v] for k, v in _flatten(res) if not k.startswith("settings.")]
    return {
        "title": folder.name,
        "summary": f"from {results.name} (no report.html)",
        "header": ["result", "value"],
        "rows": flat,
        "figures": sorted(folder.glob("*.png")),
        "settings": res.get("settings", {}),
        "provenance": {},
    }


def _flatten(obj, prefix: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        yield prefix[:-1], obj if not isinstance(obj, float) else f"{obj:.6g}"


def write_comparison(path, folders: list, prov: dict | None = None) -> Path:
    """One page with several runs side by side: the settings that differ between them, then each run's
    table, figures and provenance in its own column."""
    if not folders:
        raise UserError("give at least one run folder")
    runs = [(Path(f), read_run(f)) for f in folders]
    keys = sorted({k for _, r in runs for k in r["settings"]})
    differ = [k for k in keys if len({json.dumps(r["settings"].get(k), sort_keys=True) for _, r in runs}) > 1]
    shown = differ or keys
    head = ["setting", *[str(f) for f, _ in runs]]
    setting_rows = [[k, *(json.dumps(r["settings"].get(k, "")) for _, r in runs)] for k in shown]
    columns = "".join(
        f'<div class="run"><h2>{html.escape(r["title"])}</h2><p class="prov">{html.escape(str(f))}</p>'
        f"<p>{html.escape(r['summary'])}</p>{_table(r['rows'], r['header'])}"
        + "".join(_figure(Path(p)) for p in r["figures"])
        + (_provenance_html(r["provenance"]) if r["provenance"] else "")
        + "</div>"
        for f, r in runs
    )
    prov = provenance() if prov is None else prov
    title = f"{len(runs)} runs side by side"
    body = (
        f"<h1>{html.escape(title)}</h1>"
        + f"<h2>Settings{' that differ' if differ else ''}</h2>{_table(setting_rows, head)}"
        + f'<div class="runs">{columns}</div><h2>Provenance</h2>{_provenance_html(prov)}'
    )
    page = _page(title, body)
    atomic_write(path, lambda f: f.write(page.encode()))
    return Path(path)
