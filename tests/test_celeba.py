"""CelebA from a local copy: a tiny synthetic folder in the official format (made here), read through the
data table (crop, size, splits, attributes, lazy view, cache), refused clearly when absent or malformed,
and Table 1's command end to end on it with a minimal budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustrep import data
from robustrep.cli import main
from robustrep.data import celeba
from robustrep.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTREP_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv(celeba.ENV, raising=False)
    celeba._load_split.cache_clear()
    return celeba.write_synthetic(tmp_path / "celeba", n=24, size=(60, 72))


def test_the_local_copy_through_the_data_table(folder, monkeypatch):
    monkeypatch.setenv(celeba.ENV, str(folder))
    X, y = data.load("celeba", "train", task="Bald")
    assert isinstance(X, celeba.Uint8Images) and X.shape == (16, 3, 64, 64) and len(X) == 16
    images = X[:]
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    # the labels are the file's -1/1 column of that attribute, in file order, for partition 0
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    column = celeba.ATTRIBUTES.index("Bald") + 1
    assert y.tolist() == [int(line.split()[column] == "1") for line in lines[2:18]]
    Xt, yt = data.load("celeba", "test", task="Smiling")
    parts = [line.split()[1] for line in (folder / "list_eval_partition.txt").read_text().splitlines()]
    assert len(Xt) == parts.count("2") and yt.dtype == torch.int64
    assert data.num_classes("celeba", "Wearing_Hat") == 2 and len(data.TASKS["celeba"]) == 40
    assert data.TASKS["celeba"][0] == "Smiling"  # the default task
    sub, ysub = data.random_subset(X, y, 5, seed=0)
    assert isinstance(sub, celeba.Uint8Images) and len(sub) == 5 and len(ysub) == 5


def test_decode_is_the_central_square_resized(tmp_path):
    from PIL import Image

    image = np.zeros((100, 80, 3), dtype=np.uint8)  # h 100, w 80: the central square is rows 10..90
    image[10:90, :, 0] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    x = celeba.decode(tmp_path / "a.png")
    assert x.shape == (3, 64, 64) and x.dtype == np.uint8
    assert x[0].min() >= 250 and x[1:].max() <= 5  # all red: nothing outside the square is kept


def test_cache_is_used_and_matches_the_decoded_images(folder):
    X1, a1 = celeba.load_split("train", folder)
    cached = list((folder.parent / "cache" / "celeba").glob("*-train.npz"))
    assert len(cached) == 1
    celeba._load_split.cache_clear()
    for path in (folder / "img_align_celeba").iterdir():
        path.unlink()  # the second load can only come from the cache
    X2, a2 = celeba.load_split("train", folder)
    assert torch.equal(X1.images, X2.images) and torch.equal(a1, a2)


def test_a_missing_or_malformed_copy_is_refused_plainly(folder, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="ROBUSTREP_CELEBA_DIR"):
        data.load("celeba", "train")
    with pytest.raises(UserError, match="is not a CelebA folder: it has no img_align_celeba"):
        data.load("celeba", "train", root=tmp_path / "nowhere")
    (folder / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match="is not a CelebA folder: it has no list_eval_partition.txt"):
        data.load("celeba", "train", root=folder)
    with pytest.raises(UserError, match="has no task"):
        data.load("celeba", "train", task="Smile", root=folder)


def test_a_corrupt_attribute_file_names_its_line(folder):
    path = folder / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(" 1", " 2", 1).replace("-1", " 2", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"list_attr_celeba.txt:6: expected a file name and 40 values"):
        celeba.load_split("train", folder)


def test_table1_end_to_end_on_the_synthetic_folder(folder, tmp_path):
    out = tmp_path / "t1"
    assert (
        main(
            [
                "reproduce",
                "celeba-attributes",
                "--celeba-dir",
                str(folder),
                "--attributes",
                "Smiling,Bald",
                "--quick",
                "--epochs",
                "1",
                "--subset",
                "0",
                "--n-eval",
                "0",
                "--attack-steps",
                "2",
                "--restarts",
                "1",
                "--select-steps",
                "1",
                "--latent-dim",
                "4",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["table"] == "1" and results["dataset"] == "celeba" and set(results["tasks"]) == {"Smiling", "Bald"}
    assert results["n_eval"] == 4  # every test image of the synthetic folder
    for task in ("Smiling", "Bald"):
        for label in ("vae", "se"):
            r = results["tasks"][task][label]
            assert set(r["adversarial"]) == {"0.1"} and 0 <= r["adversarial"]["0.1"] <= 1
    assert results["models"]["se"]["hparams"]["select_eps"] == 0.1
    assert results["models"]["se"]["hparams"]["arch"] == "conv" and results["models"]["se"]["hparams"][
        "input_shape"
    ] == [3, 64, 64]
    assert (out / "table1.png").stat().st_size > 1000 and "Table 1" in (out / "report.html").read_text()


def test_table1_refuses_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(celeba.ENV, raising=False)
    out = tmp_path / "never"
    assert main(["reproduce", "celeba-attributes", "--out", str(out)]) == 2
    assert "CelebA is not downloadable here" in capsys.readouterr().err and not out.exists()
    folder = celeba.write_synthetic(tmp_path / "c", n=3, size=(20, 20))
    assert (
        main(
            [
                "reproduce",
                "celeba-attributes",
                "--celeba-dir",
                str(folder),
                "--attributes",
                "Smiling,Beard",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "--attributes" in capsys.readouterr().err and not out.exists()


def test_help_says_the_data_is_local(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "celeba-attributes", "--help"])
    text = capsys.readouterr().out
    assert "cannot be downloaded here" in text and "--celeba-dir" in text
