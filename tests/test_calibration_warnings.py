"""Runs that say when they are too small or do not transfer (issue #24): a training too short
to have learned, too few calibration reals, a threshold that flags its own reals, duplicate
calibration photos, and labelled sets whose reals are not like the calibration photos."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import write_image
from scipy import stats

from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.cli import calibrate as calibrate_cli
from clipflow.data.layouts import TestSet
from clipflow.detect import Detector, table_footer
from clipflow.eval.checks import training_warnings
from clipflow.eval.conformal import (
    ConformalCalibration,
    calibration_size_warning,
    threshold_share,
    threshold_share_warning,
)
from clipflow.eval.means import summarize
from clipflow.eval.report import console_text, write_results
from clipflow.eval.transfer import (
    SIGNIFICANCE,
    beta_binomial_tail,
    exceedance_p_value,
    transfer_metrics,
)
from clipflow.flow.config import TrainConfig
from clipflow.flow.fit import MIN_STEPS, optimisation_steps, short_training_warning
from clipflow.paper.comparison import transfer_notes
from clipflow.paper.spec import ArmResult, SeedRun
from clipflow.runs.evaluate import evaluate_sets
from clipflow.settings.config import SettingsError, calibrate_settings

# ----------------------------------------------------------------------------- training


def test_a_run_of_few_steps_is_called_too_short_with_its_gap():
    cfg = TrainConfig(mode="N+P")  # the defaults: batch 128, 10 epochs
    history = [{"epoch": 10, "q_natural": -1.0, "q_proxy": -0.996}]
    text = short_training_warning(150, cfg, history)  # the folder: 2 batches x 10
    assert optimisation_steps(150, cfg) == 20
    assert "only 20 optimisation steps" in text and f"fewer than {MIN_STEPS}" in text
    assert "0.004 above the naturals'" in text and "train.epochs=125" in text
    # the paper's recipe (6,480 images) is long enough; so is the step count at the bound
    assert optimisation_steps(6480, cfg) == 510 and short_training_warning(6480, cfg, []) is None
    assert short_training_warning(MIN_STEPS * 128, TrainConfig(mode="N", epochs=1), []) is None


def test_training_logs_and_records_its_warnings(trained_run: Path, caplog):
    meta = load_checkpoint(trained_run).meta
    warnings = meta["warnings"]  # the tiny run: 2 epochs, ~18 images, 2 validation reals
    assert "optimisation steps" in warnings["short_training"]
    assert "only 2 calibration reals" in warnings["calibration_size"]
    assert "fpr=0.05 needs 19" in warnings["calibration_size"]
    assert "clipflow-calibrate" in warnings["calibration_size"]
    # the same function the run calls logs each one (the console shows them as it trains)
    with caplog.at_level(logging.WARNING, logger="clipflow.eval.checks"):
        found = training_warnings(TrainConfig(mode="N+P"), 150, [], 0.0, np.ones(15))
    assert set(found) == {"short_training", "calibration_size", "threshold_share"}
    assert [r.getMessage() for r in caplog.records] == list(found.values())


def test_calibration_size_says_which_levels_and_how_to_get_more():
    text = calibration_size_warning(15, "REMEDY")
    assert "only 15 calibration reals" in text and "fpr >= 0.0625" in text
    assert "0.1, 0.2" in text and "fpr=0.05 needs 19" in text and "fpr=0.01 needs 99" in text
    assert text.endswith("REMEDY")
    assert "fpr=0.05" not in calibration_size_warning(50, "R") and "needs 99" in (
        calibration_size_warning(50, "R")
    )
    assert calibration_size_warning(99, "R") is None


def test_a_threshold_flagging_its_own_reals_is_called_out():
    cal = np.arange(8.0)  # the demo's case: 7 of 8 calibration reals above the threshold
    text = threshold_share_warning(cal, 0.5, "REMEDY")
    assert "87.5% of the checkpoint's 8 calibration reals" in text and "fpr=0.05" in text
    assert threshold_share_warning(cal, 6.5, "R") is None  # 1 of 8: 12.5 %


# ----------------------------------------------------------------------------- detect footer


def test_detect_footer_says_the_warnings_and_what_the_guarantee_assumes(trained_run: Path):
    det = Detector.from_checkpoint(trained_run, device="cpu")
    footer = table_footer(det, [])
    assert "warning: only 2 calibration reals" in footer
    assert "warning: training ran only" in footer  # recorded by the training
    assert "assume your photos are like the 2 calibration reals" in footer
    assert "clipflow-calibrate on real photos like yours" in footer
    low = dataclasses.replace(det.ckpt, threshold=float(det.calibration.scores.min()) - 1.0)
    footer = table_footer(Detector(low, det.backbone, "cpu"), [])
    assert "calls 100.0% of the checkpoint's 2 calibration reals ai-generated" in footer


# ----------------------------------------------------------------------------- calibrate


@pytest.fixture
def calibrate(call_main):
    return lambda *args: call_main(calibrate_cli.main, "clipflow-calibrate", *args)


def test_copies_of_one_photo_are_one_photo_and_refused(calibrate, trained_run, tmp_path):
    folder = tmp_path / "copies"
    first = write_image(folder / "p00.png", size=(40, 32), seed=5)
    for i in range(1, 25):
        shutil.copy(first, folder / f"p{i:02d}.png")
    code, _, err = calibrate(
        f"ckpt={trained_run}", f"data.real_root={folder}", f"out={tmp_path / 'out'}"
    )
    assert code == 2 and "1 distinct usable real photos" in err, err
    assert "after dropping 24 duplicate(s)" in err and "at least 20 needed" in err
    assert not (tmp_path / "out").exists()


def test_calibrate_prints_what_it_used_and_records_duplicates(calibrate, trained_run, tmp_path):
    folder = tmp_path / "photos"
    for i in range(24):
        write_image(folder / f"p{i:02d}.png", size=(40, 32), seed=2000 + i)
    for i in range(3):
        shutil.copy(folder / f"p{i:02d}.png", folder / f"copy{i}.png")
    out = tmp_path / "calibrated"
    code, stdout, err = calibrate(
        f"ckpt={trained_run}",
        f"data.real_root={folder}",
        f"out={out}",
        "device=cpu",
        "data.num_workers=0",
    )
    assert code == 0, err
    assert "photos: 24 used, 0 skipped, 3 duplicate(s) dropped" in stdout
    assert "fpr=0.01: n/a (needs 99 reals)" in stdout and "fpr=0.05: score > " in stdout
    assert "supported levels: fpr >= 0.04" in stdout and "n = 24" in stdout
    ckpt = load_checkpoint(out)
    assert ckpt.meta["calibration"]["n"] == 24 and ckpt.meta["calibration"]["n_duplicates"] == 3
    warnings = ckpt.meta["warnings"]
    assert "3 photo(s) dropped as copies" in warnings["duplicates"]
    assert "fpr=0.01 needs 99" in warnings["calibration_size"]
    assert "short_training" in warnings  # the flow is the input's: its warning stays
    cal = ConformalCalibration(ckpt.val_real_scores.numpy())
    assert f"fpr=0.05: score > {cal.threshold(0.05):.4f}" in stdout


def test_min_reals_starts_where_discovery_does():
    with pytest.raises(SettingsError, match="min_reals"):
        calibrate_settings({"min_reals": 1})
    assert calibrate_settings({"min_reals": 2}).min_reals == 2


# ----------------------------------------------------------------------------- transfer


def test_beta_binomial_tail_is_exact():
    for x, m, a, b in [(3, 50, 1, 20), (10, 500, 5, 95), (0, 10, 1, 1), (7, 7, 2, 3)]:
        assert beta_binomial_tail(x, m, a, b) == pytest.approx(stats.betabinom.sf(x - 1, m, a, b))
    assert beta_binomial_tail(11, 10, 1, 1) == 0.0
    # far in the tail, where scipy's sf underflows to 0, it is still a positive number
    assert 0.0 < beta_binomial_tail(120, 500, 36, 685) < 1e-15


def test_exchangeable_sets_pass_and_the_plain_binomial_would_not():
    """Under exchangeability the test's false alarms stay under SIGNIFICANCE-ish rates, while
    a plain binomial against the level flags sets only because the calibration is small."""
    rng = np.random.default_rng(0)
    trials, n_cal, m, alpha = 400, 40, 1000, 0.05
    ours = plain = 0
    for _ in range(trials):
        cal = ConformalCalibration(rng.normal(size=n_cal))
        flagged = int(cal.decide(rng.normal(size=m), alpha).sum())
        ours += exceedance_p_value(flagged, m, alpha, n_cal) < 0.01
        plain += stats.binom.sf(flagged - 1, m, alpha) < 0.01
    assert ours <= stats.binom.ppf(1 - 1e-6, trials, 0.01)
    assert plain > 5 * max(ours, 1)  # the reason for the beta-binomial (docs/calibration.md)


def test_a_set_unlike_the_calibration_is_flagged_in_table_json_and_footer(tmp_path: Path):
    rng = np.random.default_rng(3)
    real = [tmp_path / f"r{i}" for i in range(300)]
    fake = [tmp_path / f"f{i}" for i in range(300)]
    other = [tmp_path / f"o{i}" for i in range(300)]
    score_of = {str(p): float(s) for p, s in zip(real, rng.normal(size=300))}
    score_of.update({str(p): float(s) for p, s in zip(fake, rng.normal(3.0, size=300))})
    score_of.update({str(p): float(s) for p, s in zip(other, rng.normal(1.5, size=300))})
    sets = [TestSet("like", "Like", real, fake), TestSet("news", "News", other, fake)]
    cal = rng.normal(size=50)  # 50 reals: p <= 1 % unreachable, its columns blank
    rows, score_rows = evaluate_sets(sets, score_of, 0.0, cal)
    by = {r["dataset"]: r for r in rows}
    assert by["like"]["cal_transfer"] == "yes" and by["news"]["cal_transfer"] == "no"
    assert by["news"]["cal_transfer_p"] < SIGNIFICANCE < by["like"]["cal_transfer_p"]
    assert by["news"]["fpr@p1%"] is None
    meta = {"threshold": 0.0, "backbone": {}, "n_calibration": 50}
    files = write_results(tmp_path / "out", rows, summarize(rows), meta, score_rows, [])
    md = files["results.md"].read_text()
    assert "does not transfer to 1 set(s): news (fpr@p5% " in md
    assert "`fpr@p1%`/`tpr@p1%` are blank: the checkpoint has 50 calibration reals" in md
    assert "| no |" in md and "| yes |" in md
    warnings = json.loads(files["metrics.json"].read_text())["warnings"]
    assert set(warnings) == {"calibration_transfer", "calibration_size"}
    assert transfer_metrics(np.ones(3), np.zeros(3), np.empty(0))["cal_transfer"] is None


def test_eval_says_when_the_checkpoint_threshold_flags_its_own_reals(tmp_path: Path):
    # the demo's case: every calibration real above the threshold, so acc@val says little
    rng = np.random.default_rng(4)
    real, fake = [tmp_path / f"r{i}" for i in range(40)], [tmp_path / f"f{i}" for i in range(40)]
    score_of = {str(p): float(s) for p, s in zip(real + fake, rng.normal(size=80))}
    cal = rng.normal(size=20)
    threshold = float(cal.min()) - 1.0
    rows, score_rows = evaluate_sets([TestSet("s", "S", real, fake)], score_of, threshold, cal)
    share = threshold_share(cal, threshold)
    meta = {"threshold": threshold, "backbone": {}, "n_calibration": 20, "threshold_share": share}
    files = write_results(tmp_path / "out", rows, summarize(rows), meta, score_rows, [])
    md = files["results.md"].read_text()
    assert "calls 100.0% of the checkpoint's 20 calibration reals ai-generated" in md
    warnings = json.loads(files["metrics.json"].read_text())["warnings"]
    assert "retrain" in warnings["threshold_share"]
    # the console shows each warning once: the run logged it, so the printed table drops it
    shown = console_text(md)
    assert "calibration reals ai-generated" not in shown and "| s | S |" in shown
    assert shown.count("\n\n\n") == md.count("\n\n\n")  # no blank line left behind
    # a threshold that flags few of them says nothing
    meta["threshold_share"] = threshold_share(cal, float(cal.max()))
    files = write_results(tmp_path / "ok", rows, summarize(rows), meta, score_rows, [])
    assert "threshold_share" not in json.loads(files["metrics.json"].read_text())["warnings"]


def test_reproduce_notes_name_the_sets_an_arm_does_not_transfer_to():
    rows = [{"dataset": "news", "cal_transfer": "no"}, {"dataset": "like", "cal_transfer": "yes"}]
    runs = {s: SeedRun(rows if s == 1 else rows[1:], 0.0, 1, {}) for s in (0, 1)}
    (note,) = transfer_notes(ArmResult("N+P", "clipflow", None, runs))
    assert note.startswith("N+P: the calibration does not transfer to news (seed 1)")
    assert "like (seed" not in note
    assert transfer_notes(ArmResult("P", "clipflow", None, {0: SeedRun(rows[1:], 0, 1, {})})) == []
