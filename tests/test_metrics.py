"""Metrics equal sklearn; hand-checked accuracies; the strict threshold rule; calibration."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from clipflow.errors import DataError
from clipflow.eval.means import PAPER_SETS, paper_first, summarize
from clipflow.eval.metrics import (
    METRIC_COLUMNS,
    _candidate_thresholds,
    accuracy_at,
    calibrate_threshold,
    dataset_metrics,
    false_positive_rate,
    mean_row,
    oracle_accuracy,
)


def test_ap_and_auc_equal_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 200)
        labels[:2] = [0, 1]
        scores = rng.normal(size=200) + labels * rng.uniform(0, 2)
        m = dataset_metrics(scores, labels, threshold=0.0)
        assert m["ap"] == pytest.approx(100 * average_precision_score(labels, scores))
        assert m["auc"] == pytest.approx(100 * roc_auc_score(labels, scores))
        assert (m["n_real"], m["n_fake"]) == ((labels == 0).sum(), (labels == 1).sum())


def test_accuracies_by_hand_with_strict_threshold():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = np.array([0, 0, 1, 1, 1])
    m = dataset_metrics(scores, labels, threshold=0.4)
    # fake iff score > 0.4: only 0.8 is called fake; both 0.4s are called real.
    assert m["acc@val"] == pytest.approx(100 * 3 / 5)
    assert m["real_acc@val"] == pytest.approx(100.0)
    assert m["fake_acc@val"] == pytest.approx(100 / 3)
    assert accuracy_at(scores, labels, 0.3) == pytest.approx(
        4 / 5
    )  # only the real 0.1 is called real


def test_oracle_matches_brute_force_and_never_splits_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = rng.integers(0, 6, 30).astype(float)  # many ties
        labels = rng.integers(0, 2, 30)
        cuts = np.concatenate([[scores.min() - 1], np.unique(scores)])
        brute = max(accuracy_at(scores, labels, t) for t in cuts)
        assert oracle_accuracy(scores, labels) == pytest.approx(brute)
    assert oracle_accuracy(np.array([1.0, 1.0]), np.array([0, 1])) == pytest.approx(0.5)


def test_threshold_calibration_on_toy_sets():
    assert calibrate_threshold(
        np.array([0, 1, 2, 3, 4.0]), np.array([0, 0, 0, 1, 1])
    ) == pytest.approx(2.5)
    t = calibrate_threshold(np.array([0.0, 2.0, 1.0, 3.0]), np.array([0, 0, 1, 1]))
    assert accuracy_at(np.array([0.0, 2.0, 1.0, 3.0]), np.array([0, 0, 1, 1]), t) == pytest.approx(
        0.75
    )
    only_real = calibrate_threshold(np.array([1.0, 2.0]), np.array([0, 0]))
    assert only_real > 2.0


def _reference_threshold(scores, labels) -> float:
    """The former quadratic calibration (accuracy at every candidate), kept as the reference."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    candidates = _candidate_thresholds(np.unique(scores))
    accs = [accuracy_at(scores, labels, t) for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def test_candidates_lie_strictly_between_neighbours_even_when_subnormal():
    # -5e-324 and 0.0: their midpoint rounds to -0.0 == 0.0, which would put the 0.0 score on
    # the wrong side of the candidate meant to separate the two.
    uniq = np.array([-5e-324, 0.0])
    candidates = _candidate_thresholds(uniq)
    assert candidates[0] < uniq[0] <= candidates[1] < uniq[1] < candidates[2]
    scores, labels = np.array([0.0, -5e-324]), np.array([1, 0])
    t = calibrate_threshold(scores, labels)
    assert accuracy_at(scores, labels, t) == 1.0


def test_sorted_sweep_equals_the_quadratic_reference_on_seeded_cases():
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(1, 120))
        kind = case % 4
        if kind == 0:  # heavy ties: a handful of distinct values
            scores = rng.integers(0, 4, n).astype(float)
        elif kind == 1:  # continuous, separable-ish
            scores = rng.normal(size=n)
        elif kind == 2:  # one value only
            scores = np.full(n, float(rng.normal()))
        else:  # large magnitudes (the margin scales with them) and ties
            scores = rng.choice([-1e7, -3.5, 0.0, 2.25, 1e7], n)
        labels = rng.integers(0, 2, n) if case % 5 else np.full(n, case % 2)
        scores = scores + labels * rng.uniform(0, 1) * (kind == 1)
        assert calibrate_threshold(scores, labels) == _reference_threshold(scores, labels)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([-1.0, 0.0, -0.0, 0.5, 1.0]),
                st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
            ),
            st.integers(0, 1),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_sorted_sweep_equals_the_quadratic_reference_property(pairs):
    scores = np.array([s for s, _ in pairs], float)
    labels = np.array([y for _, y in pairs], int)
    assert calibrate_threshold(scores, labels) == _reference_threshold(scores, labels)


def test_threshold_calibration_rejects_non_finite_scores():
    with pytest.raises(ValueError, match="non-finite"):
        calibrate_threshold(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="zero samples"):
        calibrate_threshold(np.array([]), np.array([], int))


def test_mean_row_and_one_sided_sets():
    rows = [
        dataset_metrics(np.array([0, 1.0]), np.array([0, 1]), 0.5),
        dataset_metrics(np.array([1, 0.0]), np.array([0, 1]), 0.5),
    ]
    mean = mean_row(rows)
    assert mean["ap"] == pytest.approx((rows[0]["ap"] + rows[1]["ap"]) / 2)
    assert mean["n_real"] == 2
    with pytest.raises(ValueError):
        dataset_metrics(np.array([0.1, 0.2]), np.array([0, 0]), 0.0)


def test_false_positive_rate_counts_scores_at_or_above():
    assert false_positive_rate(np.array([0.0, 1.0, 2.0, 3.0]), 2.0) == pytest.approx(0.5)


def _rows(names, ap=50.0):
    return [
        {"dataset": n, **dict.fromkeys(METRIC_COLUMNS, ap + i), "n_real": 1, "n_fake": 1}
        for i, n in enumerate(names)
    ]


def test_means_all_19_without_extras_is_one_paper_mean_row():
    means = summarize(_rows(PAPER_SETS))
    assert means.mean.is_paper_mean and [r["dataset"] for r in means.table_rows()] == ["mean"]
    assert means.mean.values["ap"] == pytest.approx(50.0 + 9.0)  # mean of 50..68
    assert means.to_json()["mean_all"] == means.mean.values  # JSON always has both


def test_means_with_no_paper_set_average_everything_and_say_so():
    means = summarize(_rows(["mygen", "other"]))
    assert means.mean.sets == ("mygen", "other") and not means.mean.is_paper_mean
    assert "none in the paper" in means.mean.label and "None of the paper's" in means.note()
    assert len(means.table_rows()) == 1


def test_means_of_a_partial_tree_with_extras():
    means = summarize(_rows(["stylegan2", "progan", "dalle"]))
    assert means.mean.sets == ("progan", "dalle") and means.mean.values["ap"] == pytest.approx(51.5)
    assert means.mean_all.values["ap"] == pytest.approx(51.0)
    assert [r["in_paper"] for r in means.table_rows()] == ["2 of 19", "2 of 19 + 1 other"]
    assert "not the paper's mean" in means.mean.label and "stylegan2" in means.note()
    assert [r["dataset"] for r in paper_first(_rows(["stylegan2", "dalle", "progan"]))] == [
        "progan",
        "dalle",
        "stylegan2",
    ]
    with pytest.raises(DataError, match="'mean'"):
        summarize(_rows(["progan", "mean"]))
