"""Unit dissection (issue 10): the ranking finds a planted unit, ablation zeroes exactly the chosen units and
nothing after the block, bad layers and unit counts refused."""

import pytest
import torch

import robustrep as rr
from robustrep.dissection import ablated, class_units, dissect, generator_layers, unit_activations
from robustrep.errors import UserError


def test_the_unit_that_fires_for_a_class_ranks_first():
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(3, (300,), generator=g)
    acts = torch.rand(300, 6, generator=g)
    acts[:, 4] += 2.0 * (classes == 1)  # unit 4 fires on class 1
    acts[:, 2] += 1.0 * (classes == 2)
    ranking = class_units(acts, classes, 3)
    assert int(ranking[1][0]) == 4 and int(ranking[2][0]) == 2


@pytest.mark.parametrize("layer", ["project", "block1"])
def test_ablation_zeroes_the_chosen_units_only_while_active(layer):
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    z = torch.randn(5, model.noise_dim)
    module = generator_layers(model)[layer]
    acts, images = unit_activations(model, module, z)
    with ablated(model, module, [0, 2]):
        cut, cut_images = unit_activations(model, module, z)
    assert (cut[:, [0, 2]] == 0).all()
    others = [i for i in range(acts.shape[1]) if i not in (0, 2)]
    torch.testing.assert_close(cut[:, others], acts[:, others])
    assert not torch.allclose(cut_images, images)
    torch.testing.assert_close(unit_activations(model, module, z)[1], images)  # the hook is gone


class ByBrightness:
    """A stand-in classifier: the class is the decile of an image's mean brightness."""

    def features_and_logits(self, x):
        m = x.flatten(1).mean(1)
        centres = torch.linspace(m.min().item(), m.max().item(), 10)
        return x.flatten(1).double(), -(m[:, None] - centres[None]).abs()


def test_dissect_reports_each_class_and_refuses_bad_settings():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4)
    result = dissect(model, ByBrightness(), "project", n=200, units=3)
    assert result["units_in_layer"] == 16 and result["classes"]
    for r in result["classes"].values():
        assert len(r["units"]) == 3 and 0 <= r["share_after"] <= 1
    with pytest.raises(UserError):
        dissect(model, ByBrightness(), "block9", n=50, units=3)
    with pytest.raises(UserError):
        dissect(model, ByBrightness(), "project", n=50, units=16)
    with pytest.raises(UserError):
        generator_layers(rr.models.build("gan", input_shape=(1, 8, 8)))


@pytest.mark.parametrize(
    "flag",
    [
        ["--units", "0"],
        ["--n", "10"],
        ["--layer", "toRGB"],
        ["--run", "/no/such/dir"],
        ["--epochs", "-1"],
        ["--width", "0"],
    ],
)
def test_reproduce_dissection_refuses_bad_settings_before_work(flag, tmp_path):
    from robustrep.cli import main

    assert main(["reproduce", "dissection", "--quick", "--out", str(tmp_path / "r"), *flag]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_reproduce_dissection_end_to_end(tmp_path, monkeypatch):
    import json

    from robustrep.cli import main
    from robustrep.experiments import dissection

    class Stand(ByBrightness):
        info = {"test_accuracy": 0.5, "sha256": "0" * 64}

    monkeypatch.setattr(dissection, "load_feature_classifier", lambda *a, **k: Stand())
    out = tmp_path / "r"
    assert (
        main(
            [
                "reproduce",
                "dissection",
                "--quick",
                "--subset",
                "128",
                "--epochs",
                "1",
                "--width",
                "4",
                "--n",
                "200",
                "--units",
                "4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] and (out / "report.html").exists()
