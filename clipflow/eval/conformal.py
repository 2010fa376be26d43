"""Conformal p-values: decisions with a guaranteed false-positive rate on real photos.

A checkpoint stores the anomaly scores of n held-out real images (``val_real_scores``, or
those of the user's own photos after ``clipflow-calibrate``). For a new image with score s,

    p = (1 + #{calibration scores >= s}) / (n + 1)

and "ai-generated iff p <= alpha" flags a real image with probability at most alpha, provided
the new real image and the n calibration images are exchangeable (drawn alike; see
docs/calibration.md). Ties count as ">=", which keeps the guarantee when scores repeat.

The smallest p-value n calibration scores can give is 1 / (n + 1): a level below it would never
flag anything, so it is refused (:class:`CalibrationError`) with the number of reals needed.
Decisions are made on integer counts, never on rounded p-values, so ``decide`` and
``threshold`` agree exactly.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..errors import ClipflowError

# alpha * (n + 1) is compared as an integer count; this absorbs float error such as
# 0.05 * 20 = 1.0000000000000002 or 0.07 * 100 = 7.000000000000001 without changing any
# level a user can type with a few digits.
_EPS = 1e-9


class CalibrationError(ClipflowError):
    """A level the calibration scores cannot support, or unusable calibration scores."""


def reals_needed(alpha: float) -> int:
    """The fewest calibration scores n for which 1 / (n + 1) <= ``alpha``."""
    return max(1, math.ceil(1.0 / alpha - 1.0 - _EPS))


def check_level(alpha: Any, n: int) -> float:
    """``alpha`` as a float level; refused outside (0, 1), when it is no real number, or when
    ``n`` calibration scores can never reach it. Numpy scalars are levels like Python numbers."""
    level = _as_level(alpha)
    if level is None or not 0.0 < level < 1.0:
        raise CalibrationError(
            f"fpr={alpha!r}: the level must be a number in (0, 1), e.g. fpr=0.01"
        )
    if n < 1 or max_count(level, n) < 0:
        raise CalibrationError(
            f"fpr={level:g} needs at least {reals_needed(level)} calibration reals "
            f"(the smallest p-value with n reals is 1/(n+1)); this checkpoint has {n}: "
            f"recalibrate with clipflow-calibrate on more real photos, or raise fpr"
        )
    return level


def _as_level(alpha: Any) -> float | None:
    """A real number (Python or numpy, not a bool) as a float; None for anything else.

    A numpy float narrower than 64 bits becomes the decimal it prints as: np.float32(0.7) is
    0.699999988..., and 0.7 * (n + 1) would then count one real fewer than the user meant.
    """
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        return None
    if isinstance(alpha, np.floating) and np.finfo(alpha.dtype).bits < 64:
        return float(str(alpha))
    return float(alpha)


def max_count(alpha: float, n: int) -> int:
    """k: fake iff #{cal >= s} <= k (that is, (1 + count) / (n + 1) <= alpha)."""
    return math.floor(alpha * (n + 1) + _EPS) - 1


class ConformalCalibration:
    """Sorted calibration scores of real images, ready to give p-values for new scores."""

    def __init__(self, scores: np.ndarray):
        cal = np.asarray(scores, dtype=float).reshape(-1)
        if not np.isfinite(cal).all():
            raise CalibrationError("calibration scores must be finite")
        self.scores = np.sort(cal)

    @property
    def n(self) -> int:
        return len(self.scores)

    def count_at_least(self, scores: np.ndarray) -> np.ndarray:
        """#{calibration scores >= s} for each s (ties counted); NaN scores give -1."""
        s = np.asarray(scores, dtype=float)
        counts = self.n - np.searchsorted(self.scores, s, side="left")
        return np.where(np.isnan(s), -1, counts)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """(1 + #{cal >= s}) / (n + 1); NaN where the score is NaN."""
        counts = self.count_at_least(scores).astype(float)
        if self.n == 0:
            return np.full(counts.shape, np.nan)
        return np.where(counts < 0, np.nan, (1.0 + counts) / (self.n + 1))

    def decide(self, scores: np.ndarray, alpha: float) -> np.ndarray:
        """True (ai-generated) iff p <= alpha. A NaN score has no p-value, so no decision:
        it is refused (ValueError); callers record such images as errors first."""
        level = check_level(alpha, self.n)
        counts = self.count_at_least(scores)
        if (counts < 0).any():
            raise ValueError("a NaN score has no p-value: record it as an error, do not decide it")
        return counts <= max_count(level, self.n)

    def threshold(self, alpha: float) -> float:
        """The score t with ``p(s) <= alpha  iff  s > t`` (-inf: every score is flagged)."""
        k = max_count(check_level(alpha, self.n), self.n)
        return -math.inf if k >= self.n else float(self.scores[self.n - k - 1])


