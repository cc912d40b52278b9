"""`robustrep sweep`: the plan (grid x random draws), every trial checked by the CLI's own parser before any
work, the local loop end to end on `digits` (train and reproduce), the ranking, resume (finished trials
skipped, a killed trial continued), and the local Ray mode where Ray is installed."""

from __future__ import annotations

import json

import pytest
import yaml

from robustrep import sweep
from robustrep.cli import main
from robustrep.errors import UserError
from robustrep.runs import read_metrics

TINY_VAE = {"dataset": "digits", "subset": 96, "epochs": 2, "batch_size": 32, "latent_dim": 2, "hidden": 16}


def _config(tmp_path, **over) -> dict:
    config = {
        "train": "vae",
        "fixed": dict(TINY_VAE),
        "grid": {"lr": [1e-3, 3e-2]},
        "criterion": {"metric": "loss", "mode": "min"},
        "out": str(tmp_path / "sweep"),
    }
    config.update(over)
    return config


def _write(tmp_path, config: dict):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_plan_is_the_grid_product_times_seeded_random_draws():
    config = sweep.check_config(
        {
            "experiment": "smooth-encoders",
            "fixed": {"quick": True},
            "grid": {"gamma": [1, 2], "obs_var": [0.1, 1.0]},
            "random": {
                "trials": 3,
                "seed": 5,
                "space": {
                    "select_eps": {"uniform": [0.05, 0.3]},
                    "latent_dim": {"choice": [4, 8]},
                    "lr": {"loguniform": [1e-4, 1e-2]},
                },
            },
            "criterion": {"metric": "models.se.nominal"},
        }
    )
    trials = sweep.plan(config)
    assert len(trials) == 2 * 2 * 3
    assert {(t.flags["gamma"], t.flags["obs_var"]) for t in trials} == {(1, 0.1), (1, 1.0), (2, 0.1), (2, 1.0)}
    assert all(0.05 <= t.flags["select_eps"] <= 0.3 and 1e-4 <= t.flags["lr"] <= 1e-2 for t in trials)
    assert all(t.flags["latent_dim"] in (4, 8) and t.flags["quick"] is True for t in trials)
    assert [t.flags for t in sweep.plan(config)] == [t.flags for t in trials]  # seeded: the same plan again
    config["random"]["seed"] = 6
    assert [t.flags for t in sweep.plan(config)] != [t.flags for t in trials]
    assert sweep.to_argv({"quick": True, "no_x": False, "radii": [0.1, 0.2], "gamma": 3.0}) == [
        "--quick",
        "--radii",
        "0.1,0.2",
        "--gamma",
        "3.0",
    ]


@pytest.mark.parametrize(
    "text, keys",
    [
        ('models.se.adversarial["0.1"]', ["models", "se", "adversarial", "0.1"]),
        ("models.vae.nominal", ["models", "vae", "nominal"]),
        ("a['x.y'][2]", ["a", "x.y", "2"]),
        (["a", 0.1], ["a", "0.1"]),
    ],
)
def test_metric_paths(text, keys):
    assert sweep.metric_path(text) == keys


def test_criterion_value_reads_numbers_and_names_what_is_missing():
    results = {"models": {"se": {"adversarial": {"0.1": 0.25}, "nominal": float("nan")}}}
    assert sweep.criterion_value(results, ["models", "se", "adversarial", "0.1"]) == 0.25
    assert sweep.criterion_value(results, ["models", "se", "nominal"]) is None  # NaN ranks last
    with pytest.raises(UserError, match=r"has no '0.2' \(it has: 0.1\)"):
        sweep.criterion_value(results, ["models", "se", "adversarial", "0.2"])
    with pytest.raises(UserError, match="not a number"):
        sweep.criterion_value(results, ["models", "se"])


