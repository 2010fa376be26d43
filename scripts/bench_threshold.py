"""Threshold calibration: the sorted sweep against the former quadratic loop, in one run.

    python scripts/bench_threshold.py                      # 1k and 8k (both), 1M (sweep only)
    python scripts/bench_threshold.py --sizes 1000 --baseline-max 1000

Scores are half real, half fake (normal, fakes shifted by 1, rounded to float32 as the flow
gives them). Each size is timed as the best of ``--repeat`` runs. The quadratic baseline runs
only up to ``--baseline-max`` scores (its cost grows with n², 1M would take hours); where it
runs, the script checks that both give the identical threshold and prints the speed-up;
above it, the baseline is extrapolated as n² from the largest size measured in this run (marked
``~``, an estimate, not a measurement).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipflow.eval.metrics import accuracy_at, calibrate_threshold


def quadratic_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The former implementation: accuracy at every candidate threshold, O(n · distinct)."""
    uniq = np.unique(scores)
    mids = (uniq[:-1] + uniq[1:]) / 2
    margin = max(1.0, float(np.abs(uniq).max())) * 1e-6
    candidates = np.concatenate([[uniq[0] - margin], mids, [uniq[-1] + margin]])
    accs = [accuracy_at(scores, labels, t) for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def make_scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    scores = (rng.normal(size=n) + labels).astype(np.float32).astype(float)
    return scores, labels


def best_time(fn, scores, labels, repeat: int) -> tuple[float, float]:
    """(fastest wall time in seconds, the threshold)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(scores, labels)
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 1_000_000])
    ap.add_argument("--baseline-max", type=int, default=8000, help="largest n for the old loop")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'n':>9}  {'quadratic (s)':>13}  {'sweep (s)':>10}  {'speed-up':>9}  same")
    measured: tuple[int, float] | None = None  # (n, seconds) of the largest baseline run
    for n in sorted(args.sizes):
        scores, labels = make_scores(n)
        new_s, new_t = best_time(calibrate_threshold, scores, labels, args.repeat)
        if n <= args.baseline_max:
            old_s, old_t = best_time(quadratic_threshold, scores, labels, args.repeat)
            same = "yes" if old_t == new_t else f"NO ({old_t!r} vs {new_t!r})"
            print(f"{n:>9}  {old_s:>13.4f}  {new_s:>10.4f}  {old_s / new_s:>8.0f}x  {same}")
            measured = (n, old_s)
        elif measured:
            est = measured[1] * (n / measured[0]) ** 2
            print(f"{n:>9}  {f'~{est:.0f}':>13}  {new_s:>10.4f}  {f'~{est / new_s:.0f}x':>9}  -")
        else:
            print(f"{n:>9}  {'(skipped)':>13}  {new_s:>10.4f}  {'':>9}  -")


if __name__ == "__main__":
    main()