# ----------------------------------------------------------------------------- checkpoint checks

# The levels a user is likely to type; what a calibration of n reals supports is said in these.
COMMON_LEVELS = (0.01, 0.05, 0.1, 0.2)
# The levels clipflow-eval reports (fpr@p1%, fpr@p5%): a calibration that cannot reach one of
# them is worth a warning at training time (those columns would stay blank).
WARN_LEVELS = (0.01, 0.05)
# The checkpoint threshold flagging more than this share of its own calibration reals is
# called out: a detector that calls over a quarter of real photos ai-generated is not usable
# at its threshold (the demo's flags 87.5 %).
THRESHOLD_SHARE_LIMIT = 0.25


def smallest_level(n: int) -> float | None:
    """The smallest level n calibration scores can reach, 1 / (n + 1) (None without any)."""
    return 1.0 / (n + 1) if n >= 1 else None


def supported_levels(n: int, levels: tuple[float, ...] = COMMON_LEVELS) -> list[float]:
    """Those of ``levels`` that n calibration scores can reach."""
    return [a for a in levels if n >= 1 and max_count(a, n) >= 0]


def levels_text(n: int) -> str:
    """``fpr >= 0.0625 (of 0.01/0.05/0.1/0.2: 0.1, 0.2)``: what n calibration reals allow."""
    low = smallest_level(n)
    if low is None:
        return "no level (no calibration reals)"
    ok = supported_levels(n)
    common = "/".join(f"{a:g}" for a in COMMON_LEVELS)
    return f"fpr >= {low:.4g} (of {common}: {', '.join(f'{a:g}' for a in ok) or 'none'})"


def calibration_size_warning(n: int, remedy: str) -> str | None:
    """A warning when n calibration reals cannot reach one of :data:`WARN_LEVELS`: which
    levels they support, what the others need, and ``remedy`` (how to get more reals)."""
    missing = [a for a in WARN_LEVELS if a not in supported_levels(n, WARN_LEVELS)]
    if not missing:
        return None
    needs = " and ".join(f"fpr={a:g} needs {reals_needed(a)}" for a in missing)
    return (
        f"only {n} calibration reals: they support {levels_text(n)}; {needs} "
        f"(the smallest p-value with n reals is 1/(n+1)); {remedy}"
    )


def threshold_share(cal_scores: np.ndarray, threshold: float) -> float:
    """Share of the calibration reals that ``score > threshold`` calls ai-generated."""
    cal = np.asarray(cal_scores, float)
    return float(np.mean(cal > threshold)) if len(cal) else 0.0


# What to do about a threshold that flags its own calibration reals, besides deciding by p-value.
RETRAIN = "or retrain on more images / for more steps"


def threshold_share_warning(cal_scores: np.ndarray, threshold: float, remedy: str) -> str | None:
    """A warning when the threshold flags over :data:`THRESHOLD_SHARE_LIMIT` of the calibration
    reals (they are real photos: each one flagged is a false positive)."""
    share = threshold_share(cal_scores, threshold)
    return share_warning(share, len(cal_scores), threshold, remedy)


def share_warning(share: float, n_cal: int, threshold: float, remedy: str) -> str | None:
    """:func:`threshold_share_warning` from the share itself (what eval records in its meta)."""
    if share <= THRESHOLD_SHARE_LIMIT:
        return None
    return (
        f"the threshold {threshold:.4g} calls {100 * share:.1f}% of the checkpoint's "
        f"{n_cal} calibration reals ai-generated (real photos: false positives); "
        f"decisions at the threshold are not usable: decide by p-value (fpr=0.05) instead, {remedy}"
    )


# ----------------------------------------------------------------------------- unsure verdict

# Re-encodings an image meets online, alternating JPEG and resize so that any K mixes both.
# Fixed (no random draw): the same image always gets the same copies and the same verdict.
UNSURE_COPIES = (
    "jpeg90",
    "down0.75",
    "jpeg75",
    "down0.5",
    "jpeg95",
    "down0.9",
    "jpeg50",
    "jpeg75+down0.75",
)


def unsure_perturbations(k: Any) -> list:
    """The first ``k`` of :data:`UNSURE_COPIES` as clipflow.transforms.perturb operations
    (0: none). ``k`` is a whole number (Python or numpy); anything else is refused."""
    whole = isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))
    if not (whole and 0 <= k <= len(UNSURE_COPIES)):
        raise CalibrationError(
            f"unsure_k={k!r}: use a whole number of re-encoded copies per image, "
            f"0..{len(UNSURE_COPIES)} (0: none)"
        )
    if k == 0:
        return []
    from ..transforms.perturb import (
        parse_perturbation,  # torchvision: only when copies are asked for
    )

    return [parse_perturbation(name) for name in UNSURE_COPIES[: int(k)]]
