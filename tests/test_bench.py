"""The benchmark scripts run end to end on CPU (smoke runs, not timing tests).

Both are ``slow``: each generates JPEGs and times several passes (bench_extract in-process,
bench_memory in its own process, whose peak RSS it measures); ``make test`` runs them,
``make test-fast`` does not.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script_module(name: str):
    """``scripts/<name>.py``, loaded in-process (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its process pool pickles its functions by module name
    spec.loader.exec_module(module)
    return module


def _script_main(name: str):
    return _script_module(name).main


@pytest.mark.slow
def test_bench_smoke_run_reports_both_paths(tmp_path: Path, capsys):
    # In-process: a fresh interpreter would only add the torch import; the peak-RSS field is
    # read from this process then, which the assertion (> 0) allows.
    out = tmp_path / "bench.json"
    code = _script_main("bench_extract")(
        [
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
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
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
    assert "default = no flags: backbone.precision=fp32" in stdout
    assert "ratio" in stdout and len(list((tmp_path / "jpegs" / "jpeg256").glob("*.jpg"))) == 8
    # whether compile and the CUDA graph were in effect is recorded (on CPU: neither)
    assert result["speed"] == {
        "fast_compile": "off",
        "default_compile": "off",
        "train_cuda_graph": "off (cpu)",
    }
    assert "in effect: fast compile=off" in stdout and result["clone_us_per_batch"] > 0
    assert row["default_first_result_s"] > 0
    # the PASS/FAIL table from the results file: a CPU does not reach the GPU targets
    assert _script_main("bench_extract")(["--verdict", str(out)]) == 1
    table = capsys.readouterr().out
    assert "256 px end to end (default), img/s" in table and "| FAIL" in table
    assert "NOT RUN" in table  # no 1024-px row in this run


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


def test_memory_bench_train_child_streams_and_the_table_compares_to_the_first_size(
    tmp_path: Path, capsys, caplog
):
    # One size's child, in-process: packs written, located, one epoch streamed through a
    # one-batch buffer (5,000 rows > 4,096); then the table's ratios against the first size.
    caplog.set_level(logging.INFO, logger="clipflow.flow.fit")
    bench = _script_module("bench_memory")
    args = ["--child", "5000", "--train", "--dim", "32", "--budget-gb", "0.0001"]
    assert bench.main(args + ["--data", str(tmp_path / "packs")]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (row["n"], row["dim"], row["path"]) == (5000, 32, "stream")
    assert row["peak_rss_mb"] >= row["rss_after_setup_mb"] > 0 and row["loss"] == row["loss"]
    assert "streaming 5000 training rows through buffers of 4096" in caplog.text
    bigger = {**row, "n": 50000, "peak_rss_mb": 2 * row["peak_rss_mb"]}
    table = bench.train_table([row, bigger])
    assert "peak RSS 50,000 / 5,000 rows = 2.00x" in table


def test_cache_bench_smoke_full_hits_and_incremental(tmp_path: Path, capsys):
    # 200 cached files (full hits, the backbone refuses any call) then 10 new real images:
    # exactly those 10 must reach the backbone.
    out = tmp_path / "cache.json"
    code = _script_main("bench_cache")(
        ["--sizes", "200", "--incremental-size", "200", "--workdir", str(tmp_path)]
        + ["--json", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    (row,) = result["sizes"]
    assert row["n"] == 200 and row["measured"] and row["packs"] == 1
    parts = ("stat_key_s", "pack_headers_s", "lookup_s", "assemble_s", "cached_run_s")
    assert all(row[k] > 0 for k in parts)
    assert abs(row["us_per_file"] - row["cached_run_s"] / 200 * 1e6) < 1e-6
    assert result["extracted_new"] == 10 and result["incremental"]["cached"] == 200
    assert "backbone saw 10 images" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # the temporary folder is removed


@pytest.mark.slow
def test_score_bench_reports_the_ratio_to_a_bare_one_thread_forward(tmp_path: Path, capsys):
    out = tmp_path / "score.json"
    code = _script_main("bench_score")(
        ["--n", "600", "--dim", "64", "--batch-size", "256", "--repeats", "1", "--json", str(out)]
    )
    assert code == 0
    r = json.loads(out.read_text())
    assert set(r["seconds"]) == {"bare_1thread", "policy", "torch_default"}
    assert r["policy_over_bare"] > 0 and r["identical_scores"] is True
    assert "policy / bare one-thread forward" in capsys.readouterr().out
