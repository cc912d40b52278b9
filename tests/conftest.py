import shutil

import pytest
import torch

import robustrep as rr

# The tests use small tensors, where a second thread costs more than it gains, and on a shared
# 2-core machine oversubscribed OpenMP threads slow everything down many times over.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits: (X_train, y_train, X_test, y_test), no download."""
    X, y = rr.data.load("digits", "train")
    Xt, yt = rr.data.load("digits", "test")
    return X, y, Xt, yt


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def _digits_classifier_run(tmp_path_factory):
    """A small MLP classifier run on digits (3 epochs), trained once for the whole session."""
    from robustrep.cli import main

    out = tmp_path_factory.mktemp("trained") / "clf"
    args = ["train", "classifier", "--arch", "mlp", "--hidden", "32", "--dataset", "digits", "--epochs", "3"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(_digits_classifier_run, tmp_path_factory):
    """A module's own copy of the session's classifier run: commands write into it (evaluation.json, ...)."""
    return shutil.copytree(_digits_classifier_run, tmp_path_factory.mktemp("runs") / "clf")
