"""Where data sets are cached, and atomic writes (temp file, fsync, rename) so a killed write is never used."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..utils import atomic_write


def data_dir() -> Path:
    """`$ROBUSTREP_DATA` if set, else the user's cache folder (`$XDG_CACHE_HOME/robustrep` or ~/.cache/robustrep)."""
    root = os.environ.get("ROBUSTREP_DATA")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "robustrep"


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A SHA-256 over named arrays (name, dtype, shape and bytes), independent of file format."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))
