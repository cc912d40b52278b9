"""Resume survives a kill at any instant (issue 8), and a run folder verifies itself.

A short `digits` run is killed (os._exit, like kill -9: no cleanup) at every atomic write it makes, both
with the temp file written but not renamed and just after the rename, then resumed (`--resume`, or a
plain rerun where nothing was checkpointed yet). Every file must then equal the uninterrupted run's,
timings aside. The kill comes from the hook in `utils.atomic_write` (ROBUSTREP_KILL_AT_WRITE), in a
forked child so that it costs no interpreter start. The default run takes a spread of kill points; the
exhaustive walk over all of them is marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from robustrep import manifest, utils
from robustrep.cli import main
from robustrep.errors import UserError
from robustrep.runs import read_metrics

TRAIN = [
    "train",
    "vae",
    "--dataset",
    "digits",
    "--epochs",
    "3",
    "--subset",
    "120",
    "--batch-size",
    "40",
    "--latent-dim",
    "2",
    "--hidden",
    "8",
    "--no-progress",
    "--device",
    "cpu",
]
TIMING_KEYS = ("seconds", "train_seconds")


def in_child(argv, env: dict) -> int:
    """Run `robustrep ARGV` in a forked child with `env` set; its exit status (137 when the hook killed it)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.environ.update(env)
            utils._writes["count"] = 0  # the parent's writes do not count
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = main(argv)
        finally:
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and how many atomic writes it makes."""
    out = tmp_path_factory.mktemp("kill") / "reference"
    os.environ["ROBUSTREP_KILL_AT_WRITE"] = "0:never"  # count the writes, kill at none
    try:
        start = utils._writes["count"]
        assert main([*TRAIN, "--out", str(out)]) == 0
        writes = utils._writes["count"] - start
    finally:
        del os.environ["ROBUSTREP_KILL_AT_WRITE"]
    return out, writes


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same_checkpoint(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert set(sa) == set(sb)
    for key in sa:
        va, vb = sa[key], sb[key]
        if key == "history":
            assert _strip(json.loads(va)) == _strip(json.loads(vb)), a.name
        else:
            _same_tree(va, vb, f"{a.name}:{key}")


def _same_tree(a, b, where):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_run(run: Path, ref: Path) -> None:
    """Every file of `run` equals the reference's, timings aside; the manifest is complete and holds."""
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp")]
    for name in files:
        a, b = run / name, ref / name
        if name.endswith(".pt"):
            _same_checkpoint(a, b)
        elif name == "metrics.jsonl":
            rows = [[_strip(json.loads(line)) for line in p.read_text().splitlines()] for p in (a, b)]
            assert rows[0] == rows[1]
        elif name == manifest.NAME:
            ta, tb = json.loads(a.read_text()), json.loads(b.read_text())
            assert ta["pending"] == {} and set(ta["files"]) == set(tb["files"])
        else:
            assert a.read_bytes() == b.read_bytes(), name
    assert manifest.verify_all(run)  # every listed file matches its digest


def kill_and_resume(tmp_path, k: int, moment: str) -> Path:
    run = tmp_path / f"killed-{k}-{moment}"
    code = in_child([*TRAIN, "--out", str(run)], {"ROBUSTREP_KILL_AT_WRITE": f"{k}:{moment}"})
    assert code == 137, f"the kill at write {k} ({moment}) did not happen (exit {code})"
    if main([*TRAIN, "--out", str(run), "--resume"]) != 0:
        # killed before anything was checkpointed: --resume says so, and a plain rerun starts it
        assert main([*TRAIN, "--out", str(run)]) == 0, f"neither --resume nor a rerun after kill {k} ({moment})"
    return run


def kill_points(fast: bool):
    total = 36  # atomic writes of the reference run (checked in the test against the real count)
    points = [(k, m) for k in range(1, total + 1) for m in ("before", "after")]
    if not fast:
        return [pytest.param(k, m, marks=pytest.mark.slow, id=f"{k}-{m}") for k, m in points]
    # a spread: the first writes (config, before any checkpoint), the middle, the last epoch's
    # best.pt -> last.pt -> metrics, the final weights
    chosen = [
        (1, "after"),
        (4, "before"),
        (6, "after"),
        (11, "after"),
        (16, "before"),
        (27, "after"),
        (29, "after"),  # last.pt replaced, not yet recorded, in the final epoch: no later epoch rewrites it
        (30, "after"),
        (33, "before"),
        (36, "after"),
    ]
    return [pytest.param(k, m, id=f"{k}-{m}") for k, m in chosen]


def test_the_reference_run_makes_the_expected_writes(reference):
    _, writes = reference
    assert writes == 36, "the kill points below assume 36 atomic writes; update kill_points()"


@pytest.mark.parametrize("k, moment", kill_points(fast=True))
def test_kill_then_resume_gives_the_same_files(k, moment, reference, tmp_path, capsys):
    ref, _ = reference
    assert_same_run(kill_and_resume(tmp_path, k, moment), ref)


@pytest.mark.parametrize("k, moment", kill_points(fast=False))
def test_kill_at_every_write_then_resume_gives_the_same_files(k, moment, reference, tmp_path, capsys):
    ref, _ = reference
    assert_same_run(kill_and_resume(tmp_path, k, moment), ref)


# ---- the run folder verifies itself -------------------------------------------------------------------


def _flip(path: Path, offset: int = -50) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name", ["model.safetensors", "checkpoint/last.pt", "checkpoint/best.pt", "config.yaml", "metrics.jsonl"]
)
def test_a_flipped_byte_in_any_run_file_is_an_error_naming_the_file(name, reference, tmp_path, capsys):
    import shutil

    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    _flip(run / name, offset=-2 if name.endswith((".yaml", ".jsonl")) else -50)
    with pytest.raises(UserError, match=name.split("/")[-1]):
        manifest.verify(run / name)
    capsys.readouterr()
    if name == "checkpoint/best.pt":
        return  # best.pt is never loaded by a command; its check is manifest.verify above
    if name == "metrics.jsonl":
        with pytest.raises(UserError, match="metrics.jsonl"):
            read_metrics(run)
        return
    command = (
        [*TRAIN, "--out", str(run), "--resume", "--epochs", "4"]
        if name.startswith("checkpoint/last")
        else ["probe", str(run), "--device", "cpu"]
    )
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name.split("/")[-1] in err[0], err


def test_orphan_temp_files_are_cleaned_on_resume(reference, tmp_path):
    import shutil

    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / ".model.safetensors.abc123.tmp").write_bytes(b"half a file")
    (run / "checkpoint" / ".last.pt.xyz.tmp").write_bytes(b"half a checkpoint")
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0
    assert not list(run.rglob("*.tmp"))
