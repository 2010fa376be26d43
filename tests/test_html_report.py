"""report.html: what a reader sees in a real browser, its size at scale, names made safe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from browser import screenshot, what_a_reader_sees
from fixtures_images import write_image

from clipflow.eval.html_report import confident_mistakes, eval_report, table_html
from clipflow.eval.means import summarize
from clipflow.eval.metrics import dataset_metrics, ours_metrics
from clipflow.eval.report import RESULTS_COLUMNS
from clipflow.runs.evaluate import run_eval
from clipflow.settings.config import EvalSettings

META = {
    "threshold": 0.5,
    "backbone": {"name": "tiny", "weights_id": None, "random_init": True},
    "preprocess": "clip",
    "protocol": "all",
    "checkpoint_sha256": "0" * 64,
}


def synthetic_results(n_sets: int, n_per_set: int, images: list[Path], seed: int = 0):
    """Per-set rows and per-image score rows as an evaluation keeps them: reals ~ N(0, 1),
    fakes shifted; every image path one of ``images`` (so every thumbnail is a real one)."""
    rng = np.random.default_rng(seed)
    cal = rng.normal(0, 1, 500)
    rows, score_rows = [], []
    for k in range(n_sets):
        half = n_per_set // 2
        scores = np.r_[rng.normal(0, 1, half), rng.normal(1 + k / 10, 1, half)]
        labels = np.r_[np.zeros(half, int), np.ones(half, int)]
        name = f"gen{k}"
        rows.append(
            {
                "dataset": name,
                "display_name": f"Generator {k}",
                **dataset_metrics(scores, labels, META["threshold"]),
                **ours_metrics(scores, labels, cal),
            }
        )
        score_rows += [
            {"path": str(images[i % len(images)]), "dataset": name, "label": int(y), "score": s}
            for i, (s, y) in enumerate(zip(scores.tolist(), labels))
        ]
    return rows, score_rows, cal


def _page(rows, score_rows, cal) -> str:
    return eval_report(rows, summarize(rows), META, score_rows, cal)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Noise images (the worst case for JPEG thumbnails), large enough to be downscaled."""
    root = tmp_path_factory.mktemp("photos")
    return [write_image(root / f"p{i}.png", size=(320, 240), seed=i) for i in range(4)]


@pytest.mark.slow
def test_25_sets_of_100k_images_stay_under_3_mb(photos):
    rows, score_rows, cal = synthetic_results(25, 4000, photos)  # 100,000 images
    page = _page(rows, score_rows, cal)
    size = len(page.encode("utf-8"))
    # measured 1.43 MB (1.44 MB with 1M images): the bound does not depend on N
    assert size < 3_000_000, f"report.html is {size / 1e6:.2f} MB"
    assert page.count('<section class="set"') == 25
    assert page.count("<svg") == 25
    thumbs = page.count("data:image/jpeg;base64,")
    assert 20 * 12 < thumbs <= 25 * 12  # at most 6 worst each way per set (few easy sets have less)


def test_report_size_does_not_grow_with_the_number_of_images(photos):
    small = len(_page(*synthetic_results(2, 200, photos)))
    large = len(_page(*synthetic_results(2, 20_000, photos)))
    assert large < 1.15 * small, (small, large)


def test_the_worst_mistakes_are_the_most_confident_each_way():
    rows = [
        {"path": f"r{i}", "dataset": "a", "label": 0, "score": s}
        for i, s in enumerate([0.1, 0.9, 3.0, 0.6, 2.0])
    ] + [
        {"path": f"f{i}", "dataset": "a", "label": 1, "score": s}
        for i, s in enumerate([0.4, -2.0, 0.5, 5.0])
    ]
    worst = confident_mistakes(rows, threshold=0.5, k=2)["a"]
    assert [m["path"] for m in worst["real"]] == ["r2", "r4"]  # called fake, highest first
    assert [m["path"] for m in worst["fake"]] == ["f1", "f0"]  # at/below 0.5 = called real


