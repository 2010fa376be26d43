"""No decision from a number that is not a number: a NaN or infinite score is an error record
(clipflow-detect exits 4), never "real" with fpr_val 0, in the Detector API, clipflow-detect,
clipflow-eval (counted and listed) and clipflow-calibrate (a recorded skip).

The flow is the trained checkpoint's, with its ``score`` made NaN/inf for the features of
chosen images: every other image keeps its true score, so each check also proves the rest of
the batch is still decided.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import write_image

from clipflow.checkpoints.checkpoint import Checkpoint, load_checkpoint
from clipflow.cli import detect as detect_cli
from clipflow.data.imageio import list_images
from clipflow.detect import Detector
from clipflow.errors import SomeFilesUnreadableError, UnreadableImageError
from clipflow.eval.conformal import ConformalCalibration
from clipflow.eval.metrics import dataset_metrics, ours_metrics
from clipflow.eval.predictions import NOT_FINITE
from clipflow.features.image_input import to_uint8_chw
from clipflow.runs.calibrate import run_calibrate
from clipflow.runs.evaluate import run_eval
from clipflow.runs.robustness import run_robustness
from clipflow.settings.config import CalibrateSettings, EvalSettings
from clipflow.transforms.perturb import parse_perturbation


def _features(ckpt: Checkpoint, paths: list[Path]) -> torch.Tensor:
    det = Detector(ckpt, _backbone(ckpt), "cpu")
    return det.backbone(torch.stack([det.transform(to_uint8_chw(p)) for p in paths]))


_BACKBONES: dict = {}


def _backbone(ckpt: Checkpoint):
    """The checkpoint's tiny tower, built once for this module."""
    if "tiny" not in _BACKBONES:
        _BACKBONES["tiny"] = Detector.from_loaded(ckpt, "cpu").backbone
    return _BACKBONES["tiny"]


def poisoned(run: Path, paths: list[Path], value: float = math.nan) -> Checkpoint:
    """The checkpoint of ``run`` whose flow scores ``value`` for the images ``paths`` (matched
    by their features: distinct images lie ~2 apart, the same image's features within 1e-3)."""
    ckpt = load_checkpoint(run)
    targets = _features(ckpt, paths)
    true_score = ckpt.model.score

    def score(features: torch.Tensor) -> torch.Tensor:
        out = true_score(features)
        gap = (features.float()[:, None, :] - targets[None]).abs().amax(-1).min(-1).values
        return torch.where(gap < 0.05, torch.tensor(value, dtype=out.dtype), out)

    ckpt.model.score = score  # state_dict untouched: calibrate can still save this flow
    return ckpt


@pytest.fixture(scope="module")
def biggan(mini_bench: Path) -> list[Path]:
    return [p for p in list_images(mini_bench / "test" / "biggan") if p.name != "broken.jpg"]


# ----------------------------------------------------------------------------- Detector API


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_predict_makes_no_decision_from_a_non_finite_score(trained_run, biggan, value):
    ckpt = poisoned(trained_run, biggan[1:2], value)
    det = Detector(ckpt, _backbone(ckpt), "cpu")
    good, bad = det.predict(biggan[:2], skip_errors=True)
    assert good.error is None and good.decision in ("real", "ai-generated")
    assert (bad.score, bad.decision, bad.fpr_val, bad.p_value) == (None, None, None, None)
    assert NOT_FINITE in bad.error and bad.path == str(biggan[1])
    with pytest.raises(UnreadableImageError, match=NOT_FINITE):  # as for an unreadable file
        det.predict(biggan[:2])
    scores = det.score(biggan[:2], skip_errors=True)
    assert np.isfinite(scores[0]) and np.isnan(scores[1])  # NaN alone means "not scored"
    (by_file,) = det.score_files(biggan[1:2])
    assert by_file.decision is None and NOT_FINITE in by_file.error
    # nor at a conformal level, nor through the public helpers
    assert det.predict(biggan[1:2], skip_errors=True, fpr=0.5)[0].decision is None
    for helper in (det.label, det.fpr):
        with pytest.raises(ValueError, match=NOT_FINITE):
            helper(value)


def test_a_non_finite_copy_is_no_unsure_verdict(trained_run, biggan):
    """The copies vote too: a NaN copy would otherwise vote "real"."""
    from clipflow.eval.conformal import unsure_perturbations

    ckpt = load_checkpoint(trained_run)
    (copy,) = unsure_perturbations(1)
    det = Detector(ckpt, _backbone(ckpt), "cpu")
    copy_features = det.backbone(det.transform(copy(to_uint8_chw(biggan[0])))[None])
    true_score = ckpt.model.score

    def score(features):
        gap = (features.float() - copy_features).abs().amax(-1)
        return torch.where(gap < 0.05, torch.tensor(math.nan), true_score(features))

    ckpt.model.score = score
    (pred,) = det.predict(biggan[0], skip_errors=True, unsure_k=1)
    assert pred.decision is None and f"its {copy.name} copy" in pred.error


