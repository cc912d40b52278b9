"""`robustrep train` under torchrun: 2 CPU processes (gloo) write one complete run folder, resume, and
reach the loss of one process with the same global batch (issue 7)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import robustrep as rr

ARGS = ["train", "vae", "--dataset", "digits", "--latent-dim", "4", "--hidden", "32", "--no-progress", "--seed", "3"]


def torchrun(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "robustrep",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_two_processes_write_one_run_resume_and_match_one_process(tmp_path, digits):
    first = torchrun(*ARGS, "--out", "ddp", "--epochs", "1", "--batch-size", "32", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = torchrun(*ARGS, "--out", "ddp", "--epochs", "3", "--batch-size", "32", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint",
        "config.yaml",
        "manifest.json",
        "metrics.jsonl",
        "model.safetensors",
    ]
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["best.pt", "last.pt"]  # no .tmp left
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]  # written once, by rank 0 only
    assert resumed.stdout.count("run: ddp") == 1  # one summary, from rank 0

    # one process with the same global batch (2 x 32) on the same data and seed
    rr.utils.seed_everything(3)
    single = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=32)
    history = rr.training.fit(single, digits[0], epochs=3, batch_size=64, seed=3, progress=False)
    # the shards see the same examples per step, but draw different noise: equal within 1%
    assert lines[-1]["loss"] == pytest.approx(history[-1]["loss"], rel=0.01)
    assert lines[-1]["loss"] < 0.99 * lines[0]["loss"]  # and it trained


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_reproduce_under_torchrun_trains_on_every_rank_and_evaluates_once(tmp_path, digits):
    tiny = ["--dataset", "digits", "--quick", "--epochs", "1", "--n-eval", "40", "--radii", "0.1"]
    tiny += ["--attack-steps", "3", "--restarts", "1", "--select-steps", "2", "--no-progress", "--out", "se"]
    done = torchrun("reproduce", "smooth-encoders", *tiny, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # each model's attack is reported once (rank 0), not once per rank
    assert done.stderr.count("vae: eps 0.1: adversarial accuracy") == 1
    assert done.stderr.count("se: eps 0.1: adversarial accuracy") == 1
    results = json.loads((tmp_path / "se" / "results.json").read_text())
    assert set(results["models"]) == {"vae", "se"} and "provenance" in results
    for name in ("vae", "se"):  # both ranks trained each model: its metrics were written once, by rank 0
        lines = (tmp_path / "se" / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_a_figure_command_under_torchrun_evaluates_once(tmp_path, digits):
    tiny = ["--dataset", "digits", "--quick", "--epochs", "1", "--n-eval", "40", "--radii", "0.1", "--latent-dim", "4"]
    tiny += ["--attack-steps", "2", "--restarts", "1", "--select-steps", "1", "--no-progress", "--out", "fig"]
    done = torchrun("reproduce", "se-fig7a", *tiny, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "fig" / "results.json").read_text())
    labels = set(results["models"])
    assert len(labels) == 3  # the VAE, the SE with random selection, the SE with PGD selection
    for label in labels:  # each variant attacked once (rank 0), not once per rank
        assert done.stderr.count(f"{label} (digit): eps 0.1: adversarial accuracy") == 1, done.stderr[-2000:]
