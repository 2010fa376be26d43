"""How the paper's tables print a number: percentages with two decimals, ± std, signed Δ.

An empty cell is an em dash (the paper gives no number there, or the number is missing).
"""

from __future__ import annotations


def fmt_number(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} ± {std:.2f}" if std is not None else f"{v:.2f}"


def fmt_signed(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f}"