def test_conformal_decide_and_metrics_refuse_nan():
    cal = ConformalCalibration(np.arange(10.0))
    with pytest.raises(ValueError, match="NaN score"):
        cal.decide(np.array([3.0, np.nan]), 0.5)
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="finite scores"):
        dataset_metrics(np.array([0.1, 0.2, np.nan, 0.9]), labels, 0.5)
    with pytest.raises(ValueError, match="finite scores"):
        ours_metrics(np.array([0.1, np.inf, 0.3, 0.9]), labels, np.arange(10.0))


# ----------------------------------------------------------------------------- clipflow-detect


def test_cli_lists_the_image_without_a_decision_and_exits_4(
    call_main, monkeypatch, trained_run, biggan
):
    ckpt = poisoned(trained_run, biggan[:1])
    monkeypatch.setattr("clipflow.checkpoints.checkpoint.load_checkpoint", lambda path: ckpt)
    args = (f"ckpt={trained_run}", f"inputs=[{biggan[0]},{biggan[1]}]", "num_workers=0")
    code, out, err = call_main(detect_cli.main, "clipflow-detect", *args, "out=-")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == SomeFilesUnreadableError.exit_code == 4
    assert records[0]["decision"] is None and records[0]["fpr_val"] is None
    assert records[0]["score"] is None and NOT_FINITE in records[0]["error"]
    assert records[1]["decision"] in ("real", "ai-generated") and records[1]["error"] is None
    assert "1 of 2 inputs could not be scored" in err.strip().splitlines()[-1]
    code, table, _ = call_main(detect_cli.main, "clipflow-detect", *args)
    assert code == 4 and "no decision" in table and "1 scored" in table
    assert "1 no decision" in table and "unreadable" not in table


# ----------------------------------------------------------------------------- clipflow-eval


def test_eval_counts_and_lists_images_with_a_non_finite_score(
    monkeypatch, trained_run, mini_bench, biggan, tmp_path
):
    ckpt = poisoned(trained_run, biggan[:1])
    monkeypatch.setattr("clipflow.runs.evaluate.load_checkpoint", lambda path: ckpt)
    settings = EvalSettings(ckpt=str(trained_run), device="cpu")
    settings.data.test_root, settings.data.num_workers = str(mini_bench / "test"), 0
    out = run_eval(settings, tmp_path / "eval")
    skipped = dict(line.split("\t") for line in out["skipped.txt"].read_text().splitlines())
    assert NOT_FINITE in skipped[str(biggan[0])]
    assert "broken.jpg" in out["skipped.txt"].read_text()  # the unreadable one still listed
    meta = json.loads(out["metrics.json"].read_text())
    assert meta["n_not_finite"] == 1 and meta["n_skipped"] == len(skipped)
    row = next(r for r in meta["datasets"] if r["dataset"] == "biggan")
    assert row["n_real"] + row["n_fake"] == len(biggan) - 1  # left out, not decided "real"
    assert str(biggan[0]) not in out["scores.csv"].read_text()
    md = out["results.md"].read_text()
    assert "1 image(s) scored NaN or inf by the flow" in md and "1 unreadable file(s)" in md


def test_robustness_counts_and_lists_images_with_a_non_finite_score(
    monkeypatch, trained_run, mini_bench, biggan, tmp_path
):
    ckpt = poisoned(trained_run, biggan[:1])  # its clean features only: the JPEG copy differs
    monkeypatch.setattr("clipflow.runs.evaluate.load_checkpoint", lambda path: ckpt)
    settings = EvalSettings(ckpt=str(trained_run), device="cpu")
    settings.data.test_root, settings.data.num_workers = str(mini_bench / "test"), 0
    jpeg = parse_perturbation("jpeg50")
    run_robustness(settings, [jpeg], tmp_path / "robust")
    clean = tmp_path / "robust"
    listed = (clean / "skipped.txt").read_text()
    assert NOT_FINITE in listed and str(biggan[0]) in listed
    assert json.loads((clean / "metrics.json").read_text())["n_not_finite"] == 1
    under = clean / "perturb" / jpeg.name
    assert json.loads((under / "metrics.json").read_text())["n_not_finite"] == 0


# ----------------------------------------------------------------------------- clipflow-calibrate


def test_calibrate_skips_a_photo_with_a_non_finite_score_and_records_it(
    monkeypatch, trained_run, tmp_path
):
    photos = [
        write_image(tmp_path / "photos" / f"p{i}.png", (40, 32), seed=70 + i) for i in range(6)
    ]
    ckpt = poisoned(trained_run, photos[2:3], math.inf)
    monkeypatch.setattr("clipflow.runs.calibrate.load_checkpoint", lambda path: ckpt)
    settings = CalibrateSettings(ckpt=str(trained_run), min_reals=3, device="cpu")
    settings.data.real_root, settings.data.num_workers = str(tmp_path / "photos"), 0
    new = load_checkpoint(run_calibrate(settings, tmp_path / "calibrated"))
    record = new.meta["calibration"]
    assert (record["n"], record["n_skipped"]) == (5, 1)
    assert len(new.val_real_scores) == 5 and torch.isfinite(new.val_real_scores).all()
