"""robustrep.validate: every check refuses what it must with one line, and passes what it must."""

import math
import os

import numpy as np
import pytest
import torch

from robustrep import validate as v
from robustrep.errors import UserError

BAD_NUMBERS = [math.nan, math.inf, -math.inf, "1", None, True, [1.0], torch.ones(2)]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_number_refuses_non_finite_and_wrong_type(bad):
    with pytest.raises(UserError, match="--lr must be a number") as err:
        v.number(bad, "--lr")
    assert "\n" not in str(err.value)


def test_number_ranges_and_conversions():
    assert v.number(3, "a") == 3.0 and isinstance(v.number(3, "a"), float)
    assert v.number(torch.tensor(0.5), "a") == 0.5
    assert v.number(np.float32(0.25), "a") == 0.25
    assert v.number(np.int64(4), "a", integer=True) == 4
    assert v.number(0, "a", low=0) == 0.0
    with pytest.raises(UserError, match="a must be a number > 0, got 0"):
        v.number(0, "a", low=0, low_open=True)
    assert v.number(1, "a", high=1) == 1.0
    with pytest.raises(UserError, match="< 1"):
        v.number(1, "a", high=1, high_open=True)
    with pytest.raises(UserError, match="an integer"):
        v.number(2.0, "n", integer=True)
    with pytest.raises(UserError, match="an integer"):
        v.number(2.5, "n", integer=True)


@pytest.mark.parametrize(
    "fn, ok, bad",
    [
        (lambda x: v.positive(x, "k"), [1e-9, 3], [0, -1, math.nan, math.inf]),
        (lambda x: v.positive(x, "k", integer=True), [1, 10**6], [0, -5, 1.5, math.nan]),
        (lambda x: v.positive(x, "k", integer=True, high=100), [100], [101, 10**11]),
        (lambda x: v.nonnegative(x, "k"), [0, 2.5], [-1e-9, math.inf]),
        (lambda x: v.probability(x, "p"), [0, 0.5, 1], [-0.1, 1.1, math.nan]),
        (lambda x: v.probability(x, "p", open_low=True, open_high=True), [0.5], [0, 1]),
        (lambda x: v.seed(x), [0, 2**63 - 1], [-1, 2**64, 2**70, 1.0]),
        (lambda x: v.count(x, "--n"), [0, 7], [-5, -1, 2.0]),
    ],
)
def test_bounded_helpers(fn, ok, bad):
    for x in ok:
        assert fn(x) == x
    for x in bad:
        with pytest.raises(UserError):
            fn(x)


def test_choice():
    assert v.choice("l2", "--norm", ["linf", "l2"]) == "l2"
    with pytest.raises(UserError, match="--norm must be one of linf, l2, got 'l3'"):
        v.choice("l3", "--norm", ["linf", "l2"])


def test_paths(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert v.existing_dir(tmp_path, "RUN") == tmp_path
    with pytest.raises(UserError, match="does not exist"):
        v.existing_dir(tmp_path / "nope", "RUN")
    with pytest.raises(UserError, match="is not a folder"):
        v.existing_dir(f, "RUN")
    assert v.readable_file(f, "--config") == f
    with pytest.raises(UserError, match="is not a file"):
        v.readable_file(tmp_path, "--config")
    with pytest.raises(UserError, match="does not exist"):
        v.readable_file(tmp_path / "nope", "--config")
    # an output folder: existing folder, or a new path below a writable folder; never a file
    assert v.output_dir(tmp_path, "--out") == tmp_path
    assert v.output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    with pytest.raises(UserError, match="is an existing file"):
        v.output_dir(f, "--out")
    with pytest.raises(UserError, match="is a file"):
        v.output_dir(f / "sub", "--out")
    assert v.output_file(tmp_path / "new.json", "--out") == tmp_path / "new.json"
    with pytest.raises(UserError, match="is a folder"):
        v.output_file(tmp_path, "--out")


def test_output_dir_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    # root passes os.access on a chmod 555 folder, so the permission answer is simulated here
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(UserError, match="cannot write to"):
        v.output_dir(tmp_path / "run", "--out")


def test_images_and_labels():
    x = torch.rand(4, 1, 8, 8)
    assert v.images(x, "x", shape=(1, 8, 8)) is x
    for bad, msg in [
        (x.double(), "float32"),
        (x.half(), "float32"),
        ((x * 255).long(), "float32"),
        (x.numpy(), "torch.Tensor"),
        (x[0, 0, 0], "expected a batch"),
        (x + 1, r"\[0, 1\]"),
        (x.masked_fill(x > 0.5, math.nan), "NaN"),
    ]:
        with pytest.raises(UserError, match=msg):
            v.images(bad, "x")
    with pytest.raises(UserError, match=r"expected \[batch, 1, 8, 8\]"):
        v.images(torch.rand(4, 64), "x", shape=(1, 8, 8))
    with pytest.raises(UserError, match="empty"):
        v.images(x[:0], "x", allow_empty=False)
    y = torch.tensor([0, 1, 2, 9])
    assert v.labels(y, 4, num_classes=10) is y
    with pytest.raises(UserError, match="10 classes"):
        v.labels(torch.tensor([0, 1, 2, 99]), 4, num_classes=10)
    with pytest.raises(UserError, match="10 classes"):
        v.labels(torch.tensor([0, -1, 2, 3]), 4, num_classes=10)
    with pytest.raises(UserError, match="integer tensor"):
        v.labels(y.float(), 4)
    with pytest.raises(UserError, match="expected \\[3\\]"):
        v.labels(y, 3)


def test_image_shape_and_width():
    assert v.image_shape([1, 8, 8]) == (1, 8, 8)
    for bad in [(8, 8), (1, 8, 8, 1), (0, 8, 8), (1, -8, 8), (1, 8.0, 8), 5, "abc"]:
        with pytest.raises(UserError, match="input_shape must be"):
            v.image_shape(bad)
    assert v.width(200, "hidden") == 200
    for bad in [0, -3, 10**11, 2.5, math.nan]:
        with pytest.raises(UserError, match="hidden must be an integer >= 1 and <= 65536"):
            v.width(bad, "hidden")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [0, 1234, 100 * 784 - 1])
@pytest.mark.parametrize("unit_range", [True, False])
def test_images_find_a_non_finite_value_anywhere_in_the_batch(bad, where, unit_range):
    x = torch.rand(100, 1, 28, 28)
    x.view(-1)[where] = bad
    with pytest.raises(UserError, match="x contains NaN or infinite values"):
        v.images(x, "x", unit_range=unit_range)


def test_images_check_the_unit_range_only_when_asked():
    x = torch.rand(4, 1, 8, 8)
    assert v.images(x, "x") is x
    x[1, 0, 2, 3] = 1.5
    with pytest.raises(UserError, match=r"x must lie in \[0, 1\] \(got min 0.*, max 1.5\)"):
        v.images(x, "x")
    assert v.images(x - 3, "x", unit_range=False) is not None
    assert len(v.images(torch.zeros(0, 1, 8, 8), "x")) == 0