BAD_CONFIGS = [
    ({"grid": {"lr": "0.1"}}, "grid.lr must be a non-empty list"),
    ({"grid": {"lr": []}}, "grid.lr must be a non-empty list"),
    ({"experiment": "smooth-encoders"}, "exactly one of"),
    ({"criterion": {"metric": "loss", "mode": "best"}}, "criterion.mode"),
    ({"criterion": {"mode": "min"}}, "needs criterion"),
    ({"criterion": {"metric": 'a["x'}}, "cannot read the metric"),
    ({"fixed": {**TINY_VAE, "out": "elsewhere"}}, "set by the sweep itself"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"random": {"trials": 0, "space": {"lr": {"uniform": [0.1, 0.2]}}}}, "random.trials"),
    ({"random": {"space": {"lr": {"loguniform": [0, 1]}}}}, "0 < low <= high"),
    ({"random": {"space": {"lr": {"uniform": [0.2, float("nan")]}}}}, "high"),
    ({"random": {"space": {"lr": {"normal": [0, 1]}}}}, "must be one of"),
    # values refused by the command line's own parser, before the first trial starts
    ({"grid": {"lr": [1e-3, "fast"]}}, "trial 1 .*--lr: invalid float value"),
    ({"grid": {"epochs": [1, 2.5]}}, "trial 1 .*--epochs: invalid int value"),
    ({"grid": {"no_such_flag": [1]}}, "unrecognized arguments: --no-such-flag"),
    ({"train": "nope"}, "invalid choice: 'nope'"),
]


@pytest.mark.parametrize("over, message", BAD_CONFIGS)
def test_bad_configs_are_refused_before_any_work(tmp_path, capsys, over, message):
    config = _config(tmp_path, **over)
    with pytest.raises(UserError, match=message):
        sweep.run_sweep(config)
    assert not (tmp_path / "sweep").exists()
    assert main(["sweep", str(_write(tmp_path, config))]) == 2
    assert "robustrep sweep: error:" in capsys.readouterr().err


def test_experiment_settings_are_checked_by_the_experiment_before_any_work(tmp_path):
    config = {
        "experiment": "smooth-encoders",
        "fixed": {"quick": True, "dataset": "digits"},
        "grid": {"radii": ["0.1", "0.1,big"]},
        "criterion": {"metric": "models.se.nominal"},
        "out": str(tmp_path / "s"),
    }
    with pytest.raises(UserError, match="trial 1 .*--radii"):
        sweep.run_sweep(config)
    assert not (tmp_path / "s").exists()
    with pytest.raises(UserError, match="invalid choice: 'no-such-figure'"):
        sweep.run_sweep(dict(config, experiment="no-such-figure"))


def test_train_sweep_ranks_trials_and_a_rerun_skips_finished_ones(tmp_path, monkeypatch):
    path = _write(tmp_path, _config(tmp_path))
    assert main(["sweep", str(path), "--no-progress"]) == 0
    out = tmp_path / "sweep"
    result = json.loads((out / "sweep.json").read_text())
    assert result["n_trials"] == result["n_finished"] == 2 and result["varied"] == ["lr"]
    losses = {r["index"]: r["value"] for r in result["trials"]}
    for r in result["trials"]:  # the value is the run's own last epoch, from its own folder
        assert r["status"] == "ok" and r["value"] == read_metrics(r["run_dir"])[-1]["loss"]
        assert r["settings"]["hparams"]["latent_dim"] == 2 and r["settings"]["training"]["lr"] == r["flags"]["lr"]
        assert r["argv"][:2] == ["train", "vae"] and r["seconds"] > 0
    assert result["ranking"] == sorted(losses, key=losses.get)  # mode min: lowest loss first
    assert result["best"]["index"] == result["ranking"][0]
    table = (out / "ranking.md").read_text().splitlines()
    assert table[0].startswith("| rank | trial | loss (min) | lr |") and len(table) == 4

    import robustrep.commands.train as train_command

    monkeypatch.setattr(train_command, "fit", lambda *a, **k: pytest.fail("a finished trial was trained again"))
    again = sweep.run_sweep(str(path))
    assert [r["value"] for r in again["trials"]] == [losses[0], losses[1]]
    assert again["seconds"] >= result["seconds"]  # the sweep's wall time adds up across runs

    changed = _config(tmp_path, grid={"lr": [1e-3, 1e-2]})
    with pytest.raises(UserError, match="holds a trial with other flags"):
        sweep.run_sweep(changed)


