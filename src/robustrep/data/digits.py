"""scikit-learn's bundled 8x8 digits (1797 images, no download): a tiny stand-in for MNIST in tests.
Split 75/25, stratified, with a fixed seed, so `train` and `test` never overlap."""

from __future__ import annotations

import numpy as np


def load_arrays() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
