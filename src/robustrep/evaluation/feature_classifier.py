"""The MNIST classifier whose features judge generated samples (no Inception weights can be fetched here).

Built on first use by robustrep itself: the `classifier` model (arch "cnn": two 5x5 convolutions with
max-pooling, a 100-unit layer, the logits) trained by `rr.training.fit` with fixed settings and seed, then
cached under the data folder (`rr.data.cache.data_dir() / "feature-classifier"`) with the SHA-256 of its
weights file and its test accuracy. A cached file whose hash differs from its record is refused. Never
downloaded. The features are the 100 ReLU units before the logits.

Training is seeded, but floating-point sums may differ across machines and thread counts, so the hash
names the weights actually used; it goes into every results.json beside the accuracy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .. import data, models
from ..data.cache import data_dir
from ..errors import UserError
from ..runs import load_weights, save_weights
from ..utils import atomic_write, resolve_device

SETTINGS = dict(arch="cnn", epochs=8, batch_size=64, lr=1e-3, lr_schedule="cosine", seed=0)
MIN_ACCURACY = 0.992


def cache_dir() -> Path:
    return data_dir() / "feature-classifier"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FeatureClassifier(nn.Module):
    """Logits and penultimate features of the cached MNIST classifier."""

    def __init__(self, classifier: nn.Module, info: dict):
        super().__init__()
        self.classifier = classifier.eval()
        self.info = info
        layers = list(classifier.net)
        self.body, self.head = nn.Sequential(*layers[:-1]), layers[-1]

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        device = next(self.parameters()).device
        for i in range(0, len(x), batch_size):
            f = self.body(x[i : i + batch_size].to(device))
            feats.append(f.double().cpu())
            logits.append(self.head(f).cpu())
        return torch.cat(feats), torch.cat(logits)


def _test_accuracy(model: nn.Module, device) -> float:
    Xt, yt = data.load("mnist", "test")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(Xt), 1000):
            correct += int((model(Xt[i : i + 1000].to(device)).argmax(1).cpu() == yt[i : i + 1000]).sum())
    return correct / len(Xt)


def load_feature_classifier(device="auto", progress: bool = False, folder: Path | None = None) -> FeatureClassifier:
    """The cached classifier, trained here first if the cache holds none (minutes on a CPU)."""
    from ..training import fit

    device = resolve_device(device)
    folder = Path(folder) if folder is not None else cache_dir()
    weights, record = folder / "model.safetensors", folder / "record.json"
    model = models.build("classifier", input_shape=(1, 28, 28), num_classes=10, arch=SETTINGS["arch"])
    if weights.exists() and record.exists():
        info = json.loads(record.read_text())
        if info.get("sha256") != _sha256(weights) or info.get("settings") != SETTINGS:
            raise UserError(
                f"{weights} does not match {record.name} (damaged or made with other settings): "
                f"delete {folder} and it is trained again"
            )
        return FeatureClassifier(load_weights(model, weights), info).to(device)
    X, y = data.load("mnist", "train")
    torch.manual_seed(SETTINGS["seed"])
    model = models.build("classifier", input_shape=(1, 28, 28), num_classes=10, arch=SETTINGS["arch"])
    history = fit(
        model,
        X,
        y,
        epochs=SETTINGS["epochs"],
        batch_size=SETTINGS["batch_size"],
        lr=SETTINGS["lr"],
        lr_schedule=SETTINGS["lr_schedule"],
        seed=SETTINGS["seed"],
        device=device,
        progress=progress,
    )
    model.eval()
    accuracy = _test_accuracy(model, device)
    if accuracy < MIN_ACCURACY:
        raise UserError(
            f"the feature classifier reached {accuracy:.4f} test accuracy, below {MIN_ACCURACY}: "
            "sample metrics would be unreliable"
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, weights)
    info = {
        "test_accuracy": accuracy,
        "sha256": _sha256(weights),
        "settings": SETTINGS,
        "train_seconds": round(sum(r["seconds"] for r in history), 1),
    }
    atomic_write(record, lambda f: f.write(json.dumps(info, indent=1).encode()))
    return FeatureClassifier(model, info).to(device)
