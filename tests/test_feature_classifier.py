"""The cached feature classifier (issue 10): a cache entry is used only when its weights hash to its record."""

import hashlib
import json

import pytest
import torch

import robustrep as rr
from robustrep.errors import UserError
from robustrep.evaluation import feature_classifier as fcm
from robustrep.runs import save_weights


def write_cache(folder, settings=fcm.SETTINGS):
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = rr.models.build("classifier", input_shape=(1, 28, 28), num_classes=10, arch="cnn")
    save_weights(model, folder / "model.safetensors")
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "record.json").write_text(json.dumps({"test_accuracy": 0.995, "sha256": sha, "settings": settings}))
    return model


def test_a_matching_cache_is_loaded_and_gives_features_and_logits(tmp_path):
    model = write_cache(tmp_path / "fc")
    fc = fcm.load_feature_classifier("cpu", folder=tmp_path / "fc")
    x = torch.rand(5, 1, 28, 28)
    feats, logits = fc.features_and_logits(x, batch_size=2)
    assert feats.shape == (5, 100) and feats.dtype == torch.float64
    torch.testing.assert_close(logits, model.eval()(x).detach())
    assert fc.info["test_accuracy"] == 0.995


def test_a_damaged_or_foreign_cache_is_refused(tmp_path):
    write_cache(tmp_path / "a")
    data = bytearray((tmp_path / "a" / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "a" / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match"):
        fcm.load_feature_classifier("cpu", folder=tmp_path / "a")
    write_cache(tmp_path / "b", settings=dict(fcm.SETTINGS, epochs=1))
    with pytest.raises(UserError, match="other settings"):
        fcm.load_feature_classifier("cpu", folder=tmp_path / "b")
