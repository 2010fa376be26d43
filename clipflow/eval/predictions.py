"""What clipflow-detect says about each image: the :class:`Prediction` record and its outputs.

One record per input (a verdict, or the reason there is none), written as JSON lines or CSV
(:func:`write_records`, atomically) and shown as a plain-text table on the terminal
(:func:`records_table`; :func:`clipflow.detect.table_footer` explains its numbers). The
:class:`~clipflow.detect.Detector` makes the records; clipflow-serve's page shows the same ones.

A score that is not a finite number (NaN, inf) decides nothing: :func:`not_finite_reason` is
the error such an image's record carries instead of a decision.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import atomic_write_text, display_path, unwritable_reason
from ..errors import ClipflowError

REAL, FAKE, UNSURE = "real", "ai-generated", "unsure"
# One output record per input file; the terminal table uses the same names (decision, fpr_val,
# p_value). ``level`` is the fpr= the decision used (null: the checkpoint threshold decided),
# ``n_cal`` the calibration reals behind p_value; score_min/max: spread over the unsure copies.
RECORD_COLUMNS = (
    "path",
    "score",
    "decision",
    "fpr_val",
    "p_value",
    "level",
    "n_cal",
    "score_min",
    "score_max",
    "error",
)
# In the reason of an image whose score (or a copy's) is NaN or inf: no decision is made from it.
NOT_FINITE = "not a finite number"


@dataclass(frozen=True)
class Prediction:
    """One image's verdict. ``score``/``decision``/``fpr_val`` are None when ``error`` says why.

    ``fpr_val``: the share of the checkpoint's natural validation images scoring at least as
    high. ``label`` and ``fpr`` are the former names, kept as read-only aliases.
    """

    score: float | None
    decision: str | None  # "real" | "ai-generated" | "unsure" | None (unreadable)
    fpr_val: float | None
    path: str | None = None
    error: str | None = None
    p_value: float | None = None  # conformal: (1 + #{cal >= score}) / (n_cal + 1)
    level: float | None = None  # fpr= the decision was made at; None = the threshold decided
    n_cal: int | None = None
    score_min: float | None = None  # over the image and its unsure copies (unsure_k > 0)
    score_max: float | None = None

    @property
    def label(self) -> str | None:
        return self.decision

    @property
    def fpr(self) -> float | None:
        return self.fpr_val

    def to_dict(self) -> dict:
        """The record as written to JSON lines / CSV, path first (as
        :func:`~clipflow.core.fileio.display_path` writes it: any file name stays one line of
        text)."""
        record = {k: getattr(self, k) for k in RECORD_COLUMNS}
        if self.path is not None:
            record["path"] = display_path(self.path)
        return record


def not_finite_reason(scores: np.ndarray, copies: Sequence = ()) -> str | None:
    """Why no decision can come from an image's ``scores`` (its own, then each copy's), or
    None when they are all finite numbers. ``score > threshold`` is False for NaN: deciding
    anyway would call the image real with fpr_val 0."""
    for k, value in enumerate(np.atleast_1d(np.asarray(scores, float))):
        if not np.isfinite(value):
            whose = "score" if k == 0 else f"score of its {_copy_name(copies[k - 1])} copy"
            return f"{whose} is {value} ({NOT_FINITE}): no decision"
    return None


def finite_score(score: Any) -> float:
    """``score`` as a float, or a one-line ValueError when it is not a finite number."""
    value = float(score)
    if not np.isfinite(value):
        raise ValueError(f"score={value} is {NOT_FINITE}: no decision can be made from it")
    return value


def _copy_name(copy: Any) -> str:
    return str(getattr(copy, "name", None) or "re-encoded")


# ----------------------------------------------------------------------------- output


def records_to_jsonl(records: Sequence[Prediction]) -> str:
    """One JSON object per line; missing numbers are null (never NaN, which is not JSON)."""
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def records_to_csv(records: Sequence[Prediction]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RECORD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if v is None else v for k, v in r.to_dict().items()})
    return buf.getvalue()


def output_format(path: str, fmt: str | None = None) -> str:
    """``jsonl`` or ``csv``: as given, else from the suffix (.jsonl/.json/.ndjson, .csv).

    Also checks that ``path`` can be written (not a folder, not under a file, a writable
    folder), so that a CLI hears about it before loading a model and scoring anything.
    """
    fmt = (
        fmt
        or {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(
            Path(path).suffix.lower(), ""
        )
    ).lower()
    if fmt not in ("jsonl", "csv"):
        raise ClipflowError(
            f"cannot tell the output format of {path!r}: name it .jsonl or .csv, "
            "or pass format=jsonl|csv"
        )
    why = unwritable_reason(Path(path))
    if why:
        raise ClipflowError(f"cannot write out={display_path(path)}: {why}; choose another out=")
    return fmt


def write_records(
    records: Sequence[Prediction], path: str | os.PathLike, fmt: str | None = None
) -> Path:
    """Write the records as JSON lines or CSV, atomically; returns the path."""
    text = (records_to_csv if output_format(str(path), fmt) == "csv" else records_to_jsonl)(records)
    atomic_write_text(Path(path), text)
    return Path(path)


def records_table(records: Sequence[Prediction]) -> str:
    """A plain-text table for the terminal: path, score, decision, fpr_val, p_value (or the
    error), and the score spread over the re-encoded copies when they were scored."""
    spread = any(r.score_min is not None for r in records)
    rows = [("path", "score", "decision", "fpr_val", "p_value", *(("spread",) if spread else ()))]
    for r in records:
        if r.error is not None:
            rows.append((display_path(str(r.path)), "-", error_word(r.error), r.error))
            continue
        fpr = "n/a" if r.fpr_val is None else f"{100 * r.fpr_val:.1f}%"
        p = "n/a" if r.p_value is None else f"{r.p_value:.4f}"
        row = (display_path(str(r.path)), f"{r.score:.4f}", str(r.decision), fpr, p)
        rows.append(row + ((f"{r.score_min:.4f}..{r.score_max:.4f}",) if spread else ()))
    width = max(len(row) for row in rows)
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(width)]
    lines = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i == 1 else c.ljust(widths[i]) for i, c in enumerate(row)]
        if row[1] == "-":  # an error row: the reason is the last cell, however long
            cells[-1] = row[-1]
        lines.append("  ".join(cells))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def error_word(reason: str) -> str:
    """The decision cell of an error row: no score at all, or a score that decides nothing."""
    return "no decision" if NOT_FINITE in reason else "unreadable"
