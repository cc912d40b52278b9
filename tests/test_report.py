"""HTML reports: provenance and data in every run page, `robustrep report DIR...` side by side, and every
page rendered in headless Chromium (Debian's `chromium`): not blank, every image loaded, every table
with its rows. The rendering test skips, saying why, where Chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import matplotlib
import pytest

from robustrep import report
from robustrep.cli import main

matplotlib.use("Agg")


def figure(path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_run_page_carries_table_figures_settings_and_provenance(tmp_path):
    fig = figure(tmp_path / "curve.png")
    page = report.write_html(
        tmp_path / "report.html",
        "A <run>",
        "summary & more",
        ["a", "b"],
        [[1, 2], [3, "x"]],
        [fig, tmp_path / "missing.png"],
        {"eps": 0.1},
    )
    text = page.read_text()
    assert "A &lt;run&gt;" in text and "summary &amp; more" in text and text.count("data:image/png;base64,") == 1
    data = report.read_run(tmp_path)
    assert data["rows"] == [["1", "2"], ["3", "x"]] and data["settings"] == {"eps": 0.1}
    assert [p.name for p in data["figures"]] == ["curve.png"]
    prov = data["provenance"]
    assert set(prov) == {"command", "code_version", "time"} and prov["code_version"].startswith("0.")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", prov["time"])


def test_a_run_names_the_code_it_started_with(monkeypatch):
    # a run of hours outlives commits made meanwhile: the version is read once and kept for the process
    heads = iter(["aaaaaaa", "bbbbbbb"])

    def fake_git(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=next(heads) + "\n", stderr="")

    monkeypatch.setattr(report.subprocess, "run", fake_git)
    report.code_version.cache_clear()
    try:
        started = report.code_version()
        assert started.endswith("(git aaaaaaa)")
        assert report.provenance("x")["code_version"] == started  # the tree moved on; the run's code did not
    finally:
        report.code_version.cache_clear()


def test_page_data_survives_a_closing_script_tag_in_a_value(tmp_path):
    report.write_html(tmp_path / "report.html", "t", "s", ["k"], [["</script><b>"]], [], {"note": "</script>"})
    assert report.read_run(tmp_path)["rows"] == [["</script><b>"]]


def test_comparison_shows_the_settings_that_differ_and_each_run(tmp_path):
    for name, eps in (("a", 0.1), ("b", 0.2)):
        (tmp_path / name).mkdir()
        report.write_html(
            tmp_path / name / "report.html", f"run {name}", "", ["x"], [[eps]], [], {"eps": eps, "seed": 0}
        )
    (tmp_path / "c").mkdir()  # an older run: results.json only
    (tmp_path / "c" / "results.json").write_text(json.dumps({"settings": {"eps": 0.3, "seed": 0}, "acc": {"pgd": 0.5}}))
    out = report.write_comparison(tmp_path / "cmp.html", [tmp_path / d for d in "abc"])
    text = out.read_text()
    assert "run a" in text and "run b" in text and "acc.pgd" in text
    settings_table = text.split("<table>")[1]
    assert "eps" in settings_table and "seed" not in settings_table  # only what differs


def test_report_command(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    report.write_html(tmp_path / "a" / "report.html", "run a", "", ["x"], [[1]], [], {})
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "cmp.html")]) == 0
    assert (tmp_path / "cmp.html").exists()
    capsys.readouterr()
    for bad in (
        ["report", str(tmp_path / "missing")],
        ["report", str(tmp_path)],  # no report, no results
        ["report", str(tmp_path / "a"), "--out", str(tmp_path)],  # a folder
        ["report", str(tmp_path / "a"), "--out", str(tmp_path / "a" / "report.html")],
    ):
        assert main([*bad, *(["--out", str(tmp_path / "x.html")] if "--out" not in bad else [])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0]


# ---------------------------------------------------------------- rendering in headless Chromium

CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const tables = [...document.querySelectorAll('table')].map(t => t.tBodies.length ? t.tBodies[0].rows.length : -1);
  document.body.setAttribute('data-check', JSON.stringify({images: imgs.length, broken, tables}));
});</script>"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip(
        "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it "
        "when it runs as root): the report rendering test needs it"
    )


def render(browser, page, tmp_path):
    """(check dict from the page's own JavaScript, screenshot pixels [H, W, C] in [0, 1])."""
    probe = tmp_path / f"probe-{page.parent.name}-{page.name}"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ]
    shot = tmp_path / f"{probe.stem}.png"
    dom = subprocess.run(
        [
            *flags,
            "--virtual-time-budget=10000",
            "--window-size=1200,1400",
            f"--screenshot={shot}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, f"the page's check script did not run in Chromium ({page})"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert shot.exists(), f"Chromium wrote no screenshot of {page}"
    import matplotlib.image

    return check, matplotlib.image.imread(shot)


def test_every_report_renders_in_headless_chromium(tmp_path):
    browser = chromium()
    runs = {
        "poisoning": [
            "reproduce",
            "poisoning",
            "--quick",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--fractions",
            "0,0.1",
            "--hidden",
            "16",
        ],
        "wong-kolter": [
            "reproduce",
            "wong-kolter",
            "--quick",
            "--dataset",
            "digits",
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--subset",
            "100",
            "--n-eval",
            "20",
            "--pgd-steps",
            "2",
            "--fig6-subset",
            "100",
            "--fig6-epochs",
            "1",
            "--fig6-n-eval",
            "20",
            "--fig6-steps",
            "2",
        ],
    }
    for name, args in runs.items():
        assert main([*args, "--out", str(tmp_path / name), "--no-progress"]) == 0
    assert main(["report", *(str(tmp_path / n) for n in runs), "--out", str(tmp_path / "cmp.html")]) == 0
    pages = [tmp_path / n / "report.html" for n in runs] + [tmp_path / "cmp.html"]
    for page in pages:
        check, pixels = render(browser, page, tmp_path)
        if page.name == "report.html":
            data = report.read_run(page.parent)
            assert check["images"] == len(data["figures"]) >= 1
            assert check["tables"] == [len(data["rows"])]
        else:
            runs_data = [report.read_run(tmp_path / n) for n in runs]
            assert check["images"] == sum(len(d["figures"]) for d in runs_data)
            assert check["tables"][1:] == [len(d["rows"]) for d in runs_data] and check["tables"][0] >= 1
        assert check["broken"] == 0, f"{page}: {check['broken']} images did not load"
        assert all(n > 0 for n in check["tables"]), f"{page}: an empty table"
        # not blank: a real share of the screenshot is neither white nor one flat colour
        ink = (pixels[..., :3].mean(-1) < 0.9).mean()
        assert ink > 0.02 and pixels[..., :3].std() > 0.05, f"{page} rendered (nearly) blank: ink {ink:.3f}"
