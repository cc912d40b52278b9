"""Unit dissection (issue 10): the ranking finds a planted unit, ablation zeroes exactly the chosen units and
nothing after the block, bad layers and unit counts refused."""

import pytest
import torch

import robustrep as rr
from robustrep.dissection import (
    ablated,
    causal_units,
    class_shares,
    class_units,
    dissect,
    generator_layers,
    greedy_ranking,
    mean_maps,
    own_sample_losses,
    random_control,
    set_score,
    specific_ranking,
    unit_activations,
    verdict,
)
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
        ["--ranking", "iou"],
        ["--ablation", "max"],
        ["--early-epochs", "-1"],
        ["--early-epochs", "20"],
    ],
)
def test_reproduce_dissection_refuses_bad_settings_before_work(flag, tmp_path):
    from robustrep.cli import main

    assert main(["reproduce", "dissection", "--quick", "--out", str(tmp_path / "r"), *flag]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", ["ddpm", None])
def test_reproduce_dissection_refuses_a_run_folder_without_a_gan_generator(model, tmp_path):
    from robustrep.cli import main

    run = tmp_path / "run"
    run.mkdir()
    if model:
        (run / "config.yaml").write_text(f"model: {model}\n")
    assert main(["reproduce", "dissection", "--quick", "--out", str(tmp_path / "r"), "--run", str(run)]) == 2
    assert not (tmp_path / "r").exists()


def test_reproduce_dissection_of_a_trained_wgan_gp_run_records_the_generator(tmp_path, monkeypatch):
    import json

    from robustrep.cli import main
    from robustrep.experiments import dissection
    from robustrep.training import fit

    class Stand(ByBrightness):
        info = {"test_accuracy": 0.5, "sha256": "0" * 64}

    torch.manual_seed(0)
    model = rr.models.build("wgan-gp", input_shape=[1, 28, 28], width=4)
    config = {"model": "wgan-gp", "hparams": {"input_shape": [1, 28, 28], "width": 4}}
    fit(
        model,
        torch.rand(64, 1, 28, 28),
        epochs=1,
        batch_size=32,
        run_dir=tmp_path / "wgp",
        progress=False,
        config=config,
    )
    monkeypatch.setattr(dissection, "load_feature_classifier", lambda *a, **k: Stand())
    out = tmp_path / "r"
    args = ["--n", "100", "--units", "2", "--run", str(tmp_path / "wgp"), "--out", str(out), "--no-progress"]
    assert main(["reproduce", "dissection", "--quick", *args]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["generator"]["model"] == "wgan-gp" and results["generator"]["epochs_done"] == 1
    assert results["early"] is None and results["train_seconds"] >= 0
    assert "wgan-gp generator" in (out / "report.html").read_text()


class ByReadout:
    """A stand-in classifier: a fixed random linear readout of the pixels."""

    def __init__(self):
        self.w = torch.randn(784, 10, generator=torch.Generator().manual_seed(3))

    def features_and_logits(self, x):
        return x.flatten(1), 20 * (x.flatten(1) - 0.5) @ self.w / 28


def test_causal_effects_equal_one_unit_ablations_and_a_disconnected_unit_has_none():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    with torch.no_grad():
        model.generator.blocks[0].weight[5] = 0  # unit 5 of the projection feeds nothing: no causal effect
    layer = generator_layers(model)["project"]
    z = torch.randn(64, model.noise_dim)
    fc = ByReadout()
    ranking, effect = causal_units(model, layer, z, fc)
    assert effect.shape == (16, 10)
    assert (effect[5] == 0).all()
    with torch.no_grad():
        logp = fc.features_and_logits(model.generate(z))[1].log_softmax(1)
        classes = logp.argmax(1)
        for u in (0, 7):  # brute force: sample by sample
            with ablated(model, layer, [u]):
                cut = fc.features_and_logits(model.generate(z))[1].log_softmax(1)
            for c in classes.unique().tolist():
                drops = [float(logp[i, c] - cut[i, c]) for i in range(64) if classes[i] == c]
                assert abs(effect[u, c] - sum(drops) / len(drops)) < 1e-5
    for c, order in ranking.items():
        assert effect[order[0], c] == effect[:, c].max()


def test_a_generic_unit_leads_the_causal_ranking_but_not_the_specific_one():
    effect = torch.tensor(
        [
            [2.0, 2.0, 2.0],  # unit 0 unmakes every class
            [1.5, 0.0, 0.1],  # unit 1 unmakes class 0 only
            [0.0, 0.3, 0.0],
        ]
    )
    causal = {c: torch.argsort(effect[:, c], descending=True) for c in range(3)}
    specific = specific_ranking(effect, [0, 1, 2])
    assert int(causal[0][0]) == 0 and int(specific[0][0]) == 1
    assert int(specific[1][0]) == 2  # 0.3 - 0 beats 2 - 2 and 0 - 0.8
    assert int(specific_ranking(effect, [0, 2])[0][0]) == 1  # only classes present count as others


def test_set_score_by_hand():
    logp = torch.log(torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]]))
    cut = torch.log(torch.tensor([[0.4, 0.6], [0.3, 0.7], [0.15, 0.85], [0.1, 0.9]]))
    classes = torch.tensor([0, 0, 1, 1])
    # class 0 loses log 2 on each of its samples; class 1 gains (no credit): score log 2
    assert abs(set_score(logp, cut, classes, 0) - float(torch.log(torch.tensor(2.0)))) < 1e-6
    # for class 1: its drop is mean(log 0.7/0.85, 0) < 0, and class 0's loss of log 2 counts against it
    expected = float(torch.log(torch.tensor(0.7 / 0.85))) / 2 - float(torch.log(torch.tensor(2.0)))
    assert abs(set_score(logp, cut, classes, 1) - expected) < 1e-6