def test_a_failed_trial_is_recorded_ranked_last_and_tried_again(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path, grid={"lr": [1e-3, 1e12]})  # lr 1e12: the loss becomes NaN in the first epoch
    result = sweep.run_sweep(config)
    ok, failed = result["trials"]
    assert ok["status"] == "ok" and failed["status"] == "failed" and failed["value"] is None
    assert "lr" in failed["error"] and result["ranking"] == [0]
    assert "| - | 1 | failed |" in (tmp_path / "sweep" / "ranking.md").read_text()
    assert "trial 1 failed" in capsys.readouterr().err
    tried = []
    real = sweep._train_trial
    monkeypatch.setattr(
        sweep, "_train_trial", lambda config, trial, *a: tried.append(trial.index) or real(config, trial, *a)
    )
    sweep.run_sweep(config)
    assert tried == [1]  # the finished trial is skipped, the failed one runs again


def test_a_killed_trial_continues_where_it_stopped(tmp_path):
    config = _config(tmp_path, grid={"lr": [1e-2]})
    trial = sweep.plan(config)[0]
    run_dir = tmp_path / "sweep" / trial.name
    # the trial as the sweep starts it, killed after its first epoch's checkpoint
    killed = sweep.command_argv(config, trial, run_dir)
    killed[killed.index("--epochs") + 1] = "1"
    assert main(killed + ["--no-progress"]) == 0
    (run_dir / "model.safetensors").unlink()
    first_epoch = read_metrics(run_dir)[0]
    record = sweep.run_sweep(config)["trials"][0]
    history = read_metrics(run_dir)
    assert record["status"] == "ok" and record["epochs"] == len(history) == 2
    assert history[0] == first_epoch  # continued from the checkpoint, not started again


def test_reproduce_sweep_end_to_end_on_digits(tmp_path):
    config = {
        "experiment": "smooth-encoders",
        "fixed": {
            "quick": True,
            "dataset": "digits",
            "epochs": 1,
            "n_eval": 20,
            "attack_steps": 2,
            "restarts": 1,
            "radii": [0.1],
            "select_steps": 1,
            "latent_dim": 4,
        },
        "grid": {"gamma": [1.0]},
        "criterion": {"metric": 'models.se.adversarial["0.1"]', "mode": "max"},
        "out": str(tmp_path / "s"),
    }
    result = sweep.run_sweep(config)
    record = result["trials"][0]
    results = json.loads((tmp_path / "s" / "trial-000" / "results.json").read_text())
    assert record["value"] == results["models"]["se"]["adversarial"]["0.1"]
    assert record["settings"] == results["settings"] and record["settings"]["gamma"] == 1.0
    assert record["seconds"] == results["seconds"] and result["ranking"] == [0]


def test_ray_is_asked_for_only_when_wanted(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "ray_available", lambda: False)  # as on a machine without the sweep extra
    path = _write(tmp_path, _config(tmp_path))
    assert main(["sweep", str(path), "--ray"]) == 2
    assert "pip install 'robustrep[sweep]'" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.skipif(not sweep.ray_available(), reason="Ray Tune is not installed (pip install 'robustrep[sweep]')")
def test_local_ray_runs_the_same_trials(tmp_path):
    local = sweep.run_sweep(_config(tmp_path, out=str(tmp_path / "local")))
    on_ray = sweep.run_sweep(_config(tmp_path, out=str(tmp_path / "ray")), use_ray=True)
    assert on_ray["mode"] == "ray" and on_ray["n_finished"] == 2
    assert [r["value"] for r in on_ray["trials"]] == [r["value"] for r in local["trials"]]  # seeded: identical


@pytest.mark.parametrize("name", ["table2.yaml", "table2-quick.yaml"])
def test_shipped_configs_check_out(name, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / name
    assert main(["sweep", str(path), "--dry-run", "--out", "unused"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].endswith("trials, each checked; nothing run") and "reproduce smooth-encoders" in lines[0]
