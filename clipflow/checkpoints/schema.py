"""The schema of a checkpoint's model.json: every field's type, range and cap.

:func:`validate_meta` checks a model.json field by field against :data:`META_SCHEMA` before
anything is allocated (caps protect memory from a hostile or mistyped file); the first bad
field is one CheckpointError naming it. Every string in it, keys included, must be one that
a terminal shows as text (:func:`text_problem`): the checkpoint's strings are shown to users
(error lines, ``clipflow-push dry_run=true``'s model card). Kept apart from
:mod:`clipflow.checkpoints.checkpoint` and :mod:`~clipflow.checkpoints.save`, which load and
save the files (hashes), and :mod:`~clipflow.checkpoints.tensors` (tensors, the ``spec`` check).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backbones.backbone import recorded_name_problem
from ..backbones.config import CUSTOM, FACTORY_FORM, FAMILIES, LAYER_POOLS, PRECISIONS
from ..errors import CheckpointError

FORMAT = "clipflow-checkpoint"
# The two files of a checkpoint (weights + the model.json this schema checks).
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
FORMAT_VERSION = 1

# Caps on the model a checkpoint may describe. They are far above any sensible head (the
# paper: 768-d features, DR 128, 8 blocks, hidden 2·C) and exist so that a hostile or
# mistyped model.json is refused at once instead of building a flow that exhausts memory.
MAX_FEATURE_DIM = 8192
MAX_DR_DIM = 8192
MAX_BLOCKS = 64
MAX_HIDDEN_MULT = 16
MAX_CLAMP = 100.0
# FrEIA seeds block i's permutation with perm_seed·1000 + i, and numpy seeds are < 2**32.
MAX_PERM_SEED = (2**32 - MAX_BLOCKS) // 1000
# Caps on the file itself, checked before and while parsing: a model.json is a few KB (10,000
# history rows ~ 2.5 MB); a 100 MB one would keep the loader busy for a minute.
MAX_META_BYTES = 4 * 2**20
MAX_HISTORY = 10_000  # rows; save_checkpoint keeps at most this many (metrics.csv has all)
MAX_DEPTH = 32  # nesting of objects and lists, the free-form config included
TRAIN_MODES = ("N", "P", "N+P")  # = train.MODES; not imported: train.py sits above this module
PREPROCESS = ("paper", "univfd")


class _Invalid(Exception):
    """One field failed its check; ``where`` is its dotted name, filled in on the way out."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(reason)
        self.reason, self.where = reason, where


Check = Callable[[Any], None]  # raises _Invalid


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> None:
        if not _is_int(v):
            raise _Invalid(f"{v!r} is not an integer")
        if v < lo or (hi is not None and v > hi):
            raise _Invalid(f"{v} is outside [{lo}, {hi if hi is not None else '∞'}]")

    return check


def _number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> Check:
    def check(v: Any) -> None:
        if not _is_number(v) or not math.isfinite(v):
            raise _Invalid(f"{v!r} is not a finite number")
        if v > hi or v < lo or (lo_open and v == lo):
            raise _Invalid(f"{v} is outside {'(' if lo_open else '['}{lo}, {hi}]")

    return check


def _bool(v: Any) -> None:
    if not isinstance(v, bool):
        raise _Invalid(f"{v!r} is not true/false")


def _str(pattern: str = r".{1,200}") -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, str) or not re.fullmatch(pattern, v, flags=re.DOTALL):
            raise _Invalid(f"{short(v)} is not a string of the form {pattern}")

    return check


def _optional(check: Check) -> Check:
    def optional(v: Any) -> None:
        if v is not None:
            check(v)

    return optional


def _equal(expected: Any) -> Check:
    def check(v: Any) -> None:
        if type(v) is not type(expected) or v != expected:
            raise _Invalid(f"{short(v)} is not {expected!r}")

    return check


def _choice(options: Callable[[], tuple[str, ...]] | tuple[str, ...]) -> Check:
    def check(v: Any) -> None:
        known = options() if callable(options) else options
        if not isinstance(v, str) or v not in known:
            listed = ", ".join(known) if len(known) <= 8 else "open_clip.list_models()"
            raise _Invalid(f"{short(v)} is not one of {listed}")

    return check


