"""report.html of clipflow-reproduce: one page per experiment and one index page.

``<out>/<experiment>/report.html``: the arms' means next to the paper's, each comparison table
(ours, the paper's, Δ per set), the first trained arm's per-set score histograms, ROC and PR
curves and its most confidently wrong images (clipflow.eval.html_report), and the
experiment's plots embedded. ``<out>/report.html``: every experiment's arms, linked to them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from ..eval.html_report import (
    ReportSet,
    Section,
    page,
    paragraphs,
    sets_section,
    table_html,
    text,
)
from .arm_summary import ARM_SUMMARY_COLUMNS, arm_summary_rows
from .comparison import PAPER_METRIC, comparison
from .provenance import provenance
from .spec import ArmResult, ExperimentResult, ExperimentSpec, SeedRun


def experiment_report(result: ExperimentResult, written: dict[str, Path]) -> str:
    """The page of one experiment; ``written``: its files (the PNG plots are embedded)."""
    spec = result.spec
    intro = paragraphs(spec.description.strip()) + paragraphs(provenance(result.meta))
    sections = [
        Section(
            "Arms: mean AP and accuracy next to the paper",
            table_html(arm_summary_rows(result), ARM_SUMMARY_COLUMNS, css="summary"),
        )
    ]
    for comp in spec.compare:
        table = comp["table"]
        metric = comp.get("metric", PAPER_METRIC.get(table, "ap"))
        rows, columns, notes = comparison(result, table, metric)
        notes_html = "".join(f"<li>{text(n)}</li>" for n in notes)
        sections.append(
            Section(
                f"{table}: {metric} (%) per set, ours vs the paper",
                "<p>Per arm: ours (mean over seeds), std, the paper's number, "
                "Δ = ours − paper.</p>"
                + table_html(rows, columns, css="comparison")
                + (f"<ul>{notes_html}</ul>" if notes else ""),
            )
        )
    shown = _first_run(result.arms)
    if shown is not None:
        arm, seed, run = shown
        sets = [
            ReportSet(name, display, *run.scores[name], run.mistakes.get(name, {}))
            for name, display in run.sets
            if name in run.scores
        ]
        part = sets_section(sets, run.threshold, None)
        sections.append(Section(f"{part.title} (arm {arm}, seed {seed})", part.body))
    plots = [(n, p) for n, p in written.items() if n.endswith(".png") and Path(p).is_file()]
    if plots:
        sections.append(Section("Plots", "".join(_png(n, p) for n, p in plots)))
    return page(f"{spec.name}: {spec.title}", intro, sections)


def _first_run(arms: Sequence[ArmResult]) -> tuple[str, int, SeedRun] | None:
    """The first trained arm (a baseline only when no arm trained), at its first seed."""
    ordered = [a for a in arms if a.kind != "baseline"] + [a for a in arms if a.kind == "baseline"]
    for arm in ordered:
        if arm.runs:
            seed = min(arm.runs)
            return arm.name, seed, arm.runs[seed]
    return None


def _png(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure class="plot"><img src="data:image/png;base64,{data}" alt="{text(name)}" '
        f'style="max-width:100%"><figcaption>{text(name)}</figcaption></figure>'
    )


def index_report(summaries: Sequence[tuple[ExperimentSpec, list[dict]]]) -> str:
    """``<out>/report.html``: per experiment its arms' means and a link to its own page."""
    sections = [
        Section(
            f"{spec.name}: {spec.title}",
            f'<p><a href="{text(spec.name)}/report.html">{text(spec.name)}/report.html</a>: '
            "per-set tables, score histograms, ROC / PR curves, the worst mistakes.</p>"
            + table_html(rows, ARM_SUMMARY_COLUMNS, css="summary"),
        )
        for spec, rows in summaries
    ]
    return page(
        "Reproduction", "<p>Every experiment run, its arms next to the paper.</p>", sections
    )
