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
