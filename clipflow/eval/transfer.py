"""Does the calibration transfer? A test of each labelled set's realised FPR against the level.

The conformal decision ``p <= alpha`` flags a real photo with probability at most alpha only if
the photo and the calibration reals are exchangeable (drawn alike). On a labelled set we can
check that: count the set's reals the decision flags, x out of m, and ask how likely so many
would be if they were exchangeable with the n calibration reals.

The test is one-sided and exact. Given the calibration scores, each exchangeable real is
flagged with the same probability F (the share of the population above the stored threshold);
F itself is random over calibration draws, ``Beta(k + 1, n - k)`` with k = the most calibration
scores allowed at or above a flagged score (conformal.py's ``max_count``), whose mean
``(k + 1) / (n + 1)`` is the guarantee ``<= alpha``. So the count x follows the beta-binomial
``BetaBinomial(m, k + 1, n - k)``, and the p-value is its upper tail ``P(X >= x)``. For large n
this is the binomial ``Binomial(m, alpha)`` tail; for small n it is wider, because a small
calibration's threshold is itself noisy: a plain binomial against alpha would call an
exchangeable set "not like the calibration" whenever the calibration happened to set its
threshold low (see tests/test_calibration_warnings.py for the rates of both).

A set is flagged when the p-value at any level it is decided at (:data:`OURS_LEVELS`) is below
:data:`SIGNIFICANCE` = 0.001: with about 20 sets and 2 levels that keeps the chance of flagging
any exchangeable set in a run under ~4 % (Bonferroni), while a set whose realised FPR is several
times the level, on a few hundred reals, is flagged with a p-value far below it.
No scipy: the tail is summed in log space with :func:`math.lgamma` and numpy.
"""

from __future__ import annotations

import math

import numpy as np

from .conformal import (
    CalibrationError,
    ConformalCalibration,
    check_level,
    max_count,
    reals_needed,
    supported_levels,
)
from .metrics import OURS_LEVELS

SIGNIFICANCE = 1e-3
# Result-table columns: "yes" / "no" per set (blank: no level decidable), and the p-value.
TRANSFER_COLUMNS = ("cal_transfer", "cal_transfer_p")


def beta_binomial_tail(x: int, m: int, a: float, b: float) -> float:
    """``P(X >= x)`` for ``X ~ BetaBinomial(m, a, b)`` (a, b > 0), exactly, in log space."""
    if x <= 0:
        return 1.0
    if x > m:
        return 0.0
    j = np.arange(x, m + 1, dtype=float)  # the terms of the tail
    log_pmf = (
        math.lgamma(m + 1)
        - _lgamma(j + 1)
        - _lgamma(m - j + 1)
        + _lgamma(j + a)
        + _lgamma(m - j + b)
        - math.lgamma(m + a + b)
        + math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
    )
    top = float(log_pmf.max())
    return float(min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum())))


def _lgamma(v: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(float(t)) for t in v])


def exceedance_p_value(n_flagged: int, n_real: int, alpha: float, n_cal: int) -> float:
    """How likely ``n_flagged`` or more of ``n_real`` exchangeable reals are flagged by
    ``p <= alpha`` against ``n_cal`` calibration reals (the tail of the module's test)."""
    k = max_count(check_level(alpha, n_cal), n_cal)
    return beta_binomial_tail(n_flagged, n_real, k + 1, n_cal - k)


def transfer_metrics(
    scores: np.ndarray, labels: np.ndarray, cal_scores: np.ndarray | None
) -> dict[str, str | float | None]:
    """:data:`TRANSFER_COLUMNS` of one set: ``cal_transfer`` "no" when its reals are flagged
    significantly more often than the calibration allows at some level of :data:`OURS_LEVELS`,
    "yes" otherwise, None when no level can be decided; ``cal_transfer_p`` the smallest
    p-value over the levels."""
    real = np.asarray(scores, float)[np.asarray(labels, int) == 0]
    cal = ConformalCalibration(cal_scores if cal_scores is not None else np.empty(0))
    p_values = []
    for alpha in OURS_LEVELS:
        try:
            flagged = int(cal.decide(real, alpha).sum())
        except CalibrationError:  # too few calibration reals for this level: not decided
            continue
        p_values.append(exceedance_p_value(flagged, len(real), alpha, cal.n))
    if not p_values or len(real) == 0:
        return {"cal_transfer": None, "cal_transfer_p": None}
    p = min(p_values)
    return {"cal_transfer": "no" if p < SIGNIFICANCE else "yes", "cal_transfer_p": p}


def transfer_warning(rows: list[dict], n_cal: int) -> str | None:
    """One warning naming the sets flagged "no", with their realised FPR, or None."""
    bad = [r for r in rows if r.get("cal_transfer") == "no"]
    if not bad:
        return None
    named = "; ".join(
        f"{r['dataset']} (fpr@p5% {_pct(r.get('fpr@p5%'))}, fpr@p1% {_pct(r.get('fpr@p1%'))}, "
        f"test p = {r['cal_transfer_p']:.2g})"
        for r in bad
    )
    return (
        f"the calibration does not transfer to {len(bad)} set(s): {named}. Their reals are "
        f"flagged far more often than the level, so they are not like the checkpoint's {n_cal} "
        "calibration reals and the fpr= guarantee does not hold on them; calibrate on photos "
        "like theirs (clipflow-calibrate) before deciding such photos with fpr= "
        f"(exact beta-binomial test, significance {SIGNIFICANCE:g}; docs/calibration.md)"
    )


def blank_levels_warning(n_cal: int) -> str | None:
    """Why the ``fpr@pX%`` / ``tpr@pX%`` columns of a level are blank, or None if none are."""
    blank = [a for a in OURS_LEVELS if a not in supported_levels(n_cal, OURS_LEVELS)]
    if not blank:
        return None
    cols = ", ".join(f"`fpr@p{100 * a:g}%`/`tpr@p{100 * a:g}%`" for a in blank)
    need = ", ".join(f"p <= {100 * a:g}% needs {reals_needed(a)}" for a in blank)
    return (
        f"{cols} are blank: the checkpoint has {n_cal} calibration reals and {need} "
        "(the smallest p-value with n reals is 1/(n+1)); clipflow-calibrate on more real photos"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