def test_names_are_escaped_bytes_safe_and_a_missing_image_is_a_placeholder(photos, tmp_path):
    rows, score_rows, cal = synthetic_results(1, 40, photos)
    rows[0]["display_name"] = "<b>Gen</b> & co"
    odd = str(tmp_path / "caf\udcff<i>.png")  # a byte that is not UTF-8, markup in the name
    gone = str(tmp_path / "deleted.png")
    reals = sorted((r for r in score_rows if r["label"] == 0), key=lambda r: -r["score"])
    reals[0]["path"], reals[1]["path"] = odd, gone
    page = _page(rows, score_rows, cal)
    assert "<b>Gen</b>" not in page and "&lt;b&gt;Gen&lt;/b&gt; &amp; co" in page
    assert "caf\\xff&lt;i&gt;.png" in page and "<i>" not in page  # as scores.csv writes it
    assert "image not shown: file not found" in page
    assert '<p class="warning"><strong>Random-weight backbone' in page  # said as a banner
    page.encode("utf-8")  # no lone surrogate left


def test_a_threshold_outside_the_scores_is_still_drawn():
    """The demo's case: the threshold below every score (every real flagged) must show."""
    from clipflow.eval.html_figures import set_svg

    real, fake = np.linspace(-0.9, -0.8, 12), np.linspace(-0.85, -0.7, 12)
    inside = set_svg(real, fake, -0.82, {"p5%": -0.81})
    below = set_svg(real, fake, -0.96, {"p5%": -0.81})
    assert ">threshold<" in inside and ">threshold<" in below and ">p5%<" in below


def test_table_shows_every_column_the_results_have_and_labels_ours():
    rows = [{"dataset": "a", "display_name": "A", "ap": 90.0, "transfer": "yes", "auc": 91.5}]
    table = table_html(rows, ("dataset", "display_name", "ap", "auc", "transfer"))
    assert "the paper's columns" in table and "ours, not in the paper" in table
    assert table.index(">auc<") < table.index(">transfer<")  # paper's first, then ours
    assert '<td class="ours">yes</td>' in table and ">91.50<" in table


def _settings(trained_run: Path, test_root: Path) -> EvalSettings:
    s = EvalSettings(ckpt=str(trained_run), device="cpu")
    s.data.test_root, s.data.num_workers, s.data.batch_size = str(test_root), 0, 32
    return s


@pytest.mark.slow
def test_a_miniature_eval_report_reads_in_a_browser(trained_run, mini_bench, tmp_path):
    files = run_eval(_settings(trained_run, mini_bench / "test"), tmp_path / "eval")
    report = files["report.html"]
    with open(files["results.csv"], newline="") as fh:
        table = [r for r in csv.DictReader(fh) if not r["dataset"].startswith("mean")]
    seen = what_a_reader_sees(report, tmp_path)
    shot = screenshot(report, tmp_path / "report.png")
    assert shot.stat().st_size > 10_000  # kept in the test's temp dir to look at
    assert [r[0] for r in seen["rows"]] == [r["dataset"] for r in table]  # a row per set
    assert [len(r) for r in seen["rows"]] == [len(RESULTS_COLUMNS)] * len(table)
    assert [s["title"].split(" (")[0] for s in seen["sets"]] == [r["display_name"] for r in table]
    assert all(s["svgs"] == 1 for s in seen["sets"])  # a drawn figure per set
    thumbs = sum(s["images"] for s in seen["sets"])
    assert thumbs > 0 and sum(s["decoded"] for s in seen["sets"]) == thumbs
    assert seen["scripts_loaded"] == []  # nothing fetched: it opens offline
    # results.md's warnings (here: a calibration too small for p <= 1%) are on the page too
    warnings = json.loads(files["metrics.json"].read_text())["warnings"]
    assert warnings and report.read_text().count("Warning: ") == len(warnings)
