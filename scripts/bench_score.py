"""Benchmark: ``score_features`` on CPU against a one-thread bare forward, in one run.

    python scripts/bench_score.py                 # 100,000 random 768-d features
    python scripts/bench_score.py --n 20000 --json score.json

Three cases on the same features and the same flow, alternating, best of ``--repeats``:

- ``bare_1thread``: the baseline, ``model.score`` over the batches with
  ``torch.set_num_threads(1)`` and nothing else;
- ``policy``: :func:`clipflow.flow.model.score_features` as eval, calibrate and detect call it
  (torch's default thread count outside; the function applies the flow's CPU thread policy);
- ``torch_default``: ``score_features(..., threads=None)``, i.e. the old behaviour (all the
  process's threads).

Prints rows/s of each and ``policy / bare`` (target: at most 1.2×).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow, score_features

TARGET = 1.2


@torch.no_grad()
def bare_forward(model: CLIPFlow, features: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model.score`` per batch with one intra-op thread; the caller's count restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.cat(
            [model.score(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
        )
    finally:
        torch.set_num_threads(before)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(n: int, dim: int, batch_size: int, repeats: int) -> dict:
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))  # (N, D)
    model = CLIPFlow(dim, FlowConfig()).eval()
    cases = {
        "bare_1thread": lambda: bare_forward(model, features, batch_size),
        "policy": lambda: score_features(model, features, batch_size),
        "torch_default": lambda: score_features(model, features, batch_size, threads=None),
    }
    same = torch.equal(cases["bare_1thread"](), cases["policy"]())  # also the warm-up
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():  # alternating: a change of load hits every case
            best[name] = min(best[name], _timed(fn))
    return {
        "n": n,
        "dim": dim,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "seconds": best,
        "rows_per_s": {k: n / v for k, v in best.items()},
        "policy_over_bare": best["policy"] / best["bare_1thread"],
        "default_over_bare": best["torch_default"] / best["bare_1thread"],
        "identical_scores": same,
        "target": TARGET,
    }


def print_table(r: dict) -> None:
    print(
        f"scoring {r['n']:,} × {r['dim']} features, batch {r['batch_size']}, "
        f"torch threads outside: {r['torch_threads']}"
    )
    for name, secs in r["seconds"].items():
        print(f"  {name:>14}: {secs:7.3f} s  {r['rows_per_s'][name]:10,.0f} rows/s")
    verdict = "PASS" if r["policy_over_bare"] <= r["target"] else "FAIL"
    print(
        f"policy / bare one-thread forward: {r['policy_over_bare']:.2f}× "
        f"(target ≤ {r['target']}×) {verdict}; torch default / bare: "
        f"{r['default_over_bare']:.2f}×; identical scores: {r['identical_scores']}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batch-size", type=int, default=8192, help="score_features' default")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    results = run(args.n, args.dim, args.batch_size, args.repeats)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
