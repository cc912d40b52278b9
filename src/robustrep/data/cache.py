"""Where data sets are cached, and atomic writes (temp file, fsync, rename) so a killed write is never used."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
