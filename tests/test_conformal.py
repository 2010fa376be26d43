"""Conformal p-values: uniformity, the FPR guarantee, ties, refused levels; clipflow-detect
fpr= / unsure=, clipflow-calibrate, and the conformal columns of clipflow-eval."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import write_image
from scipy import stats

from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.cli import calibrate as calibrate_cli
from clipflow.cli import detect as detect_cli
from clipflow.data.imageio import list_images
from clipflow.data.layouts import TestSet
from clipflow.detect import Detector
from clipflow.eval.conformal import (
    CalibrationError,
    ConformalCalibration,
    check_level,
    reals_needed,
    unsure_perturbations,
)
from clipflow.eval.metrics import OURS_COLUMNS, mean_row, ours_metrics
from clipflow.eval.predictions import UNSURE
from clipflow.eval.report import RESULTS_COLUMNS
from clipflow.eval.transfer import TRANSFER_COLUMNS
from clipflow.runs.calibrate import fingerprint
from clipflow.runs.evaluate import evaluate_sets

# ----------------------------------------------------------------------------- statistics


def test_p_values_of_exchangeable_reals_are_uniform():
    rng = np.random.default_rng(0)
    cal = ConformalCalibration(rng.normal(size=2000))
    p = cal.p_values(rng.normal(size=2000))
    assert p.min() >= 1 / 2001 and p.max() <= 1.0
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # the same test notices a shift (the check above could fail for the right reason)
    shifted = cal.p_values(rng.normal(loc=0.3, size=2000))
    assert stats.kstest(shifted, "uniform").pvalue < 1e-6


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.10])
def test_false_positive_rate_guarantee_holds(alpha: float):
    # T independent trials, each a fresh calibration set of n reals and one new real: the
    # number flagged is Binomial(T, q) with q <= alpha exactly, so an exact binomial bound
    # (one-sided, 1e-6) is the slack; alpha * (n + 1) is an integer, so q = alpha and the
    # lower bound checks that the decision is not needlessly conservative either.
    trials, n = 4000, 199
    rng = np.random.default_rng(int(alpha * 1000))
    cal_sets, new = rng.standard_t(5, size=(trials, n)), rng.standard_t(5, size=trials)
    flagged = sum(
        bool(ConformalCalibration(c).decide(np.array([s]), alpha)[0]) for c, s in zip(cal_sets, new)
    )
    assert flagged <= stats.binom.ppf(1 - 1e-6, trials, alpha), flagged
    assert flagged >= stats.binom.ppf(1e-6, trials, alpha), flagged


def test_ties_count_as_at_least_and_threshold_agrees_with_decide():
    cal = ConformalCalibration(np.array([2.0, 1.0, 1.0, 3.0, 2.0]))
    p = cal.p_values(np.array([0.0, 1.0, 2.0, 2.5, 3.0, 3.5, np.nan]))
    expected = [6 / 6, 6 / 6, 4 / 6, 2 / 6, 2 / 6, 1 / 6]
    assert np.allclose(p[:-1], expected) and np.isnan(p[-1])
    rng = np.random.default_rng(1)
    ties = ConformalCalibration(rng.integers(0, 20, size=300).astype(float))
    probe = np.arange(-1, 22, 0.5)
    for alpha in (0.01, 0.05, 0.1, 0.5):
        fake = ties.decide(probe, alpha)
        assert np.array_equal(fake, probe > ties.threshold(alpha)), alpha
        assert np.array_equal(fake, ties.p_values(probe) <= alpha + 1e-12), alpha


def test_a_level_below_one_over_n_plus_one_is_refused():
    cal = ConformalCalibration(np.arange(50.0))
    assert reals_needed(0.01) == 99 and reals_needed(0.05) == 19 and reals_needed(0.5) == 1
    with pytest.raises(CalibrationError, match="needs at least 99 calibration reals") as info:
        cal.decide(np.array([100.0]), 0.01)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert cal.decide(np.array([100.0]), 1 / 51)[0]  # exactly 1/(n+1): reachable
    with pytest.raises(CalibrationError, match="in \\(0, 1\\)"):
        cal.threshold(0.0)


def test_a_numpy_level_means_the_number_it_prints():
    """np.float32(0.7) is 0.699999988...: 0.7 * 10 reals must still count 7, not 6."""
    cal = ConformalCalibration(np.arange(9.0))
    probe = np.linspace(-1.0, 10.0, 45)
    assert check_level(np.float32(0.7), 9) == 0.7 and type(check_level(np.float32(0.5), 9)) is float
    assert np.array_equal(cal.decide(probe, np.float32(0.7)), cal.decide(probe, 0.7))
    assert cal.threshold(np.float16(0.5)) == cal.threshold(0.5)


# ----------------------------------------------------------------------------- eval columns


def test_eval_rows_have_our_columns_and_the_paper_columns_unchanged(tmp_path: Path):
    rng = np.random.default_rng(2)
    real = [tmp_path / f"r{i}" for i in range(400)]
    fake = [tmp_path / f"f{i}" for i in range(400)]
    score_of = {str(p): float(s) for p, s in zip(real, rng.normal(size=400))}
    score_of.update({str(p): float(s) for p, s in zip(fake, rng.normal(2.0, size=400))})
    sets = [TestSet("a", "A", real, fake), TestSet("b", "B", real[:200], fake[:200])]
    cal = rng.normal(size=500)
    rows, _ = evaluate_sets(sets, score_of, 0.5, cal)
    before, _ = evaluate_sets(sets, score_of, 0.5)  # no calibration: conformal columns empty
    for row, plain in zip(rows, before):
        ours = (*OURS_COLUMNS, *TRANSFER_COLUMNS)
        assert set(ours) <= set(row)
        assert {k: row[k] for k in plain if k not in ours} == {
            k: plain[k] for k in plain if k not in ours
        }
        assert plain["cal_transfer"] is None and row["cal_transfer"] == "yes"  # exchangeable
        assert plain["fpr@p1%"] is None and plain["tpr@fpr1%(roc)"] == row["tpr@fpr1%(roc)"]
        # the realised FPR of p <= 5 % on exchangeable reals: about 5 %, within sampling error
        assert 1.0 < row["fpr@p5%"] < 9.0 and row["tpr@p5%"] > row["fpr@p5%"]
        assert row["tpr@fpr1%(roc)"] <= row["tpr@fpr5%(roc)"]
    mean = mean_row(rows)
    assert mean["fpr@p5%"] == pytest.approx((rows[0]["fpr@p5%"] + rows[1]["fpr@p5%"]) / 2)
    assert "fpr@p5%" not in mean_row(before)
    assert RESULTS_COLUMNS[-len(OURS_COLUMNS) - 2 : -2] == OURS_COLUMNS
    assert RESULTS_COLUMNS[-2:] == TRANSFER_COLUMNS
    # ROC columns: a perfectly separated set has TPR 100 at any FPR
    perfect = ours_metrics(np.r_[np.zeros(5), np.ones(5)], np.r_[np.zeros(5), np.ones(5)])
    assert perfect["tpr@fpr1%(roc)"] == 100.0


# ----------------------------------------------------------------------------- detect


@pytest.fixture(scope="module")
def det(trained_run: Path) -> Detector:
    return Detector.from_checkpoint(trained_run, device="cpu", batch_size=4)


@pytest.fixture
def detect(call_main):
    return lambda *args: call_main(detect_cli.main, "clipflow-detect", *args)


@pytest.fixture
def calibrate(call_main):
    return lambda *args: call_main(calibrate_cli.main, "clipflow-calibrate", *args)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("my_photos")
    for i in range(24):
        write_image(folder / f"p{i:02d}.png", size=(40, 32), seed=1000 + i)
    return folder


def test_detect_fpr_records_p_value_level_and_n(detect, det, mini_bench: Path, trained_run):
    n = det.n_validation  # the tiny run holds out 1 image per class: 2 calibration reals
    code, _, err = detect(f"ckpt={trained_run}", f"inputs={mini_bench}", "fpr=0.01")
    assert code == 2 and "needs at least 99 calibration reals" in err
    assert f"has {n}" in err and len(err.strip().splitlines()) == 1
    folder = mini_bench / "test" / "mygen"
    code, out, _ = detect(
        f"ckpt={trained_run}", f"inputs=[{folder}]", "out=-", "fpr=0.5", "num_workers=0"
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(records) == len(list_images(folder))
    cal = ConformalCalibration(det.ckpt.val_real_scores.numpy())
    for r in records:
        assert (r["level"], r["n_cal"]) == (0.5, n)
        assert r["p_value"] == pytest.approx(cal.p_values(np.array([r["score"]]))[0])
        assert r["decision"] == ("ai-generated" if r["p_value"] <= 0.5 else "real")
    api = det.predict(list_images(folder), fpr=0.5)
    assert [p.decision for p in api] == [r["decision"] for r in records]
    assert np.allclose(det.p_values(list_images(folder)), [r["p_value"] for r in records])


def test_unsure_when_copies_disagree_and_not_when_they_agree(det: Detector, images_one):
    scores, _ = det._score([images_one], False, unsure_perturbations(4))
    lo, hi = float(scores[:, 0].min()), float(scores[:, 0].max())
    assert lo < hi  # the copies do move the score
    straddling = dataclasses.replace(det.ckpt, threshold=(lo + hi) / 2)
    unsure_det = Detector(straddling, det.backbone, "cpu")
    (pred,) = unsure_det.predict(images_one, unsure_k=4)
    assert pred.decision == UNSURE and (pred.score_min, pred.score_max) == pytest.approx((lo, hi))
    below = Detector(dataclasses.replace(det.ckpt, threshold=lo - 1.0), det.backbone, "cpu")
    (agree,) = below.predict(images_one, unsure_k=4)
    assert agree.decision == "ai-generated" and agree.score_min == pytest.approx(lo)
    (plain,) = det.predict(images_one)  # no copies asked: no spread
    assert plain.score_min is None and plain.decision != UNSURE


@pytest.fixture(scope="module")
def images_one(mini_bench: Path) -> Path:
    return list_images(mini_bench / "test" / "mygen")[0]


def test_detect_cli_unsure_records_spread(detect, mini_bench: Path, trained_run):
    folder = mini_bench / "test" / "mygen"
    code, out, _ = detect(
        f"ckpt={trained_run}", f"inputs=[{folder}]", "unsure=true", "unsure_k=2", "num_workers=0"
    )
    assert code == 0 and "spread" in out.splitlines()[0] and "re-encoded copies" in out


# ----------------------------------------------------------------------------- calibrate


def _digest(folder: Path) -> dict[str, str]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_calibrate_writes_a_new_valid_checkpoint(
    calibrate, detect, trained_run: Path, photos: Path, tmp_path: Path
):
    before = _digest(trained_run)
    out = tmp_path / "calibrated"
    common = (f"ckpt={trained_run}", f"data.real_root={photos}", "device=cpu")
    code, stdout, err = calibrate(*common, f"out={out}", "data.num_workers=0")
    assert code == 0, err
    assert f"checkpoint: {out / 'model.safetensors'}" in stdout
    assert _digest(trained_run) == before  # the input is untouched
    ckpt = load_checkpoint(out)  # schema-valid, hash-checked
    record = ckpt.meta["calibration"]
    assert record["n"] == 24 and record["refit"] is False
    assert record["fingerprint"] == fingerprint(list_images(photos), photos)
    assert record["source_sha256"] == load_checkpoint(trained_run).sha256
    det = Detector.from_checkpoint(out, device="cpu")
    assert det.n_validation == 24 and det.threshold == load_checkpoint(trained_run).threshold
    assert np.allclose(np.sort(det.score(list_images(photos))), det.calibration.scores, atol=1e-5)
    # fpr=0.05 needs 19 reals: the recalibrated checkpoint reaches it
    code, out_jsonl, _ = detect(f"ckpt={out}", f"inputs={photos}", "out=-", "fpr=0.05")
    assert code == 0 and all(json.loads(x)["n_cal"] == 24 for x in out_jsonl.splitlines())
    # never onto a checkpoint, never too few photos, never a level the photos cannot reach
    for args, needle in [
        ((f"out={out}",), "already holds a checkpoint"),
        ((f"out={trained_run}",), "input checkpoint's folder"),
        ((f"out={tmp_path / 'x'}", "min_reals=30"), "at least 30 needed"),
        ((f"out={tmp_path / 'y'}", "fpr=0.01"), "fpr=0.01 needs 99"),
    ]:
        code, _, err = calibrate(*common, *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "x").exists()  # a refused run leaves no empty folder behind
    (tmp_path / "empty").mkdir()
    code, _, err = calibrate(
        f"ckpt={trained_run}", f"data.real_root={tmp_path / 'empty'}", f"out={tmp_path / 'z'}"
    )
    assert code == 2 and "pass data.real_root=DIR" in err and "train_root" not in err, err
    assert _digest(trained_run) == before and load_checkpoint(out).sha256 == ckpt.sha256


def test_calibrate_refit_calibrates_on_held_out_photos(
    calibrate, trained_run: Path, photos: Path, tmp_path: Path
):
    common = (f"ckpt={trained_run}", f"data.real_root={photos}", "device=cpu", "refit=true")
    code, _, err = calibrate(*common, f"out={tmp_path / 'few'}")
    assert code == 2 and "held-out" in err  # 12 held out < min_reals=20
    out = tmp_path / "refit"
    code, _, err = calibrate(*common, f"out={out}", "min_reals=10", "data.num_workers=0")
    assert code == 0, err
    ckpt = load_checkpoint(out)
    record = ckpt.meta["calibration"]
    assert record["refit"] is True and record["n"] + record["n_fit"] == 24
    assert len(ckpt.val_real_scores) == record["n"] == ckpt.meta["validation"]["n_images"]
    assert ckpt.meta["train"]["n_images"] == record["n_fit"]  # fit and calibration disjoint
    assert len(ckpt.meta["history"]) >= 1
    # 12 calibration reals are too few for fpr=0.05: the advice is calibrate's, not training's
    size = ckpt.meta["warnings"]["calibration_size"]
    assert "clipflow-calibrate on more (distinct) real photos" in size
    assert "training folder" not in size


def test_calibrate_names_out_when_its_folder_cannot_be_written(calibrate, tmp_path: Path):
    """calibrate's run dir is out= (not hydra.run.dir): the error says which key to change."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = calibrate(
        f"ckpt={tmp_path / 'none'}", f"data.real_root={tmp_path}", f"out={blocker / 'sub'}"
    )
    assert code == 2
    assert err.startswith("error: cannot write the run dir") and "set out=DIR" in err, err
    assert len(err.strip().splitlines()) == 1
