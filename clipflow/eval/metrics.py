"""Scores -> metrics per dataset (sklearn) and the validation threshold (SPEC §7).

Labels: 0 = real, 1 = fake. Prediction: fake iff score > threshold (strict).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from .conformal import CalibrationError, ConformalCalibration

METRIC_COLUMNS = (
    "n_real",
    "n_fake",
    "ap",
    "acc@val",
    "real_acc@val",
    "fake_acc@val",
    "auc",
    "acc@oracle",
)
# Ours, not the paper's (clipflow-eval lists them after METRIC_COLUMNS; docs/calibration.md).
# tpr@fprX%(roc): TPR where the set's own ROC (test labels) reaches X % FPR on its reals.
# fpr@pX% / tpr@pX%: the conformal decision p <= X % against the checkpoint's calibration reals:
# realised FPR on the set's reals (guaranteed <= X % only if they are exchangeable with the
# calibration reals) and TPR on its fakes. Empty when no calibration scores reach the level.
OURS_LEVELS = (0.01, 0.05)
OURS_COLUMNS = (
    *(f"tpr@fpr{100 * a:g}%(roc)" for a in OURS_LEVELS),
    *(f"{rate}@p{100 * a:g}%" for a in OURS_LEVELS for rate in ("fpr", "tpr")),
)


def calibrate_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold that maximises accuracy on (scores, labels), midway between sorted scores.

    Ties in accuracy go to the lowest such threshold. With one class only, the threshold
    sits just outside the scores so that every sample is classified as that class.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if len(scores) == 0:
        raise ValueError("cannot calibrate a threshold on zero samples")
    if not np.isfinite(scores).all():
        raise ValueError("cannot calibrate a threshold on non-finite scores")
    uniq, group = np.unique(scores, return_inverse=True)
    candidates = _candidate_thresholds(uniq)
    # Candidate k lies between uniq[k-1] and uniq[k]: the reals among uniq[:k] and the fakes
    # among uniq[k:] are right. Counting per distinct score keeps ties on one side, and integer
    # counts order exactly as the accuracies they divide into, so argmax (first = lowest
    # threshold) picks what the former accuracy-per-candidate loop picked, in O(n log n).
    m = len(uniq)
    real_per = np.bincount(group[labels == 0], minlength=m)
    fake_per = np.bincount(group[labels == 1], minlength=m)
    real_below = np.concatenate([[0], np.cumsum(real_per)])
    fake_above = int(fake_per.sum()) - np.concatenate([[0], np.cumsum(fake_per)])
    return float(candidates[int(np.argmax(real_below + fake_above))])


def _candidate_thresholds(uniq: np.ndarray) -> np.ndarray:
    """Below all, midway between neighbours, above all, for the sorted distinct scores."""
    mids = (uniq[:-1] + uniq[1:]) / 2
    # Candidate k must satisfy uniq[k-1] <= t < uniq[k]; between subnormal neighbours the
    # midpoint can round up onto uniq[k] (e.g. -5e-324 and 0.0 give -0.0 == 0.0).
    mids = np.where(mids < uniq[1:], mids, uniq[:-1])
    margin = max(1.0, float(np.abs(uniq).max())) * 1e-6
    return np.concatenate([[uniq[0] - margin], mids, [uniq[-1] + margin]])


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Accuracy of ``score > threshold`` against labels (1 = fake)."""
    return float(np.mean((np.asarray(scores) > threshold).astype(int) == np.asarray(labels)))


def oracle_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best accuracy over all thresholds, chosen on the *test labels* (always labelled oracle)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    # Threshold below index i: samples [0, i) predicted real, [i, n) fake; only cut between
    # distinct scores, so equal scores never land on both sides.
    n = len(s)
    real_below = np.concatenate([[0], np.cumsum(y == 0)])  # (n+1,)
    fake_above = np.concatenate([[0], np.cumsum(y[::-1] == 1)])[::-1]  # (n+1,)
    valid = np.ones(n + 1, bool)
    valid[1:n] = s[1:] != s[:-1]
    return float(((real_below + fake_above)[valid]).max() / n)


def dataset_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """All per-dataset numbers of the results table (AP, AUC in %, accuracies in %)."""
    scores, labels = _finite(scores), np.asarray(labels, int)
    real, fake = scores[labels == 0], scores[labels == 1]
    if len(real) == 0 or len(fake) == 0:
        raise ValueError("a dataset needs both real and fake images for AP/AUC")
    return {
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
        "ap": 100 * float(average_precision_score(labels, scores)),
        "acc@val": 100 * accuracy_at(scores, labels, threshold),
        "real_acc@val": 100 * float(np.mean(real <= threshold)),
        "fake_acc@val": 100 * float(np.mean(fake > threshold)),
        "auc": 100 * float(roc_auc_score(labels, scores)),
        "acc@oracle": 100 * oracle_accuracy(scores, labels),
    }


def mean_row(rows: list[dict]) -> dict[str, float]:
    """Arithmetic mean over the given rows; counts are summed. Which rows: clipflow.eval.means.
    An :data:`OURS_COLUMNS` value is averaged only when every row has it (else left out)."""
    out: dict[str, float] = {}
    for key in METRIC_COLUMNS:
        values = [r[key] for r in rows]
        out[key] = int(sum(values)) if key.startswith("n_") else float(np.mean(values))
    for key in OURS_COLUMNS:
        values = [r.get(key) for r in rows]
        if rows and all(v is not None for v in values):
            out[key] = float(np.mean(values))
    return out


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """Best TPR (in %) over the ROC points (sklearn roc_curve, test labels) with FPR <= target."""
    fpr, tpr, _ = roc_curve(np.asarray(labels, int), np.asarray(scores, float))
    return 100 * float(tpr[fpr <= target + 1e-12].max())  # fpr[0] = 0 always qualifies


def ours_metrics(
    scores: np.ndarray, labels: np.ndarray, cal_scores: np.ndarray | None = None
) -> dict[str, float | None]:
    """:data:`OURS_COLUMNS` of one set (in %); conformal ones None without usable calibration."""
    scores, labels = _finite(scores), np.asarray(labels, int)
    out: dict[str, float | None] = {
        f"tpr@fpr{100 * a:g}%(roc)": tpr_at_fpr(scores, labels, a) for a in OURS_LEVELS
    }
    cal = ConformalCalibration(cal_scores if cal_scores is not None else np.empty(0))
    for a in OURS_LEVELS:
        try:
            fake = cal.decide(scores, a)
        except CalibrationError:  # too few calibration reals for this level
            fake = None
        for rate, y in (("fpr", 0), ("tpr", 1)):
            out[f"{rate}@p{100 * a:g}%"] = (
                None if fake is None else 100 * float(np.mean(fake[labels == y]))
            )
    return out


def _finite(scores: np.ndarray) -> np.ndarray:
    """``scores`` as floats; NaN/inf refused: a comparison with NaN is False, so every
    accuracy would count it as a "real" decision (clipflow.runs.evaluate leaves them out)."""
    scores = np.asarray(scores, float)
    if not np.isfinite(scores).all():
        raise ValueError("metrics need finite scores: leave the NaN/inf ones out and record them")
    return scores


def false_positive_rate(val_real_scores: np.ndarray, score: float) -> float:
    """Share of natural validation images that score at least ``score`` (empirical FPR)."""
    val = np.asarray(val_real_scores, float)
    return float(np.mean(val >= score)) if len(val) else float("nan")
