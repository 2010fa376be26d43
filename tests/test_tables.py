"""Comparison tables and the stored paper numbers, on hand-made experiment results (no training)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clipflow.data.layouts import DISPLAY_NAMES, PAPER_ORDER
from clipflow.eval.report import RANDOM_WARNING, scores_to_csv
from clipflow.paper.arm_summary import arm_summary_rows
from clipflow.paper.comparison import comparison, comparison_markdown, mean_over
from clipflow.paper.results import PAPER_TABLES, canonical_generator, load_table, paper_row
from clipflow.paper.spec import ArmResult, ArmSpec, ExperimentResult, ExperimentSpec, SeedRun
from clipflow.paper.tables import write_tables

SPEC_SECTION_9 = {  # SPEC §9 headline numbers: the stored tables must agree with them
    ("table1_ap", "Ours", "N"): 54.23, ("table1_ap", "Ours", "P"): 93.85,
    ("table1_ap", "Ours", "N+P"): 95.56,
    ("table2_acc", "Ours", "N"): 52.88, ("table2_acc", "Ours", "P"): 84.93,
    ("table2_acc", "Ours", "N+P"): 87.30,
    ("table3_ap", "N+P", "Smoothing"): 76.25, ("table3_ap", "N+P", "Sharpening"): 84.31,
    ("table3_ap", "N+P", "Gaussian noise"): 86.78, ("table3_ap", "N+P", "Color jitter"): 92.78,
    ("table3_ap", "N+P", "FM (onlyphase)"): 95.31, ("table3_ap", "N+P", "FM"): 95.56,
    ("table4_ap", "N+P", "Low"): 95.56, ("table4_ap", "N+P", "Mid"): 91.98,
    ("table4_ap", "N+P", "High"): 95.49,
    ("normalization_ap", "N+P", "without L2"): 93.41, ("normalization_ap", "N+P", "with L2"): 95.56,
    ("table1_ap", "UnivFD", "LC"): 93.38, ("table1_ap", "OnlyReal", "-"): 93.18,
    ("table1_ap", "DIRE", "-"): 86.41,
    ("table1_ap", "Freq-mask", "CLIP"): 89.28,
}  # fmt: skip
META = {
    "backbone": {
        "name": "clipflow-tiny",
        "weights_id": "clipflow-tiny:random-seed0",
        "random_init": True,
        "precision": "fp32",
    },
    "preprocess": "paper",
    "protocol": "all",
    "seeds": [0, 1],
    "train": {"per_class": 360, "views": 1, "loss": "logsigmoid", "epochs": None, "n_blocks": 8},
}


@pytest.mark.parametrize("key,value", sorted(SPEC_SECTION_9.items()))
def test_stored_paper_means_match_spec(key, value):
    table, method, variant = key
    assert paper_row(table, method, variant).mean == pytest.approx(value, abs=1e-9)


def test_transcribed_rows_average_to_their_printed_mean():
    """A typo in a transcribed cell shows as a mean that no longer matches (noted rows excepted)."""
    for table in ("table1_ap", "table2_acc", "table3_ap", "table4_ap", "table5_ap"):
        for row in load_table(table):
            values = [v for v in row.values.values() if v is not None]
            if len(values) == len(row.values) and not row.note:
                # 0.02: the paper's own rounding (CFlow's cells average 54.344, printed 54.33); a
                # mistyped cell moves the mean by ~0.05 or more.
                assert np.mean(values) == pytest.approx(row.mean, abs=0.02), f"{table} {row.label}"
    assert paper_row("table1_ap", "Ours", "N+P").value("seeingdark") == 80.06
    assert (
        paper_row("table2_acc", "PatchForensics", "Xception-Block2").value("progan") is None
    )  # ambiguous row


def test_every_table_loads_and_table5_matches_folder_names():
    for table in PAPER_TABLES:
        assert load_table(table), table
    assert [
        canonical_generator(n) for n in ("DALLE-3", "dalle3", "SD-v1.5", "RealVisXL_v4.0", "biggan")
    ] == ["dalle3", "dalle3", "sd15", "realvisxl", None]
    assert paper_row("table5_ap", "Ours", "P").value("DeepFloyd-IF") == 97.17


def _result(values: dict[str, dict[int, float]], sets=PAPER_ORDER) -> ExperimentResult:
    """Two arms (N+P with the paper's row, an arm without one) over seeds 0 and 1."""
    arms = []
    for name, paper in (("N+P", {"method": "Ours", "variant": "N+P"}), ("other", None)):
        runs = {}
        for seed, offset in values[name].items():
            rows = [
                {
                    "dataset": s,
                    "display_name": DISPLAY_NAMES[s],
                    "ap": 50.0 + i + offset,
                    "acc@val": 60.0 + offset,
                    "acc@oracle": 70.0,
                    "n_real": 2,
                    "n_fake": 2,
                }
                for i, s in enumerate(sets)
            ]
            scores = {
                s: (np.array([0.1, 0.2], np.float32), np.array([0.3, 0.4], np.float32))
                for s in sets
            }
            runs[seed] = SeedRun(
                rows, 0.25, 1000, scores, None, 1.0, [(s, DISPLAY_NAMES[s]) for s in sets]
            )
        arms.append(ArmResult(name, "clipflow", paper, runs, {"flow": {"dr_dim": 128}}))
    spec = ExperimentSpec(
        "t",
        "Test table",
        [ArmSpec("N+P"), ArmSpec("other")],
        compare=[
            {"table": "table1_ap", "metric": "ap"},
            {"table": "table2_acc", "metric": "acc@val"},
        ],
        plots=["bars", "histograms", "dr_curve"],
        histogram_sets=["progan", "guided"],
    )
    return ExperimentResult(spec, META, arms, [(s, DISPLAY_NAMES[s]) for s in sets])


def test_comparison_has_19_rows_plus_mean_paper_column_and_diff():
    result = _result({"N+P": {0: 0.0, 1: 2.0}, "other": {0: 1.0}})
    rows, columns, _ = comparison(result, "table1_ap", "ap")
    assert [r["dataset"] for r in rows] == [*PAPER_ORDER, "mean"]
    paper = paper_row("table1_ap", "Ours", "N+P")
    for i, row in enumerate(rows[:-1]):
        assert row["N+P:ours"] == pytest.approx(50.0 + i + 1.0)  # mean of seeds (offset 0 and 2)
        assert row["N+P:std"] == pytest.approx(np.std([0.0, 2.0], ddof=1))
        assert row["N+P:paper"] == paper.values[row["dataset"]]
        assert row["N+P:diff"] == pytest.approx(row["N+P:ours"] - row["N+P:paper"])
        assert row["other:paper"] is None and row["other:diff"] is None and row["other:std"] is None
    assert (
        rows[-1]["N+P:ours"] == pytest.approx(50.0 + 9.0 + 1.0) and rows[-1]["N+P:paper"] == 95.56
    )
    assert rows[-1]["N+P:diff"] == pytest.approx(rows[-1]["N+P:ours"] - 95.56)
    assert columns[:6] == [
        "dataset",
        "display_name",
        "N+P:ours",
        "N+P:std",
        "N+P:paper",
        "N+P:diff",
    ]


def test_partial_benchmark_marks_missing_sets_and_recomputes_the_paper_mean():
    sets = ("progan", "biggan", "stylegan2")  # stylegan2 is not one of the paper's 19
    result = _result({"N+P": {0: 0.0}, "other": {0: 0.0}}, sets=sets)
    rows, _, notes = comparison(result, "table1_ap", "ap")
    by = {r["dataset"]: r for r in rows}
    assert by["cyclegan"]["N+P:ours"] is None and by["stylegan2"]["N+P:paper"] is None
    assert by["mean"]["display_name"] == "Mean (2 sets)"
    assert by["mean"]["N+P:ours"] == pytest.approx(np.mean([50.0, 51.0]))  # stylegan2 not averaged
    assert by["mean"]["N+P:paper"] == pytest.approx(np.mean([99.94, 99.24]))
    assert any("recomputed over the 2 sets" in n for n in notes)
    md = comparison_markdown(result, "table1_ap", "ap")
    assert "| CycleGAN | missing |" in md


def test_mean_over_seeds_is_mean_of_per_seed_means():
    result = _result({"N+P": {0: 0.0, 1: 4.0, 2: 8.0}, "other": {0: 0.0}})
    mean, std = mean_over(result.arms[0], "ap", list(PAPER_ORDER))
    assert mean == pytest.approx(59.0 + 4.0) and std == pytest.approx(4.0)


def test_markdown_states_provenance_and_random_warning():
    md = comparison_markdown(_result({"N+P": {0: 0.0}, "other": {0: 0.0}}), "table2_acc", "acc@val")
    assert "backbone `clipflow-tiny`" in md and "weights `clipflow-tiny:random-seed0`" in md
    assert "preprocessing `paper`" in md and "protocol `all`" in md and "seeds [0, 1]" in md
    assert RANDOM_WARNING in md
    assert "| ProGAN | 60.00 | 99.22 | -39.22 |" in md  # ours, paper (Table II), Δ
    assert "UnivFD LC | 81.38" in md  # the paper's other rows, for context


def test_summary_and_files(tmp_path: Path):
    result = _result({"N+P": {0: 0.0, 1: 2.0}, "other": {0: 0.0}})
    rows = arm_summary_rows(result)
    assert (
        rows[0]["paper_mAP"] == 95.56
        and rows[0]["paper_acc"] == 87.30
        and rows[1]["paper_mAP"] is None
    )
    assert rows[0]["diff_mAP"] == pytest.approx(rows[0]["mAP"] - 95.56)
    paths = write_tables(result, tmp_path)
    assert {
        "table1_ap.csv",
        "table1_ap.md",
        "table2_acc.csv",
        "summary.md",
        "results.json",
        "ap_per_set.png",
        "histograms.png",
        "dr_width.png",
    } <= set(paths)
    parsed = list(csv.DictReader(io.StringIO((tmp_path / "table1_ap.csv").read_text())))
    assert len(parsed) == 20 and float(parsed[0]["N+P:paper"]) == 99.94
    for name in ("ap_per_set.png", "histograms.png", "dr_width.png"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert re.search(
        r"\| N\+P \| clipflow \| 1,000 \| 60\.00 ± 1\.41 \| 95\.56 \| -35\.56 \|",
        paths["summary.md"].read_text(),
    )


def test_scores_csv_reads_back_every_float32_score_exactly():
    values = torch.tensor(
        [0.1234567, 0.12345671, 0.12345672, -3.5e-8, 1234.5678], dtype=torch.float32
    ).tolist()
    rows = [
        {"path": f"{i}.png", "dataset": "d", "label": i % 2, "score": v}
        for i, v in enumerate(values)
    ]
    back = list(csv.DictReader(io.StringIO(scores_to_csv(rows))))
    parsed = torch.tensor([float(r["score"]) for r in back], dtype=torch.float32)
    assert torch.equal(parsed, torch.tensor(values, dtype=torch.float32))
    assert len(set(parsed.tolist())) == len(values)  # .6f would merge the first three into a tie


def test_diverged_seeds_are_left_out_and_said(tmp_path: Path):
    """A seed that diverged (loss=paper) is not averaged in silently; an arm with none is —."""
    result = _result({"N+P": {0: 0.0, 1: 2.0}, "other": {0: 0.0}})
    np_arm, other = result.arms
    np_arm.runs.pop(1)
    np_arm.failed[1] = "training diverged: loss=-inf in epoch 3 (loss=paper is unbounded)"
    other.runs.clear()
    other.failed[0] = "training diverged: loss=nan in epoch 1"
    rows = arm_summary_rows(result)
    assert rows[0]["mAP_std"] is None and rows[0]["failed_seeds"] == "1"
    assert rows[1]["mAP"] is None and rows[1]["n_params"] is None
    paths = write_tables(result, tmp_path)
    md = paths["summary.md"].read_text()
    assert "**N+P**: seed 1 left out (training diverged: loss=-inf" in md
    assert "its numbers are over seeds [0]" in md and "**other**: seed 0 left out" in md
    # beside the mean, how many seeds it leaves out (a diverged seed biases the mean upward)
    assert re.search(r"\| other \| clipflow \| — \| — \(1 of \d+ seeds diverged\) \|", md)
    np_row = next(line for line in md.splitlines() if line.startswith("| N+P |"))
    assert re.search(r"\(1 of \d+ seeds diverged\)", np_row) and rows[0]["n_diverged"] == 1
    assert '"1": "training diverged' in paths["results.json"].read_text()
