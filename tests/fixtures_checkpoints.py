"""Editing a checkpoint's JSON as a hand (or a forger) would, for the checkpoint tests."""

from __future__ import annotations

DELETE = object()  # set_field(..., DELETE) removes the field


def set_field(meta: dict, dotted: str, value: object) -> dict:
    """``meta`` with the dotted field (``calibration.n``) set to ``value``, or deleted."""
    *parents, last = dotted.split(".")
    node = meta
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return meta
