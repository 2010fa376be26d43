"""Did you mean ...? The known keys closest to a mistyped one, for unknown-key errors.

Standard library only: clipflow.cli.common uses it on Hydra's refusal of an unknown key,
before torch is imported, and clipflow.settings.config on keys its dataclasses lack.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_SUGGESTIONS = 3
# difflib ratios: a whole dotted key with a typo or two (trian.lr, data.reencod) scores
# ~0.8-0.95; a last part alone must be closer, it is short (lr, seed).
_KEY_CUTOFF = 0.75
_LAST_PART_CUTOFF = 0.8


def closest_keys(typed: str, known: Iterable[str]) -> list[str]:
    """Up to three of ``known`` (dotted keys) nearest ``typed``: by the whole key
    (``trian.lr`` -> ``train.lr``), then by the last part in any section (``lr`` ->
    ``train.lr``: the right name under the wrong or no section)."""
    keys = sorted(set(known))
    whole = difflib.get_close_matches(typed, keys, n=MAX_SUGGESTIONS, cutoff=_KEY_CUTOFF)
    last = typed.rsplit(".", 1)[-1]
    by_last = [k for k in keys if _similar(last, k.rsplit(".", 1)[-1]) and k != typed]
    return list(dict.fromkeys([*whole, *by_last]))[:MAX_SUGGESTIONS]


def did_you_mean(typed: str, known: Iterable[str]) -> str:
    """`` (did you mean train.lr?)`` for an error line, or "" when nothing is close."""
    close = closest_keys(typed, known)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _similar(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a, b).ratio() >= _LAST_PART_CUTOFF
