"""Ours vs the paper, per set and on the mean: the comparison tables (rows, Markdown).

Conventions: numbers are percentages; ``ours`` is the mean over seeds (± the sample standard
deviation when there are several); ``Δ = ours − paper``; an empty paper cell means the paper
gives no number there. The mean row averages the paper's sets only (sets outside them, e.g.
stylegan2, are listed but not averaged), per seed, then over seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.layouts import PAPER_ORDER, display_name
from ..eval.transfer import SIGNIFICANCE
from .formatting import fmt_number, fmt_signed
from .provenance import provenance
from .results import PaperRow, find_row, load_table, paper_sets
from .spec import ArmResult, ExperimentResult

METRIC_NAMES = {"ap": "AP", "acc@val": "accuracy at the validation threshold", "auc": "ROC-AUC"}
PAPER_METRIC = {
    "table1_ap": "ap",
    "table2_acc": "acc@val",
    "table3_ap": "ap",
    "table4_ap": "ap",
    "table5_ap": "ap",
    "normalization_ap": "ap",
    "fig4_ap": "ap",
}


# ------------------------------------------------------------------ statistics over seeds
def _stat(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std) over seeds, None (a seed without the number) left out; std is None
    for a single seed."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def per_set(arm: ArmResult, metric: str, dataset: str) -> tuple[float | None, float | None]:
    """An arm's metric on one set, over seeds."""
    return _stat(
        [
            next((r[metric] for r in run.rows if r["dataset"] == dataset), None)
            for run in arm.runs.values()
        ]
    )


def mean_over(
    arm: ArmResult, metric: str, datasets: list[str]
) -> tuple[float | None, float | None]:
    """The mean over ``datasets`` for each seed, then (mean, std) over seeds."""
    means: list[float | None] = []
    for run in arm.runs.values():
        vals = [r[metric] for r in run.rows if r["dataset"] in datasets]
        means.append(float(np.mean(vals)) if vals else None)
    return _stat(means)


def difference(ours: float | None, paper: float | None) -> float | None:
    """Δ = ours − paper; None when either is missing."""
    return None if ours is None or paper is None else ours - paper