def _list(item: Check, min_len: int = 0, max_len: int = 100_000) -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            raise _Invalid(f"expected a list of {min_len}..{max_len} items, got {short(v)}")
        for i, x in enumerate(v):
            _at(str(i), item, x)

    return check


def _dict(v: Any) -> None:
    """A free-form record (the run config, proxy parameters): a JSON object, nothing more."""
    if not isinstance(v, dict):
        raise _Invalid(f"expected an object, got {short(v)}")


def _str_map(v: Any) -> None:
    _dict(v)
    for k, x in v.items():
        _at(k, _str(r".{0,200}"), x)


def _warning_map(v: Any) -> None:
    """kind -> one warning message (clipflow/eval/checks.py), at most 16 of them."""
    _dict(v)
    if len(v) > 16:
        raise _Invalid(f"{len(v)} warnings (at most 16)")
    for k, x in v.items():
        _at(k, _str(r".{1,4000}"), x)


def _count_map(v: Any) -> None:
    """name -> count (e.g. training images per class)."""
    _dict(v)
    for k, x in v.items():
        _at(k, _int(0), x)


def _history_row(v: Any) -> None:
    _dict(v)
    _at("epoch", _int(1), v.get("epoch"))
    for k, x in v.items():
        _at(k, _number(), x)


def _record(schema: dict[str, tuple[Check, bool]]) -> Check:
    """An object whose keys are all in ``schema`` (name -> (check, required))."""

    def check(v: Any) -> None:
        _dict(v)
        unknown = sorted(set(v) - set(schema))
        if unknown:
            raise _Invalid(f"unknown field(s) {', '.join(map(repr, unknown))}")
        for name, (item, required) in schema.items():
            if name in v:
                _at(name, item, v[name])
            elif required:
                raise _Invalid("missing field", name)

    return check


def _at(name: str, check: Check, value: Any) -> None:
    """Run ``check`` on ``value`` and prefix the field name of a failure."""
    try:
        check(value)
    except _Invalid as err:
        err.where = f"{name}.{err.where}" if err.where else name
        raise