def test_greedy_ranking_picks_each_unit_by_brute_force_over_sets():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    layer = generator_layers(model)["project"]
    fc = ByReadout()
    z = torch.randn(120, model.noise_dim)
    start = {c: torch.arange(16) for c in range(10)}
    with torch.no_grad():
        logp = fc.features_and_logits(model.generate(z))[1].log_softmax(1)
    read = logp.argmax(1)
    present = read.unique().tolist()
    ranking = greedy_ranking(model, layer, z, fc, {c: start[c] for c in present[:2]}, steps=2, pool=6, per_class=200)
    for c, order in ranking.items():
        assert sorted(order.tolist()) == list(range(16)) and order[2:].tolist() == [
            u for u in range(16) if u not in order[:2].tolist()
        ]

        def score(units):
            with torch.no_grad(), ablated(model, layer, units):
                cut = fc.features_and_logits(model.generate(z))[1].log_softmax(1)
            return set_score(logp, cut, read, c)

        first = max(range(6), key=lambda u: score([u]))
        second = max((u for u in range(6) if u != first), key=lambda u: score([first, u]))
        assert order[:2].tolist() == [first, second]


def test_dissect_with_the_greedy_ranking_extends_the_specific_order():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    spec = dissect(model, ByReadout(), "project", n=80, units=2, ranking="specific", also_units=[4])
    greedy = dissect(model, ByReadout(), "project", n=80, units=2, ranking="greedy", also_units=[4])
    assert greedy["ranking"] == "greedy" and set(greedy["classes"]) == set(spec["classes"])
    for c, r in greedy["classes"].items():
        pool = spec["more_units"]["4"][c]["units"][:3]  # greedy picks its 2 among the specific top 3
        assert set(r["units"]) <= set(pool)
        assert greedy["more_units"]["4"][c]["units"][:2] == r["units"]