# ------------------------------------------------------------------ comparison tables
def table_sets(
    result: ExperimentResult, table: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """(rows to show, sets averaged in the mean row) for a comparison with ``table``.

    ``table`` None (the spec compares with no such table) is only valid for ``sets: extra``.
    """
    evaluated = dict(result.sets)
    if result.spec.sets == "extra":
        return list(result.sets), list(evaluated)
    if table is None:  # the paper's sets come from the table: there is none to take them from
        raise KeyError(f"experiment {result.spec.name!r} compares with no paper table of its sets")
    paper = [s for s in PAPER_ORDER if s in paper_sets(table)] or list(PAPER_ORDER)
    rows = [(s, display_name(s)) for s in paper] + [
        (s, d) for s, d in result.sets if s not in paper
    ]
    averaged = [s for s in paper if s in evaluated] or list(evaluated)
    return rows, averaged


def paper_mean(row: PaperRow | None, averaged: list[str]) -> tuple[float | None, str]:
    """The paper's mean comparable to ours: its printed mean when we evaluated all of its sets."""
    if row is None:
        return None, ""
    sets = [s for s in row.values if row.values[s] is not None]
    if not sets or set(sets) <= set(averaged):
        return row.mean, ""
    vals = [v for v in (row.value(s) for s in averaged) if v is not None]
    if vals:
        return float(
            np.mean(vals)
        ), f"paper mean recomputed over the {len(vals)} sets evaluated here"
    return row.mean, "paper mean is over its own sets; ours over the sets evaluated here"


def optional_paper_row(table: str, ref: dict | None) -> PaperRow | None:
    """The paper's row ``ref`` of ``table``, None when the table has no such row."""
    try:
        return find_row(table, ref)
    except KeyError:
        return None  # e.g. the Mahalanobis baseline has no row in Table II


def comparison(
    result: ExperimentResult, table: str, metric: str
) -> tuple[list[dict], list[str], list[str]]:
    """Rows (one per set + mean), column names and notes of ``ours vs paper`` for ``table``."""
    rows_shown, averaged = table_sets(result, table)
    columns, notes = ["dataset", "display_name"], []
    # str cells (names) and float | None cells (numbers) side by side
    rows: list[dict[str, Any]] = [{"dataset": s, "display_name": d} for s, d in rows_shown]
    mean: dict[str, Any] = {"dataset": "mean", "display_name": f"Mean ({len(averaged)} sets)"}
    for arm in result.arms:
        prow = optional_paper_row(table, arm.paper)
        columns += [f"{arm.name}:ours", f"{arm.name}:std", f"{arm.name}:paper", f"{arm.name}:diff"]
        for row in rows:
            ours, std = per_set(arm, metric, row["dataset"])
            paper = prow.value(row["dataset"]) if prow else None
            row.update(
                {
                    f"{arm.name}:ours": ours,
                    f"{arm.name}:std": std,
                    f"{arm.name}:paper": paper,
                    f"{arm.name}:diff": difference(ours, paper),
                }
            )
        ours, std = mean_over(arm, metric, averaged)
        paper, note = paper_mean(prow, averaged)
        mean.update(
            {
                f"{arm.name}:ours": ours,
                f"{arm.name}:std": std,
                f"{arm.name}:paper": paper,
                f"{arm.name}:diff": difference(ours, paper),
            }
        )
        notes += [f"{arm.name}: {note}"] if note else []
        notes += [f"{arm.name}: paper row {prow.label}: {prow.note}"] if prow and prow.note else []
        notes += [] if prow else [f"{arm.name}: the paper has no number for this in {table}"]
        notes += transfer_notes(arm)
    return rows + [mean], columns, notes


def transfer_notes(arm: ArmResult) -> list[str]:
    """A note naming the sets whose reals the arm's calibration does not fit (``cal_transfer``
    "no" at some seed, clipflow.eval.transfer): its fpr= guarantee does not hold there."""
    bad: dict[str, list[int]] = {}
    for seed, run in sorted(arm.runs.items()):
        for row in run.rows:
            if row.get("cal_transfer") == "no":
                bad.setdefault(row["dataset"], []).append(seed)
    if not bad:
        return []
    named = ", ".join(f"{name} (seed {', '.join(map(str, seeds))})" for name, seeds in bad.items())
    return [
        f"{arm.name}: the calibration does not transfer to {named}: their reals are flagged "
        "by p <= 1%/5% far more often than the level (exact test, significance "
        f"{SIGNIFICANCE:g}), so they are not like the arm's calibration reals and fpr= "
        "decisions do not hold there (docs/calibration.md)"
    ]


def _cell(row: dict, arm: str) -> list[str]:
    ours, std, paper, diff = (row.get(f"{arm}:{k}") for k in ("ours", "std", "paper", "diff"))
    return [
        "missing" if ours is None else fmt_number(ours, std),
        fmt_number(paper),
        fmt_signed(diff),
    ]


def comparison_markdown(result: ExperimentResult, table: str, metric: str) -> str:
    rows, _, notes = comparison(result, table, metric)
    arms = [a.name for a in result.arms]
    head = ["set"] + [f"{a} {k}" for a in arms for k in ("ours", "paper", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        name = f"**{row['display_name']}**" if row["dataset"] == "mean" else row["display_name"]
        lines.append("| " + " | ".join([name] + [c for a in arms for c in _cell(row, a)]) + " |")
    caption = load_table(table)[0].caption if load_table(table) else table
    text = [
        f"# {result.spec.title}: {METRIC_NAMES.get(metric, metric)} (%), "
        f"ours vs the paper ({table})",
        "",
        result.spec.description.strip(),
        "",
        provenance(result.meta),
        "",
        "\n".join(lines),
        "",
        f"Source: {caption} Δ = ours − paper; — = the paper gives no number; "
        "'missing' = set not found here.",
        "The mean row averages the paper's sets only, per seed, then over seeds (± sample std).",
    ]
    text += [f"- {n}" for n in notes]
    return "\n".join(text) + "\n" + _reference_rows(table, result)


def _reference_rows(table: str, result: ExperimentResult) -> str:
    """The paper's other rows of this table (means only), for context."""
    used = {
        (a.paper or {}).get("method", "") + "/" + (a.paper or {}).get("variant", "-")
        for a in result.arms
    }
    others = [
        r for r in load_table(table) if f"{r.method}/{r.variant}" not in used and r.mean is not None
    ]
    if not others:
        return ""
    lines = [
        "",
        "Other rows of the paper's table (mean only, for context):",
        "",
        "| method | mean |",
        "|---|---:|",
    ]
    lines += [f"| {r.label} | {r.mean:.2f} |" for r in others]
    return "\n".join(lines) + "\n"
