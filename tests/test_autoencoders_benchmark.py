"""benchmarks/autoencoders.py's own helpers (the pythae runs themselves are the benchmark, not a test)."""

import importlib.util
import statistics
from pathlib import Path

import pytest

import robustrep as rr

_spec = importlib.util.spec_from_file_location(
    "bench_autoencoders", Path(__file__).parents[1] / "benchmarks" / "autoencoders.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_seed_spread_is_the_sample_standard_deviation():
    values = [745.764, 745.70, 745.81, 745.69]
    got = bench.spread(values)
    assert got["mean"] == pytest.approx(statistics.mean(values), abs=1e-3)
    assert got["std"] == pytest.approx(statistics.stdev(values), abs=1e-3)
    assert got["values"] == values
    assert bench.spread([1.0]) == {"mean": 1.0, "std": 0.0, "values": [1.0]}


@pytest.mark.parametrize("text", ["", "pca", "info-vae,gan", ","])
def test_unknown_models_are_refused(text):
    with pytest.raises(rr.errors.UserError):
        bench.parse_models(text)


def test_models_are_parsed_in_order():
    assert bench.parse_models("info-vae, ae") == ["info-vae", "ae"]


@pytest.mark.parametrize("flags", [["--seeds", "0"], ["--seeds", "-2"], ["--seeds", "x"], ["--models", "gan"]])
def test_bad_flags_exit_2_before_any_work(flags, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(flags)
    assert e.value.code == 2 and flags[0] in capsys.readouterr().err
