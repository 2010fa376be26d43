"""One value as the type its setting expects: ``coerce(key, value, hint)`` or SettingsError.

Kept apart from :mod:`clipflow.settings.config` (the settings and their rules) so that light
commands (``clipflow-download-data``, ``--help``) can check a value without importing torch.
"""

from __future__ import annotations

import math
import typing
from types import NoneType, UnionType
from typing import Any

from ..errors import ClipflowError


class SettingsError(ClipflowError):
    """A setting of the wrong type, out of range, or unknown: ``key=value: what is allowed``."""


def bad_value(key: str, value: Any, problem: str) -> SettingsError:
    return SettingsError(f"{shown(key)}={shown(value)}: {problem}")


def shown(value: Any, limit: int = 80) -> str:
    """A value as the user typed it, on one line (control characters escaped, long cut)."""
    text = "null" if value is None else str(value)
    if not text.isprintable():
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (str, int, float, bool, X | None, list[str], dict), or
    SettingsError. Strings that spell a number or a bool are accepted (interpolations and
    environment variables arrive as strings); fractions for ints, nan and inf are not."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        if value is None:
            return None
        hint = args[0]
    if value is None:
        raise bad_value(key, value, "must not be null")
    if hint is bool:
        return _as_bool(key, value)
    if hint is int:
        return _as_int(key, value)
    if hint is float:
        return _as_float(key, value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad_value(key, value, "must be a string")
        return str(value)
    if typing.get_origin(hint) is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [coerce(key, v, typing.get_args(hint)[0]) for v in items]
    if hint is dict or typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise bad_value(key, value, "must be a mapping of keys to values")
        return dict(value)
    return value  # a type no field uses: leave it to the component


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise bad_value(key, value, "must be true or false")


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise bad_value(key, value, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise bad_value(key, value, "must be an integer")


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad_value(key, value, "must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise bad_value(key, value, "must be a number") from None
    if not math.isfinite(number):
        raise bad_value(key, value, "must be a finite number")
    return number
