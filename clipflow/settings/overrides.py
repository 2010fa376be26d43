"""``key=value`` arguments in Hydra's override syntax, for the commands that are not Hydra apps.

clipflow-reproduce passes most of its arguments through to each arm's Hydra composition and
clipflow-check-data takes a handful of paths; both read ``key=value`` with Hydra's own parser so
that lists (``extra_roots=[a,b]``), nulls and quoting mean what they mean to clipflow-train.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser

from ..errors import ClipflowError, first_line


class Override(NamedTuple):
    key: str  # e.g. data.test_root, or a group such as backbone
    value: Any  # parsed: str, int, float, bool, None, list, dict
    text: str  # the argument as given, to pass on to Hydra unchanged


def parse_overrides(argv: Iterable[str]) -> list[Override]:
    """Every argument parsed; a malformed one is a one-line ClipflowError naming it."""
    parser = OverridesParser.create()
    parsed = []
    for arg in argv:
        try:
            o = parser.parse_override(arg)
        except Exception as err:  # Hydra's parse errors: first line says what is wrong
            raise ClipflowError(f"cannot parse argument {arg!r}: {first_line(err)}") from None
        parsed.append(Override(o.key_or_group, o.value(), arg))
    return parsed


def as_list(value: Any) -> list:
    """A scalar or list argument as a list; absent or empty -> []."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_keys(argv: Iterable[str], keys: Iterable[str]) -> dict[str, Any]:
    """``key=value`` arguments as a dict; a key outside ``keys`` is a one-line error."""
    keys = tuple(keys)
    args: dict[str, Any] = {}
    for o in parse_overrides(argv):
        if o.key not in keys:
            raise ClipflowError(f"unknown key {o.key!r}; use {', '.join(keys)}")
        args[o.key] = o.value
    return args
