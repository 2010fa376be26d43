"""The benchmark scripts run end to end on CPU (smoke runs, not timing tests).

Both are ``slow``: each starts a Python process that imports torch, generates JPEGs and times
several passes (about a minute each on 2 busy cores); ``make test`` runs them, ``make test-fast``
does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_smoke_run_reports_both_paths(tmp_path: Path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_extract.py"),
            "--n-baseline",
            "8",
            "--n-fast",
            "8",
            "--workers",
            "0",
            "--fast-batch",
            "4",
            "--train-n",
            "256",
            "--score-n",
            "1000",
            "--data",
            str(tmp_path / "jpegs"),
            "--gen-procs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    row = result["sizes"]["256"]
    assert row["baseline"] > 0 and row["fast_pil"] > 0 and row["default"] > 0
    assert abs(row["default_ratio"] - row["default"] / row["baseline"]) < 1e-9
    # the default row is the shipped config with no flags: every auto resolved for this CPU
    auto = result["default_config"]
    assert (auto["backbone.precision"], auto["data.decode"], auto["data.batch_size"]) == (
        "fp32",
        "pil",
        64,
    )
    assert abs(row["ratio"] - row["fast_pil"] / row["baseline"]) < 1e-9
    assert result["train_np_10ep_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["model_only"] > 0 and row["input_only_pil"] > 0
    assert "default = no flags: backbone.precision=fp32" in proc.stdout
    assert "ratio" in proc.stdout and len(list((tmp_path / "jpegs" / "jpeg256").glob("*.jpg"))) == 8


@pytest.mark.slow
def test_memory_bench_reports_peaks_per_size(tmp_path: Path):
    out = tmp_path / "mem.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_memory.py"),
            "--n",
            "20",
            "40",
            "--workers",
            "0",
            "--data",
            str(tmp_path / "jpegs"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["n"] for r in rows] == [20, 40] and [r["n_features"] for r in rows] == [20, 40]
    assert all(r["peak_rss_main_mb"] >= r["rss_after_setup_mb"] > 0 for r in rows)
