"""What a run says when it is too small: the warnings of training, calibration and detection.

Each warning is a kind -> one-line message. A run logs each one (``log.warning``: the console
shows it) and records the same map as ``warnings`` in what it writes (model.json of a
checkpoint), so that a later reader (clipflow-detect's footer, a model card) sees them too.
The rules and their bounds live beside the numbers they judge: the step count in
:mod:`clipflow.flow.fit`, the levels and the threshold share in :mod:`clipflow.eval.conformal`,
the transfer test in :mod:`clipflow.eval.transfer`; see docs/calibration.md.
"""

from __future__ import annotations

import logging

import numpy as np

from ..flow.config import TrainConfig
from ..flow.fit import short_training_warning
from .conformal import RETRAIN, calibration_size_warning, threshold_share_warning

log = logging.getLogger(__name__)

# How to get more calibration reals, as said by training and by clipflow-calibrate.
TRAIN_REMEDY = (
    "for more: more photos in the training folder, data.val_root=DIR, a larger "
    "data.val_fraction, or clipflow-calibrate on more real photos like yours"
)
CALIBRATE_REMEDY = "for more: clipflow-calibrate on more (distinct) real photos"


def training_warnings(
    train: TrainConfig,
    n_train: int,
    history: list[dict],
    threshold: float,
    cal_scores: np.ndarray,
    remedy: str = TRAIN_REMEDY,
) -> dict[str, str]:
    """The warnings of a finished training (short run, small calibration, a threshold that
    flags its own validation reals), logged; returns them for the checkpoint's record.
    ``remedy``: how to get more calibration reals (clipflow-calibrate refit says its own)."""
    return report(
        {
            "short_training": short_training_warning(n_train, train, history),
            **calibration_warnings(cal_scores, threshold, remedy),
        }
    )


def calibration_warnings(cal_scores: np.ndarray, threshold: float, remedy: str) -> dict:
    """Calibration size and threshold share of a checkpoint's calibration reals (unlogged)."""
    cal = np.asarray(cal_scores, float)
    return {
        "calibration_size": calibration_size_warning(len(cal), remedy),
        "threshold_share": threshold_share_warning(cal, threshold, RETRAIN),
    }


def report(found: dict[str, str | None]) -> dict[str, str]:
    """The warnings that apply (not None), each logged once; the map to record."""
    kept = {kind: text for kind, text in found.items() if text}
    for text in kept.values():
        log.warning("%s", text)
    return kept


# What the p-values of clipflow-detect rest on, where no labels can test it (its footer).
DETECT_ASSUMPTION = (
    "p_value and fpr= assume your photos are like the {n} calibration reals (same sources, "
    "cameras, processing); on other photos far more real ones can be flagged. To check: "
    "clipflow-calibrate on real photos like yours, or clipflow-eval on a labelled set like "
    "yours (its cal_transfer column)"
)


def detect_notes(cal_scores: np.ndarray, threshold: float, recorded: dict | None) -> list[str]:
    """The footer lines of clipflow-detect about the checkpoint itself: its warnings (the
    size and threshold ones recomputed, so a checkpoint older than them is judged too; the
    others as recorded), then what the guarantee assumes."""
    cal = np.asarray(cal_scores, float)
    found = {
        **{k: v for k, v in (recorded or {}).items() if isinstance(v, str)},
        **calibration_warnings(cal, threshold, CALIBRATE_REMEDY),
    }
    lines = [f"warning: {text}" for text in found.values() if text]
    return [*lines, DETECT_ASSUMPTION.format(n=len(cal))]