def test_the_cache_computes_the_causal_effects_once(monkeypatch):
    import robustrep.dissection as d

    calls = []
    real = d.causal_units
    monkeypatch.setattr(d, "causal_units", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    cache = {}
    a = dissect(model, ByReadout(), "block1", n=60, units=2, ranking="causal", cache=cache)
    b = dissect(model, ByReadout(), "block1", n=60, units=2, ranking="specific", cache=cache)
    assert len(calls) == 1 and a["ranking"] == "causal" and b["ranking"] == "specific"
    assert dissect(model, ByReadout(), "block1", n=60, units=2, ranking="causal")["classes"] == a["classes"]
    assert len(calls) == 2  # no cache given: computed again, the same result


def test_mean_ablation_sets_the_units_to_their_mean_map():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    layer = generator_layers(model)["block1"]
    z = torch.randn(20, model.noise_dim)
    values = mean_maps(model, layer, z)
    seen = []
    with ablated(model, layer, [1, 3], values):
        handle = layer.register_forward_hook(lambda m, i, out: seen.append(out))  # runs after the ablation's
        model.generate(z)
    handle.remove()
    assert values.shape == (8, 14, 14)
    torch.testing.assert_close(seen[0][:, [1, 3]], values[[1, 3]].expand(20, 2, 14, 14))
    acts, _ = unit_activations(model, layer, z)  # the spatial means of the unablated maps average to values'
    torch.testing.assert_close(acts.mean(0), values.mean(dim=(1, 2)))


def test_dissect_judges_on_other_noise_than_it_ranks_on():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    fc = ByReadout()
    r = dissect(model, fc, "project", n=100, units=2, seed=7, ranking="contrast", ablation="mean", also_units=[4])
    z_judge = model.noise(100, torch.Generator().manual_seed(8))
    assert r["shares_before"] == [round(float(s), 4) for s in class_shares(fc, model.generate(z_judge))]
    assert set(r["more_units"]) == {"4"} and all(len(x["units"]) == 4 for x in r["more_units"]["4"].values())
    with torch.no_grad():  # brute force: the other classes' samples whose class the ablation changed
        read = fc.features_and_logits(model.generate(z_judge))[1].argmax(1)
        for c, x in r["classes"].items():
            with ablated(
                model,
                generator_layers(model)["project"],
                x["units"],
                mean_maps(
                    model, generator_layers(model)["project"], model.noise(100, torch.Generator().manual_seed(7))
                ),
            ):
                cut = fc.features_and_logits(model.generate(z_judge))[1].argmax(1)
            rest = read != c
            assert abs(x["others_switched"] - float((cut[rest] != read[rest]).double().mean())) < 1e-4
    with pytest.raises(UserError):
        dissect(model, fc, "project", n=50, units=2, ranking="iou")
    with pytest.raises(UserError):
        dissect(model, fc, "project", n=50, units=2, ablation="max")


def test_verdict_counts_halved_and_each_reading_of_others_moved_less_by_hand():
    def row(before, after, abs_change, rel_change, target_lost, others_lost):
        return {
            "share_before": before,
            "share_after": after,
            "others_max_change": abs_change,
            "others_max_rel_change": rel_change,
            "target_lost": target_lost,
            "others_lost_max": others_lost,
        }

    result = {
        "classes": {
            0: row(0.2, 0.1, 0.05, 0.3, 0.5, 0.1),  # halved, the others move less by every reading
            1: row(0.2, 0.11, 0.01, 0.1, 0.45, 0.05),  # not halved
            2: row(0.2, 0.0, 0.2, 2.0, 1.0, 0.02),  # all of it to one class: fails only the share readings
            3: row(0.2, 0.1, 0.05, 0.3, 0.5, 0.5),  # another class loses as much of its own: fails own_samples
        }
    }
    v = verdict(result)
    assert v["classes_halved"] == ["0", "2", "3"] and v["of"] == 4
    assert v["tests"]["absolute_share"] == {"others_moved_less": ["0", "1", "3"], "passing": ["0", "3"]}
    assert v["tests"]["relative_share"] == {"others_moved_less": ["0", "1", "3"], "passing": ["0", "3"]}
    assert v["tests"]["own_samples"] == {"others_moved_less": ["0", "1", "2"], "passing": ["0", "2"]}
    assert v["classes_passing"] == ["0", "2"]  # the headline is own_samples


def test_own_sample_losses_by_hand():
    # 100 samples: 50 of class 0, 30 of class 1, 19 of class 2, 1 of class 3 (below 2%: not judged)
    before = torch.tensor([0] * 50 + [1] * 30 + [2] * 19 + [3])
    after = before.clone()
    after[:30] = 1  # 30 of class 0's 50 become 1
    after[50:53] = 2  # 3 of class 1's 30 become 2
    after[99] = 0  # the lone 3 becomes a 0: too small a class to count
    r = own_sample_losses(before, after, 0, num_classes=4)
    assert r["target_lost"] == 0.6
    assert r["others_lost_max"] == 0.1 and r["others_lost_class"] == 1
    # class 1: 30 -> 30 - 3 + 30 = 57 (+90%); class 2: 19 -> 22 (+15.8%)
    assert r["others_max_rel_change"] == round(27 / 30, 4)
    assert own_sample_losses(before, after, 3, num_classes=4)["target_lost"] == 1.0


def test_random_control_matches_brute_force_and_is_seeded():
    torch.manual_seed(0)
    model = rr.models.build("dcgan", width=4).eval()
    fc = ByReadout()
    layer = generator_layers(model)["project"]
    z = torch.randn(80, model.noise_dim)
    with torch.no_grad():
        read = fc.features_and_logits(model.generate(z))[1].argmax(1)
    r = random_control(model, layer, z, fc, read, units=3, seed=5, draws=2)
    assert r == random_control(model, layer, z, fc, read, units=3, seed=5, draws=2)
    g = torch.Generator().manual_seed(5 + 10_007)
    switched = []
    for _ in range(2):
        with torch.no_grad(), ablated(model, layer, torch.randperm(16, generator=g)[:3].tolist()):
            cut = fc.features_and_logits(model.generate(z))[1].argmax(1)
        switched.append(float((cut != read).double().mean()))
    assert abs(r["switched"] - sum(switched) / 2) < 1e-4 and r["units"] == 3 and r["draws"] == 2


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
                "--early-epochs",
                "0",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] and (out / "report.html").exists()
    assert len(results["variants"]) == 12 and set(results["more_units"]) == {"2", "7"}  # block1 of width 4 has 8 units
    assert set(results["tests"]) == {"own_samples", "relative_share", "absolute_share"}
    assert results["random_units"]["units"] == 4 and results["more_units"]["7"]["random_units"]["units"] == 7
