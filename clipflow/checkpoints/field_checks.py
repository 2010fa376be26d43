"""The field checks model.json's schema is built from (:mod:`clipflow.checkpoints.schema`):
small constructors that return a check raising :class:`Invalid` with the failing field's dotted
name. Kept apart from the schema itself, which says which field gets which check."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any


class Invalid(Exception):
    """One field failed its check; ``where`` is its dotted name, filled in on the way out."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(reason)
        self.reason, self.where = reason, where


Check = Callable[[Any], None]  # raises Invalid


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> None:
        if not is_int(v):
            raise Invalid(f"{v!r} is not an integer")
        if v < lo or (hi is not None and v > hi):
            raise Invalid(f"{v} is outside [{lo}, {hi if hi is not None else '∞'}]")

    return check


def number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> Check:
    def check(v: Any) -> None:
        if not is_number(v) or not math.isfinite(v):
            raise Invalid(f"{v!r} is not a finite number")
        if v > hi or v < lo or (lo_open and v == lo):
            raise Invalid(f"{v} is outside {'(' if lo_open else '['}{lo}, {hi}]")

    return check


def boolean(v: Any) -> None:
    if not isinstance(v, bool):
        raise Invalid(f"{v!r} is not true/false")


def string(pattern: str = r".{1,200}") -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, str) or not re.fullmatch(pattern, v, flags=re.DOTALL):
            raise Invalid(f"{short(v)} is not a string of the form {pattern}")

    return check


def optional(check: Check) -> Check:
    def check_unless_none(v: Any) -> None:
        if v is not None:
            check(v)

    return check_unless_none


def equal(expected: Any) -> Check:
    def check(v: Any) -> None:
        if type(v) is not type(expected) or v != expected:
            raise Invalid(f"{short(v)} is not {expected!r}")

    return check


def choice(options: Callable[[], tuple[str, ...]] | tuple[str, ...]) -> Check:
    def check(v: Any) -> None:
        known = options() if callable(options) else options
        if not isinstance(v, str) or v not in known:
            listed = ", ".join(known) if len(known) <= 8 else "open_clip.list_models()"
            raise Invalid(f"{short(v)} is not one of {listed}")

    return check


def list_of(item: Check, min_len: int = 0, max_len: int = 100_000) -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            raise Invalid(f"expected a list of {min_len}..{max_len} items, got {short(v)}")
        for i, x in enumerate(v):
            at_field(str(i), item, x)

    return check


def obj(v: Any) -> None:
    """A free-form record (the run config, proxy parameters): a JSON object, nothing more."""
    if not isinstance(v, dict):
        raise Invalid(f"expected an object, got {short(v)}")


def str_map(v: Any) -> None:
    obj(v)
    for k, x in v.items():
        at_field(k, string(r".{0,200}"), x)


def warning_map(v: Any) -> None:
    """kind -> one warning message (clipflow/eval/checks.py), at most 16 of them."""
    obj(v)
    if len(v) > 16:
        raise Invalid(f"{len(v)} warnings (at most 16)")
    for k, x in v.items():
        at_field(k, string(r".{1,4000}"), x)


def count_map(v: Any) -> None:
    """name -> count (e.g. training images per class)."""
    obj(v)
    for k, x in v.items():
        at_field(k, integer(0), x)


def history_row(v: Any) -> None:
    obj(v)
    at_field("epoch", integer(1), v.get("epoch"))
    for k, x in v.items():
        at_field(k, number(), x)


def record(schema: dict[str, tuple[Check, bool]]) -> Check:
    """An object whose keys are all in ``schema`` (name -> (check, required))."""

    def check(v: Any) -> None:
        obj(v)
        unknown = sorted(set(v) - set(schema))
        if unknown:
            raise Invalid(f"unknown field(s) {', '.join(map(repr, unknown))}")
        for name, (item, required) in schema.items():
            if name in v:
                at_field(name, item, v[name])
            elif required:
                raise Invalid("missing field", name)

    return check


def at_field(name: str, check: Check, value: Any) -> None:
    """Run ``check`` on ``value`` and prefix the field name of a failure."""
    try:
        check(value)
    except Invalid as err:
        err.where = f"{name}.{err.where}" if err.where else name
        raise


def short(v: Any) -> str:
    """A value for an error message: its repr, cut to 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
