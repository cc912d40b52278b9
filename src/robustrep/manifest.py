"""A run folder that verifies itself: `manifest.json` holds the SHA-256 of every file the run writes
(config, weights, checkpoints, metrics, probe), and every load checks the file against it, so a flipped
byte is an error naming the file, never a quietly different model.

Kill-safe by construction. A file is written in three atomic steps: the manifest first records the new
digest as *pending*, then the file is replaced, then the manifest moves the digest to *files*. A kill
between any two steps leaves a file whose digest is either the recorded one or the pending one, and
both are accepted; anything else is damage. Orphan `.tmp` files of killed writes are removed when a run
is started or resumed (`clean_orphans`).

Runs written before manifests existed have none and are loaded unchecked; a file the manifest does not
list (written by another tool) is not checked either.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import UserError
from .utils import atomic_write

NAME = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_root(path) -> Path | None:
    """The run folder a file belongs to: the folder holding config.yaml at or one level above the file's
    folder (checkpoint/last.pt belongs to the run above it); None outside a run."""
    path = Path(path)
    if path.name == "config.yaml":
        return path.parent
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").exists() or (folder / NAME).exists():
            return folder
    return None


def _read(root: Path) -> dict:
    path = root / NAME
    if not path.exists():
        return {"format": 1, "files": {}, "pending": {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("files"), dict) or not isinstance(data.get("pending", {}), dict):
            raise ValueError("no files table")
    except (ValueError, OSError) as err:
        raise UserError(
            f"{path} is damaged ({type(err).__name__}): the run's files cannot be verified; "
            "delete the run folder and start again"
        ) from None
    data.setdefault("pending", {})
    return data


def _write_manifest(root: Path, data: dict) -> None:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    atomic_write(root / NAME, lambda f: f.write(text.encode()))


def write(path, data: bytes) -> None:
    """Write `data` to `path` atomically, recorded in the run's manifest when `path` is inside a run."""
    path = Path(path)
    root = run_root(path)
    if root is None:
        atomic_write(path, lambda f: f.write(data))
        return
    root.mkdir(parents=True, exist_ok=True)
    key = path.relative_to(root).as_posix()
    digest = sha256(data)
    table = _read(root)
    table["pending"][key] = digest
    _write_manifest(root, table)
    atomic_write(path, lambda f: f.write(data))
    table["files"][key] = digest
    del table["pending"][key]
    _write_manifest(root, table)


def verify(path) -> None:
    """Raise UserError if `path` is listed in its run's manifest with another digest."""
    path = Path(path)
    root = run_root(path)
    if root is None or not (root / NAME).exists() or not path.is_file():
        return
    table = _read(root)
    key = path.relative_to(root).as_posix()
    accepted = {table["files"].get(key), table["pending"].get(key)} - {None}
    if not accepted:
        return
    if sha256(path.read_bytes()) not in accepted:
        raise UserError(
            f"{path} does not match its SHA-256 in {root / NAME}: the file was changed or damaged "
            "after it was written; restore it, or delete the run and train again"
        )


def verify_all(run_dir) -> list[str]:
    """Check every file the manifest lists (that exists); returns the names checked."""
    root = Path(run_dir)
    if not (root / NAME).exists():
        return []
    table = _read(root)
    checked = []
    for key in sorted(set(table["files"]) | set(table["pending"])):
        if (root / key).is_file():
            verify(root / key)
            checked.append(key)
    return checked


def settle(run_dir) -> None:
    """Finish the manifest updates a kill interrupted: a pending digest that the file now has becomes its
    recorded digest; one the file does not have (the kill came before the file was replaced) is dropped.
    A file matching neither is left for verify() to report."""
    root = Path(run_dir)
    if not (root / NAME).exists():
        return
    table = _read(root)
    if not table["pending"]:
        return
    for key, digest in list(table["pending"].items()):
        path = root / key
        actual = sha256(path.read_bytes()) if path.is_file() else None
        if actual == digest:
            table["files"][key] = digest
            del table["pending"][key]
        elif actual == table["files"].get(key) or (actual is None and key not in table["files"]):
            del table["pending"][key]
    _write_manifest(root, table)


def clean_orphans(run_dir) -> list[Path]:
    """Remove the temp files that killed atomic writes left behind in the run folder (and checkpoint/), and
    settle the manifest updates the kill interrupted."""
    root = Path(run_dir)
    settle(root)
    removed = []
    for folder in (root, root / "checkpoint"):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            try:
                os.remove(tmp)
                removed.append(tmp)
            except OSError:
                pass
    return removed
