"""report.html: one self-contained page a reader opens from a file to judge a detector.

The results table (the paper's columns first, ours labelled), then per set the score
histograms of reals and fakes with the threshold and the conformal levels, ROC and PR
curves, and the most confidently wrong images as thumbnails (reals called fake, fakes called
real, with score and p-value), then any further sections (robustness and chain curves). No
script, no CDN, no server: figures are inline SVG and thumbnails base64 JPEG, and the page's
size does not grow with the number of images (clipflow.eval.html_figures). Names are shown as
the other outputs write them (:func:`~clipflow.core.fileio.display_path`), HTML-escaped.
"""

from __future__ import annotations

import heapq
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write_bytes, display_path, encode_text
from .conformal import CalibrationError, ConformalCalibration
from .html_figures import set_svg, svg_of, thumbnail
from .means import BENCHMARK_MEAN_PREFIX, MEAN_KEYS, Means
from .metrics import METRIC_COLUMNS, OURS_LEVELS
from .report import (
    RANDOM_WARNING,
    RESULTS_COLUMNS,
    calibration_notes,
    describe_run,
    results_table,
)

N_MISTAKES = 6  # thumbnails per set and direction (reals called fake, fakes called real)
ID_COLUMNS = ("dataset", "display_name", "in_paper", "arm", "perturbation", "length")


@dataclass(frozen=True)
class Section:
    """A titled part of the page; ``body`` is HTML already escaped by its maker."""

    title: str
    body: str


@dataclass
class ReportSet:
    """One evaluated set as the page shows it: its scores and its worst mistakes."""

    name: str
    display_name: str
    real: np.ndarray  # (n_real,) scores
    fake: np.ndarray  # (n_fake,) scores
    mistakes: dict[str, list[dict]] = field(default_factory=dict)  # from confident_mistakes


def text(value) -> str:
    """A value as escaped HTML text; a byte that is not UTF-8 shown ``\\xNN`` as elsewhere."""
    return html.escape(encode_text(str(value)).decode("utf-8"))


def inline(md: str) -> str:
    """A results.md sentence as HTML: escaped, with `code` and **bold** kept."""
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", text(md))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def paragraphs(md: str) -> str:
    """results.md paragraphs (blank-line separated) as HTML ``<p>`` elements; the
    random-weight warning stands out as a banner."""
    return "".join(
        f'<p class="warning">{inline(p)}</p>'
        if p.strip() == RANDOM_WARNING
        else f"<p>{inline(p)}</p>"
        for p in md.split("\n\n")
        if p.strip()
    )


def is_mean_row(row: dict) -> bool:
    """A mean row of a results table (no set may be named so: means.check_set_names)."""
    name = str(row.get("dataset", ""))
    return name in MEAN_KEYS or name.startswith(BENCHMARK_MEAN_PREFIX)


# ----------------------------------------------------------------------------- per image


def confident_mistakes(
    score_rows: Iterable[dict], threshold: float, k: int = N_MISTAKES
) -> dict[str, dict[str, list[dict]]]:
    """Per set: the ``k`` reals scored highest above ``threshold`` (called fake) and the
    ``k`` fakes scored lowest at or below it (called real), most confident first. Rows as
    clipflow.runs.evaluate.evaluate_sets gives them (path, dataset, label, score)."""
    wrong: dict[str, dict[str, list[dict]]] = {}
    for r in score_rows:
        per = wrong.setdefault(r["dataset"], {"real": [], "fake": []})
        if r["label"] == 0 and r["score"] > threshold:
            per["real"].append(r)
        elif r["label"] == 1 and r["score"] <= threshold:
            per["fake"].append(r)
    return {
        name: {
            "real": heapq.nlargest(k, per["real"], key=lambda r: r["score"]),
            "fake": heapq.nsmallest(k, per["fake"], key=lambda r: r["score"]),
        }
        for name, per in wrong.items()
    }


def report_sets(rows: list[dict], score_rows: list[dict], threshold: float) -> list[ReportSet]:
    """The sets of ``rows`` (in their order) with their scores and mistakes."""
    real: dict[str, list[float]] = {r["dataset"]: [] for r in rows}
    fake: dict[str, list[float]] = {r["dataset"]: [] for r in rows}
    for r in score_rows:
        if r["dataset"] in real:
            (fake if r["label"] else real)[r["dataset"]].append(r["score"])
    mistakes = confident_mistakes(score_rows, threshold)
    return [
        ReportSet(
            r["dataset"],
            r.get("display_name", r["dataset"]),
            np.asarray(real[r["dataset"]], float),
            np.asarray(fake[r["dataset"]], float),
            mistakes.get(r["dataset"], {}),
        )
        for r in rows
    ]


