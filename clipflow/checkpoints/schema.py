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

import re
from pathlib import Path
from typing import Any

from ..backbones.backbone import recorded_name_problem
from ..backbones.config import CUSTOM, FACTORY_FORM, FAMILIES, LAYER_POOLS, PRECISIONS
from ..errors import CheckpointError
from .field_checks import (
    Check,
    Invalid,
    boolean,
    choice,
    count_map,
    equal,
    history_row,
    integer,
    list_of,
    number,
    obj,
    optional,
    record,
    short,
    str_map,
    string,
    warning_map,
)

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


FLOW_SCHEMA: dict[str, tuple[Check, bool]] = {
    "feature_dim": (integer(1, MAX_FEATURE_DIM), False),  # config_dict() repeats it
    "dr_dim": (integer(0, MAX_DR_DIM), True),
    "normalize": (boolean, True),
    "n_blocks": (integer(1, MAX_BLOCKS), True),
    "hidden_mult": (integer(1, MAX_HIDDEN_MULT), True),
    "clamp": (number(0.0, MAX_CLAMP, lo_open=True), True),
    "perm_seed": (integer(0, MAX_PERM_SEED), True),
    # = flow.BLOCKS; optional: checkpoints from before the choice existed are GLOW flows
    "block": (choice(("glow", "allinone")), False),
}

BACKBONE_SCHEMA: dict[str, tuple[Check, bool]] = {  # the keys of Backbone.describe()
    # a one-line name here; _cross_checks checks it against the family's registry
    "name": (string(r"[^\x00-\x1f]{1,4096}"), True),
    "pretrained": (optional(string(r".{1,4096}")), False),
    "weights_id": (string(r".{1,4096}"), False),
    "random_init": (boolean, False),
    "precision": (choice(PRECISIONS), False),
    "preprocess": (choice(PREPROCESS), False),
    "feature_dim": (integer(1, MAX_FEATURE_DIM), False),
    "image_size": (integer(1, 8192), False),
    "mean": (list_of(number(), 1, 4), False),
    "std": (list_of(number(0.0, lo_open=True), 1, 4), False),
    # optional: checkpoints from before the backbone zoo are open_clip tower outputs
    "family": (choice(FAMILIES), False),
    "layers": (optional(list_of(integer(0, 4096), 1, 4096)), False),
    "layer_pool": (optional(choice(LAYER_POOLS)), False),
    # family custom built by clipflow's CLIs: the import path, shown to the user, never imported
    "factory": (string(FACTORY_FORM.pattern), False),
}

META_SCHEMA: dict[str, tuple[Check, bool]] = {
    "format": (equal(FORMAT), True),
    "format_version": (equal(FORMAT_VERSION), True),
    "clipflow_version": (string(r"[0-9A-Za-z.+!_-]{1,64}"), True),
    "weights": (string(r"[^/\\]{1,255}\.safetensors"), True),
    "sha256": (string(r"[0-9a-f]{64}"), True),
    "feature_dim": (integer(1, MAX_FEATURE_DIM), True),
    "flow": (record(FLOW_SCHEMA), True),
    "backbone": (record(BACKBONE_SCHEMA), True),
    "threshold": (number(), True),
    "config": (obj, True),
    # written by the training runs (save_checkpoint's ``extra``)
    "history": (list_of(history_row, min_len=1, max_len=MAX_HISTORY), False),
    "proxy": (obj, False),
    "train": (
        record(
            {
                "mode": (choice(TRAIN_MODES), True),
                "n_images": (integer(0), False),
                "classes": (count_map, False),  # class -> images used
                "views": (integer(1), False),
                "augmentation": (string(), False),  # how training draws were reused
                "pair_crop": (boolean, False),
                "n_skipped": (integer(0), False),
                "epochs": (integer(1), False),
            }
        ),
        False,
    ),
    "validation": (
        record(
            {
                "n_images": (integer(1), False),
                "n_skipped": (integer(0), False),
                "proxy": (string(), False),
                "acc": (number(0.0, 1.0), False),
            }
        ),
        False,
    ),
    "versions": (str_map, False),
    # what the run found too small or not usable, also logged when it ran (eval/checks.py)
    "warnings": (warning_map, False),
    # what the fast path ran as (Backbone.compile_status, StepRunner.status)
    "speed": (
        record({"compile": (string(), False), "cuda_graph": (optional(string()), False)}),
        False,
    ),
    # written by clipflow-calibrate: whose photos val_real_scores are (clipflow/runs/calibrate.py)
    "calibration": (
        record(
            {
                "n": (integer(1), True),
                "fingerprint": (string(r"[0-9a-f]{64}"), True),
                "root": (string(r".{1,4096}"), True),
                "date": (string(r"[0-9T:+.Z-]{10,40}"), True),
                "refit": (boolean, True),
                "n_skipped": (integer(0), False),
                "n_duplicates": (integer(0), False),  # content copies counted once
                "source_sha256": (string(r"[0-9a-f]{64}"), False),
                "holdout": (number(0.0, 1.0, lo_open=True), False),
                "n_fit": (integer(0), False),
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
        record(META_SCHEMA)(meta)
        _cross_checks(meta)
    except Invalid as err:
        name = f"field {display_text(err.where)}: " if err.where else ""
        raise CheckpointError(
            f"{where} is not a usable clipflow checkpoint ({name}{err.reason}); "
            "re-run clipflow-train"
        ) from None


def _cross_checks(meta: dict) -> None:
    dim = meta["feature_dim"]
    if meta["flow"].get("feature_dim", dim) != dim:
        raise Invalid(f"{meta['flow']['feature_dim']} differs from feature_dim {dim}", "flow")
    problem = recorded_name_problem(meta["backbone"])
    if problem:
        raise Invalid(f"{short(meta['backbone']['name'])} is {problem}", "backbone.name")
    if "factory" in meta["backbone"] and meta["backbone"].get("family") != CUSTOM:
        raise Invalid("is recorded only for family custom", "backbone.factory")
    # backbone.feature_dim is not compared here: the backbone actually loaded is, by
    # require_feature_dim (the user may override the recorded one).
    if (meta["flow"]["dr_dim"] or dim) < 2:  # a coupling block splits the vector in two halves
        raise Invalid("the flow needs at least 2 dimensions (dr_dim or feature_dim >= 2)", "flow")
    calibration = meta.get("calibration")
    if calibration is not None:  # clipflow-calibrate records holdout and n_fit iff it refit
        for key in ("holdout", "n_fit"):
            if key in calibration and not calibration["refit"]:
                raise Invalid("is recorded only with refit=true", f"calibration.{key}")
            if key not in calibration and calibration["refit"]:
                raise Invalid("missing field (refit=true records it)", f"calibration.{key}")
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
    """Raise the Invalid that :func:`_shown_texts` found, naming the field (depth first)."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), meta)]
    while stack:
        path, node = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise Invalid(f"nested deeper than {MAX_DEPTH} levels", ".".join(path))
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            problem = text_problem(str(key)) if isinstance(node, dict) else None
            if problem:
                raise Invalid(f"the key {short(key)} {problem}", ".".join(path))
            if isinstance(value, str) and text_problem(value):
                where = ".".join((*path, str(key)))
                raise Invalid(f"{short(value)} {text_problem(value)}", where)
            if isinstance(value, (dict, list)) and value:
                stack.append(((*path, str(key)), value))
    raise AssertionError("_shown_texts found a problem that is not there")  # pragma: no cover