def short(v: Any) -> str:
    """A value for an error message: its repr, cut to 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


FLOW_SCHEMA: dict[str, tuple[Check, bool]] = {
    "feature_dim": (_int(1, MAX_FEATURE_DIM), False),  # config_dict() repeats it
    "dr_dim": (_int(0, MAX_DR_DIM), True),
    "normalize": (_bool, True),
    "n_blocks": (_int(1, MAX_BLOCKS), True),
    "hidden_mult": (_int(1, MAX_HIDDEN_MULT), True),
    "clamp": (_number(0.0, MAX_CLAMP, lo_open=True), True),
    "perm_seed": (_int(0, MAX_PERM_SEED), True),
    # = flow.BLOCKS; optional: checkpoints from before the choice existed are GLOW flows
    "block": (_choice(("glow", "allinone")), False),
}

BACKBONE_SCHEMA: dict[str, tuple[Check, bool]] = {  # the keys of Backbone.describe()
    # a one-line name here; _cross_checks checks it against the family's registry
    "name": (_str(r"[^\x00-\x1f]{1,4096}"), True),
    "pretrained": (_optional(_str(r".{1,4096}")), False),
    "weights_id": (_str(r".{1,4096}"), False),
    "random_init": (_bool, False),
    "precision": (_choice(PRECISIONS), False),
    "preprocess": (_choice(PREPROCESS), False),
    "feature_dim": (_int(1, MAX_FEATURE_DIM), False),
    "image_size": (_int(1, 8192), False),
    "mean": (_list(_number(), 1, 4), False),
    "std": (_list(_number(0.0, lo_open=True), 1, 4), False),
    # optional: checkpoints from before the backbone zoo are open_clip tower outputs
    "family": (_choice(FAMILIES), False),
    "layers": (_optional(_list(_int(0, 4096), 1, 4096)), False),
    "layer_pool": (_optional(_choice(LAYER_POOLS)), False),
    # family custom built by clipflow's CLIs: the import path, shown to the user, never imported
    "factory": (_str(FACTORY_FORM.pattern), False),
}

META_SCHEMA: dict[str, tuple[Check, bool]] = {
    "format": (_equal(FORMAT), True),
    "format_version": (_equal(FORMAT_VERSION), True),
    "clipflow_version": (_str(r"[0-9A-Za-z.+!_-]{1,64}"), True),
    "weights": (_str(r"[^/\\]{1,255}\.safetensors"), True),
    "sha256": (_str(r"[0-9a-f]{64}"), True),
    "feature_dim": (_int(1, MAX_FEATURE_DIM), True),
    "flow": (_record(FLOW_SCHEMA), True),
    "backbone": (_record(BACKBONE_SCHEMA), True),
    "threshold": (_number(), True),
    "config": (_dict, True),
    # written by the training runs (save_checkpoint's ``extra``)
    "history": (_list(_history_row, min_len=1, max_len=MAX_HISTORY), False),
    "proxy": (_dict, False),
    "train": (
        _record(
            {
                "mode": (_choice(TRAIN_MODES), True),
                "n_images": (_int(0), False),
                "classes": (_count_map, False),  # class -> images used
                "views": (_int(1), False),
                "augmentation": (_str(), False),  # how training draws were reused
                "pair_crop": (_bool, False),
                "n_skipped": (_int(0), False),
                "epochs": (_int(1), False),
            }
        ),
        False,
    ),
    "validation": (
        _record(
            {
                "n_images": (_int(1), False),
                "n_skipped": (_int(0), False),
                "proxy": (_str(), False),
                "acc": (_number(0.0, 1.0), False),
            }
        ),
        False,
    ),
    "versions": (_str_map, False),
    # what the run found too small or not usable, also logged when it ran (eval/checks.py)
    "warnings": (_warning_map, False),
    # what the fast path ran as (Backbone.compile_status, StepRunner.status)
    "speed": (
        _record({"compile": (_str(), False), "cuda_graph": (_optional(_str()), False)}),
        False,
    ),
    # written by clipflow-calibrate: whose photos val_real_scores are (clipflow/runs/calibrate.py)
    "calibration": (
        _record(
            {
                "n": (_int(1), True),
                "fingerprint": (_str(r"[0-9a-f]{64}"), True),
                "root": (_str(r".{1,4096}"), True),
                "date": (_str(r"[0-9T:+.Z-]{10,40}"), True),
                "refit": (_bool, True),
                "n_skipped": (_int(0), False),
                "n_duplicates": (_int(0), False),  # content copies counted once
                "source_sha256": (_str(r"[0-9a-f]{64}"), False),
                "holdout": (_number(0.0, 1.0, lo_open=True), False),
                "n_fit": (_int(0), False),
            }
        ),
        False,
    ),
}


def validate_meta(meta: Any, where: str | Path) -> None:
    """Check every field of a model.json against :data:`META_SCHEMA`; one CheckpointError
    naming the first bad field. Runs before anything is built, so caps protect memory."""
    try:
        _shown_texts(meta)
        _record(META_SCHEMA)(meta)
        _cross_checks(meta)
    except _Invalid as err:
        name = f"field {display_text(err.where)}: " if err.where else ""
        raise CheckpointError(
            f"{where} is not a usable clipflow checkpoint ({name}{err.reason}); "
            "re-run clipflow-train"
        ) from None


def _cross_checks(meta: dict) -> None:
    dim = meta["feature_dim"]
    if meta["flow"].get("feature_dim", dim) != dim:
        raise _Invalid(f"{meta['flow']['feature_dim']} differs from feature_dim {dim}", "flow")
    problem = recorded_name_problem(meta["backbone"])
    if problem:
        raise _Invalid(f"{short(meta['backbone']['name'])} is {problem}", "backbone.name")
    if "factory" in meta["backbone"] and meta["backbone"].get("family") != CUSTOM:
        raise _Invalid("is recorded only for family custom", "backbone.factory")
    # backbone.feature_dim is not compared here: the backbone actually loaded is, by
    # require_feature_dim (the user may override the recorded one).
    if (meta["flow"]["dr_dim"] or dim) < 2:  # a coupling block splits the vector in two halves
        raise _Invalid("the flow needs at least 2 dimensions (dr_dim or feature_dim >= 2)", "flow")
    calibration = meta.get("calibration")
    if calibration is not None:  # clipflow-calibrate records holdout and n_fit iff it refit
        for key in ("holdout", "n_fit"):
            if key in calibration and not calibration["refit"]:
                raise _Invalid("is recorded only with refit=true", f"calibration.{key}")
            if key not in calibration and calibration["refit"]:
                raise _Invalid("missing field (refit=true records it)", f"calibration.{key}")
    # calibration.n is compared with the stored scores by the loader (it reads the tensors).


# ----------------------------------------------------------------------------- shown text
#
# The rule clipflow.core.fileio.display_path applies to file names, applied to every string of
# a model.json: a control character (C0 and DEL, as display_path; C1 too, which some terminals
# take as the start of an escape sequence) or an undecodable byte would reach a terminal raw
# when the string is shown. save_checkpoint records such characters as ``\xNN`` (display_text);
# the loader refuses any string that still holds one (text_problem), instead of showing it.

_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def display_text(text: str) -> str:
    """``text`` with every character :func:`text_problem` refuses written ``\\xNN`` (an
    undecodable byte, surrogate-escaped, as that byte; another lone surrogate as ``\\u`` and
    four hex digits). Other characters, backslashes included, are kept: a string a terminal
    shows as text."""
    return _UNSHOWN.sub(_escaped, text)


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def text_problem(text: str) -> str | None:
    """Why ``text`` must not be shown to a user as it is (a control character or an
    undecodable byte: a terminal escape sequence, a line break), or None."""
    match = _UNSHOWN.search(text)
    if match is None:
        return None
    what = "an undecodable byte" if ord(match.group()) >= 0xD800 else "a control character"
    return f"holds {what} ({display_text(match.group())}) at character {match.start()}"


def _shown_texts(meta: Any) -> None:
    """Every key and string of the JSON tree, at any depth, passes :func:`text_problem`, and
    no object or list is nested deeper than :data:`MAX_DEPTH`.

    Walked level by level, without recursion and without a path per node (a hostile 4 MiB
    file holds a million small lists; a tuple for each took seconds): the strings of a level
    are searched at once, and only a file that fails is walked again to name the field.
    """
    if not isinstance(meta, dict):
        return
    level: list[Any] = [meta]
    for _ in range(MAX_DEPTH):
        texts: list[str] = []
        deeper: list[Any] = []
        for node in level:
            if type(node) is dict:
                texts.extend(map(str, node))
                node = node.values()
            for value in node:
                kind = type(value)
                if kind is str:
                    texts.append(value)
                elif (kind is dict or kind is list) and value:  # an empty one holds no text
                    deeper.append(value)
        if _UNSHOWN.search("".join(texts)):  # joining cannot make or hide such a character
            _name_the_problem(meta)
        if not deeper:
            return
        level = deeper
    _name_the_problem(meta)


def _name_the_problem(meta: dict) -> None:
    """Raise the _Invalid that :func:`_shown_texts` found, naming the field (depth first)."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), meta)]
    while stack:
        path, node = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise _Invalid(f"nested deeper than {MAX_DEPTH} levels", ".".join(path))
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            problem = text_problem(str(key)) if isinstance(node, dict) else None
            if problem:
                raise _Invalid(f"the key {short(key)} {problem}", ".".join(path))
            if isinstance(value, str) and text_problem(value):
                where = ".".join((*path, str(key)))
                raise _Invalid(f"{short(value)} {text_problem(value)}", where)
            if isinstance(value, (dict, list)) and value:
                stack.append(((*path, str(key)), value))
    raise AssertionError("_shown_texts found a problem that is not there")  # pragma: no cover
