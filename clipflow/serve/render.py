"""The page's HTML: the checkpoint's card facts and one table row per upload.

Plain strings with every value escaped (a file name is the uploader's text). Each row carries
``data-file`` and ``data-decision`` so that a browser test, or a script, reads the verdicts
without parsing the visible text. The notes under the table are clipflow-detect's own footer
(:func:`~clipflow.detect.table_footer`), so the page and the terminal explain the numbers in
the same words.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..detect import Detector, table_footer
from ..eval.predictions import Prediction

RANDOM_WARNING = (
    "The backbone of this checkpoint has random weights: its scores show that the pipeline runs, "
    "they detect nothing."
)
_E = html.escape


def card_html(det: Detector, facts: Sequence[tuple[str, str]]) -> str:
    """The facts as a small table, with the random-weight warning first where it applies."""
    rows = "".join(f"<tr><th>{_E(k)}</th><td>{_E(v)}</td></tr>" for k, v in facts)
    warning = (
        f'<p class="clipflow-warning" role="alert"><strong>{_E(RANDOM_WARNING)}</strong></p>'
        if det.random_backbone
        else ""
    )
    return f'<div class="clipflow-card">{warning}<table>{rows}</table></div>'


def verdicts_html(
    det: Detector, records: Sequence[Prediction], fpr: float | None, unsure_k: int
) -> str:
    """A table of the records (file, score, decision, fpr_val, p_value, spread when the
    unsure copies were scored, or the reason it could not be scored) and detect's notes."""
    if not records:
        return '<p class="clipflow-empty">Drop or choose images to score them.</p>'
    spread = unsure_k > 0
    head = ["file", "score", "decision", "fpr_val", "p_value", *(["spread"] if spread else [])]
    rows = [_row(r, spread, len(head)) for r in records]
    notes = "".join(
        f"<li>{_E(line)}</li>" for line in table_footer(det, records, fpr, unsure_k).splitlines()
    )
    return (
        '<table class="clipflow-verdicts"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + f'</tbody></table><ul class="clipflow-notes">{notes}</ul>'
    )


def _row(r: Prediction, spread: bool, width: int) -> str:
    name = _E(str(r.path))
    if r.error is not None:
        return (
            f'<tr data-file="{name}" data-decision="error"><td>{name}</td>'
            f'<td class="error" colspan="{width - 1}">{_E(r.error)}</td></tr>'
        )
    cells = [
        name,
        f"{r.score:.4f}",
        f'<strong class="decision">{_E(str(r.decision))}</strong>',
        "n/a" if r.fpr_val is None else f"{100 * r.fpr_val:.1f}%",
        "n/a" if r.p_value is None else f"{r.p_value:.4f}",
    ]
    if spread:
        cells.append(f"{r.score_min:.4f}..{r.score_max:.4f}" if r.score_min is not None else "")
    return (
        f'<tr data-file="{name}" data-decision="{_E(str(r.decision))}">'
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
    )
