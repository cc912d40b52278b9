"""A self-contained HTML report of a reproduction: its settings, its results table and its figures
(embedded as base64, so the one file can be mailed or archived)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .utils import atomic_write


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(path, title: str, summary: str, header: list[str], rows: list[list], figures: list[Path],
               settings: dict) -> Path:
    """Write `path` (an .html file) with a results table, the figures inline and the settings."""
    images = "".join(
        f'<figure><img alt="{html.escape(Path(f).name)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(f).read_bytes()).decode()}"><figcaption>{html.escape(Path(f).name)}</figcaption></figure>'
        for f in figures if Path(f).exists())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{_table(rows, header)}{images}
<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre></body></html>"""
    atomic_write(path, lambda f: f.write(page.encode()))
    return Path(path)