# ----------------------------------------------------------------------------- HTML parts


def table_html(
    rows: Sequence[dict], columns: Sequence[str], link_sets: bool = False, css: str = "results"
) -> str:
    """A table of ``rows`` over ``columns`` (any columns: those the results have). When some
    are the paper's metric columns, the naming columns come first, then the paper's, then
    every other column, headed "ours, not in the paper". ``link_sets``: a set's name links
    to its section below; ``css``: the table's class (``results`` for a results table)."""
    paper = [c for c in columns if c in METRIC_COLUMNS]
    ident = [c for c in columns if c in ID_COLUMNS] if paper else list(columns)
    ours = [c for c in columns if c not in ident and c not in paper]
    groups = ""
    if paper and ours:
        groups = (
            f'<tr class="groups"><th colspan="{len(ident)}"></th>'
            f'<th colspan="{len(paper)}" class="paper">the paper\'s columns</th>'
            f'<th colspan="{len(ours)}" class="ours">ours, not in the paper</th></tr>'
        )
    cols = [*ident, *paper, *ours]
    head = "".join(f'<th class="{_kind(c, paper, ours)}">{text(c)}</th>' for c in cols)
    body, n_sets = [], 0
    for row in rows:
        is_set = not is_mean_row(row)
        cells = []
        for c in cols:
            cell = _cell(row.get(c))
            if link_sets and is_set and c == "dataset":
                cell = f'<a href="#set-{n_sets}">{cell}</a>'
            num = " num" if isinstance(row.get(c), (int, float)) else ""
            cells.append(f'<td class="{_kind(c, paper, ours)}{num}">{cell}</td>')
        kind = "set" if is_set else "mean"
        body.append(f'<tr class="{kind}">{"".join(cells)}</tr>')
        n_sets += is_set
    return (
        f'<div class="wide"><table class="{text(css)}"><thead>{groups}<tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _kind(column: str, paper: list[str], ours: list[str]) -> str:
    return "paper" if column in paper else "ours" if column in ours else "id"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return text(value)


def conformal_levels(cal_scores: np.ndarray | None) -> tuple[ConformalCalibration | None, dict]:
    """The calibration (None without scores) and ``{"p≤1%": score threshold, ...}`` for the
    levels of the results table that its number of reals supports."""
    if cal_scores is None or len(cal_scores) == 0:
        return None, {}
    cal = ConformalCalibration(cal_scores)
    levels = {}
    for a in OURS_LEVELS:
        try:
            levels[f"p≤{100 * a:g}%"] = cal.threshold(a)
        except CalibrationError:  # too few calibration reals for this level
            continue
    return cal, levels


def set_section(
    i: int,
    s: ReportSet,
    threshold: float | None,
    cal: ConformalCalibration | None,
    levels: dict,
) -> str:
    """One set: its heading, its figure (histograms, ROC, PR) and its worst mistakes."""
    fig = set_svg(s.real, s.fake, threshold, levels, label=f"{s.display_name}: scores, ROC, PR")
    name = text(s.display_name)
    folder = "" if s.display_name == s.name else f" <small>({text(s.name)})</small>"
    parts = [
        f'<section class="set" id="set-{i}"><h3>{name}{folder}</h3>',
        f'<div class="figure">{fig}</div>',
    ]
    for label, title, none in (
        ("real", "reals called fake (highest scores)", "no real scored above the threshold"),
        ("fake", "fakes called real (lowest scores)", "every fake scored above the threshold"),
    ):
        items = s.mistakes.get(label, [])
        thumbs = "".join(_thumb(m, cal) for m in items) or f'<p class="none">{none}</p>'
        parts.append(f'<h4>{title}</h4><div class="thumbs {label}">{thumbs}</div>')
    parts.append("</section>")
    return "".join(parts)


def _thumb(m: dict, cal: ConformalCalibration | None) -> str:
    shown = display_path(m["path"])
    uri, why = thumbnail(m["path"])
    img = (
        f'<img src="{uri}" alt="{text(shown)}">'
        if uri
        else f'<div class="missing">image not shown: {text(why)}</div>'
    )
    p = "" if cal is None else f", p={float(cal.p_values(np.array([m['score']]))[0]):.3g}"
    base = shown.rsplit("/", 1)[-1]
    return (
        f'<figure class="thumb" title="{text(shown)}">{img}'
        f"<figcaption>{text(base)}<br>q={m['score']:.4g}{p}</figcaption></figure>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;
color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px}
td.num{text-align:right}th.paper{background:#eef3fa}th.ours{background:#f6efe6}
tr.mean td{font-weight:600;background:#f4f4f4}
.figure svg{max-width:100%;height:auto}.wide{overflow-x:auto}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure.thumb{margin:0;width:112px;font-size:11px;overflow-wrap:anywhere}
figure.thumb img{display:block;width:96px;height:96px;object-fit:contain;background:#eee}
.missing{width:96px;height:64px;font-size:10px;background:#eee;color:#844}
.warning{background:#fff3cd;padding:4px 8px}section.set{border-top:1px solid #ddd}
"""


def page(title: str, intro: str, sections: Sequence[Section]) -> str:
    """The whole HTML document: a title, an intro (HTML), the sections with a contents list."""
    toc = "".join(
        f'<li><a href="#part-{i}">{text(s.title)}</a></li>' for i, s in enumerate(sections)
    )
    body = "".join(
        f'<h2 id="part-{i}">{text(s.title)}</h2>{s.body}' for i, s in enumerate(sections)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(title)}</title><style>{STYLE}</style></head>"
        f'<body><h1>{text(title)}</h1>{intro}<ul class="toc">{toc}</ul>{body}</body></html>\n'
    )


def sets_section(
    sets: Sequence[ReportSet], threshold: float | None, cal_scores: np.ndarray | None
) -> Section:
    """The per-set figures and thumbnails as one section."""
    cal, levels = conformal_levels(cal_scores)
    lines = "dashed: the threshold"
    if levels:
        lines += "; dotted: the score above which p ≤ each level (conformal, calibration reals)"
    intro = (
        f"<p>Histograms are normalised per class ({lines}). Thumbnails: the {N_MISTAKES} most "
        "confidently wrong images each way, with their score q"
        + (" and conformal p-value" if cal else "")
        + ".</p>"
    )
    body = "".join(set_section(i, s, threshold, cal, levels) for i, s in enumerate(sets))
    return Section("Per set: scores, ROC, PR and the worst mistakes", intro + body)


def figure_section(title: str, fig, note: str = "", salt: str = "extra") -> Section:
    """A section holding one matplotlib figure (inline SVG) under an optional HTML note."""
    return Section(title, f'{note}<div class="figure">{svg_of(fig, salt)}</div>')


# ----------------------------------------------------------------------------- an evaluation


def eval_report(
    rows: list[dict],
    means: Means,
    meta: dict,
    score_rows: list[dict],
    cal_scores: np.ndarray | None = None,
    sections: Sequence[Section] = (),
    title: str = "Results",
) -> str:
    """The page of one evaluation: rows, means and meta as write_results takes them,
    ``score_rows`` its per-image scores, ``cal_scores`` the checkpoint's calibration reals."""
    threshold = meta.get("threshold")
    table = results_table(rows, means)
    set_rows = [r for r in table if not is_mean_row(r)]
    intro = paragraphs(describe_run(meta))
    # results.md's warnings (calibration too small, sets whose reals it does not fit), as banners
    intro += "".join(
        f'<p class="warning">Warning: {inline(note)}</p>'
        for note in calibration_notes(rows, meta).values()
    )
    table_part = Section(
        "Results table",
        table_html(table, RESULTS_COLUMNS, link_sets=True) + paragraphs(means.note()),
    )
    sets = report_sets(set_rows, score_rows, threshold if threshold is not None else np.inf)
    parts = [table_part, sets_section(sets, threshold, cal_scores), *sections]
    return page(title, intro, parts)


def write_report(path: Path, html_text: str) -> Path:
    """Write a page atomically (a reader never opens half of it); returns ``path``."""
    atomic_write_bytes(Path(path), encode_text(html_text))
    return Path(path)
