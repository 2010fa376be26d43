"""The paper's published numbers, stored as data (``clipflow/paper/numbers/*.csv``).

Each CSV mirrors one table of the paper: a ``# caption`` line, then one row per method with
``group, method, variant``, one column per test set (the paper's 19 in order, or the Table V
generators), ``mean`` and a ``note``. An empty cell means the paper gives no number there
(e.g. Fig. 4 is a plot only; the normalisation ablation gives means only). Rows are looked up
by ``(method, variant)``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "numbers"
PAPER_TABLES = (
    "table1_ap",
    "table2_acc",
    "table3_ap",
    "table4_ap",
    "table5_ap",
    "normalization_ap",
    "fig4_ap",
)
_META = ("group", "method", "variant", "mean", "note")

# Table V generators: folder names a user may give them (compared after lower-casing and
# dropping everything but letters and digits).
TABLE5_ALIASES: dict[str, tuple[str, ...]] = {
    "dalle3": ("dalle3", "dallee3"),
    "deepfloyd": ("deepfloyd", "deepfloydif", "if"),
    "realvisxl": ("realvisxl", "realvisxlv4", "realvisxlv40", "realvis"),
    "sd15": ("sd15", "sdv15", "stablediffusion15", "stablediffusionv15", "stablediffusion"),
}


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: per-set values (None = not given), the mean and a note."""

    table: str
    method: str
    variant: str
    values: dict[str, float | None] = field(default_factory=dict)
    mean: float | None = None
    note: str = ""
    caption: str = ""

    def value(self, dataset: str) -> float | None:
        """The paper's number for a set (Table V matches user folder names by alias)."""
        if dataset in self.values:
            return self.values[dataset]
        return self.values.get(canonical_generator(dataset) or "", None)

    @property
    def label(self) -> str:
        return self.method if self.variant in ("", "-") else f"{self.method} {self.variant}"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_generator(name: str) -> str | None:
    """The Table V column a folder name refers to (``DALLE-3`` -> ``dalle3``), else None."""
    k = _key(name)
    for canon, aliases in TABLE5_ALIASES.items():
        if k in aliases:
            return canon
    return None


def _number(cell: str) -> float | None:
    cell = cell.strip()
    return float(cell) if cell else None


@cache
def load_table(table: str) -> tuple[PaperRow, ...]:
    """All rows of one stored paper table."""
    if table not in PAPER_TABLES:
        raise KeyError(f"unknown paper table {table!r}; known: {', '.join(PAPER_TABLES)}")
    lines = (DATA_DIR / f"{table}.csv").read_text(encoding="utf-8").splitlines()
    caption = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
    reader = csv.DictReader([ln for ln in lines if not ln.startswith("#")])
    rows = []
    for rec in reader:
        values = {k: _number(v) for k, v in rec.items() if k not in _META}
        rows.append(
            PaperRow(
                table,
                rec["method"],
                rec["variant"],
                values,
                _number(rec["mean"]),
                rec.get("note") or "",
                caption,
            )
        )
    return tuple(rows)


def paper_sets(table: str) -> tuple[str, ...]:
    """The per-set columns of a stored table, in the paper's order."""
    rows = load_table(table)
    return tuple(rows[0].values) if rows else ()


def paper_row(table: str, method: str, variant: str = "-") -> PaperRow:
    """The row of ``table`` for (method, variant); KeyError names the rows that exist."""
    for row in load_table(table):
        if row.method == method and row.variant == variant:
            return row
    known = ", ".join(f"{r.method}/{r.variant}" for r in load_table(table))
    raise KeyError(f"no row {method}/{variant} in paper table {table}; rows: {known}")


def find_row(table: str, ref: dict | None) -> PaperRow | None:
    """``paper_row`` for a ``{method, variant}`` reference; None when there is none."""
    if not ref:
        return None
    return paper_row(table, str(ref["method"]), str(ref.get("variant", "-")))
