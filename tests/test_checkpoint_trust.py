"""Checkpoints are verified whole or refused: the hashed spec is required and covers the
calibration record, calibration.n is the number of stored scores, every string a user may be
shown is displayable, and model.json's size and history are capped.

Every test edits the files as a hostile writer would: the weights are re-hashed into
model.json after every change (``_forge``), so what refuses them is the check under test,
never the sha256 check.
"""

import json
import os
import time

import pytest
import torch
from fixtures_checkpoints import DELETE, set_field
from safetensors.torch import load_file, save_file

from clipflow.checkpoints.checkpoint import load_checkpoint, read_meta
from clipflow.checkpoints.save import save_checkpoint
from clipflow.checkpoints.schema import (
    MAX_DEPTH,
    MAX_HISTORY,
    MAX_META_BYTES,
    display_text,
    text_problem,
)
from clipflow.checkpoints.tensors import SCORES_TENSOR, SPEC_TENSOR
from clipflow.core.fileio import atomic_write, file_sha256
from clipflow.errors import CheckpointError
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow

CALIBRATION = {
    "n": 4,
    "fingerprint": "a" * 64,
    "root": "/home/me/photos",
    "date": "2026-11-29T14:00:00+00:00",
    "refit": False,
    "n_skipped": 0,
    "source_sha256": "b" * 64,
}
TERMINAL = "\x1b]0;owned\x07\x1b[2J"  # set the window title, clear the screen


def _save(folder, n_scores=4, backbone=None, config=None, **extra):
    torch.manual_seed(0)
    model = CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=2, perm_seed=3))
    scores = torch.arange(float(n_scores))
    backbone = backbone or {"name": "tiny"}
    return save_checkpoint(folder, model, 0.25, backbone, config or {"seed": 0}, scores, extra)


def _calibrated(folder, **changes):
    return _save(folder, calibration={**CALIBRATION, **changes})


def _read_json(path):
    return json.loads(path.with_suffix(".json").read_text())


def _write_json(path, meta):
    path.with_suffix(".json").write_text(json.dumps(meta))


def _edit(path, dotted, value):
    """Set (or delete) a dotted field of model.json (the weights' hash stays valid)."""
    _write_json(path, set_field(_read_json(path), dotted, value))


def _forge(path, change):
    """Rewrite the weights with ``change(tensors)``, then re-hash them into model.json."""
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "clipflow-checkpoint/1"})
    _edit(path, "sha256", file_sha256(path))


def _spec(path) -> dict:
    return json.loads(bytes(load_file(str(path))[SPEC_TENSOR].tolist()).decode())


def _spec_tensor(spec: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(spec, sort_keys=True).encode()), dtype=torch.uint8)


def _forge_spec(path, dotted, value):
    """Edit a dotted field of the hashed spec (and re-hash): what a forger who read the
    loader would do next to a JSON edit."""
    spec = set_field(_spec(path), dotted, value)
    _forge(path, lambda tensors: tensors.__setitem__(SPEC_TENSOR, _spec_tensor(spec)))


def _refused(path, needle=None) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert needle is None or needle in msg, msg
    _assert_shown_safely(msg)
    return msg


def _assert_shown_safely(msg: str) -> None:
    """One line, no control character a terminal would act on, printable as UTF-8."""
    assert text_problem(msg) is None, repr(msg)
    msg.encode("utf-8")


# ----------------------------------------------------------------------------- spec required


@pytest.mark.parametrize(
    "field,value",
    [(None, None), ("threshold", 999.0), ("flow.clamp", 50.0), ("flow.n_blocks", 2)],
    ids=["untouched", "threshold=999", "clamp=50", "same-shape"],
)
def test_a_checkpoint_whose_spec_was_stripped_is_refused(tmp_path, field, value):
    # The old legacy path: without the spec the JSON's threshold (every image "real") or
    # clamp (NaN scores, labelled "real") would have been used as it stands.
    path = _save(tmp_path)
    _forge(path, lambda tensors: tensors.pop(SPEC_TENSOR))
    if field is not None:
        _edit(path, field, value)
    _refused(path, "has no spec tensor")


def test_the_spec_is_the_json_fields_themselves(tmp_path):
    path = _calibrated(tmp_path)
    meta, spec = _read_json(path), _spec(path)
    assert set(spec) == {"feature_dim", "flow", "threshold", "calibration"}
    assert spec["calibration"] == meta["calibration"] == CALIBRATION
    assert spec["threshold"] == meta["threshold"] and spec["feature_dim"] == meta["feature_dim"]
    assert "calibration" not in _spec(_save(tmp_path / "plain"))


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda spec: {**spec, "surprise": 1}, "spec tensor is unreadable"),
        (lambda spec: [spec], "spec tensor is unreadable"),
        (lambda spec: {**spec, "pad": "x" * (2**20)}, "at most"),  # over the spec's cap
    ],
    ids=["unknown-key", "not-an-object", "too-large"],
)
def test_a_forged_spec_of_another_shape_is_refused(tmp_path, change, needle):
    path = _save(tmp_path)
    spec = change(_spec(path))
    _forge(path, lambda tensors: tensors.__setitem__(SPEC_TENSOR, _spec_tensor(spec)))
    _refused(path, needle)


# ----------------------------------------------------------------------------- calibration


def test_a_calibrated_checkpoint_round_trips(tmp_path):
    ckpt = load_checkpoint(_calibrated(tmp_path))
    assert ckpt.meta["calibration"] == CALIBRATION
    assert ckpt.val_real_scores.numel() == CALIBRATION["n"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("calibration.n", 999999),
        ("calibration.n", 3),
        ("calibration.root", "/somewhere/else"),
        ("calibration.fingerprint", "c" * 64),
        ("calibration.date", "2030-01-01T00:00:00+00:00"),
        ("calibration.refit", True),
        ("calibration.n_skipped", 7),
        ("calibration.source_sha256", DELETE),
        ("calibration", DELETE),
    ],
)
def test_a_hand_edited_calibration_record_is_refused(tmp_path, field, value):
    path = _calibrated(tmp_path)
    if field == "calibration.refit":  # a record that refit=true would have written, in full
        _edit(path, "calibration.holdout", 0.5)
        _edit(path, "calibration.n_fit", 10)
    _edit(path, field, value)
    msg = _refused(path, "calibration")
    assert "differs from the value hashed" in msg


def test_a_calibration_record_added_to_an_uncalibrated_checkpoint_is_refused(tmp_path):
    path = _save(tmp_path)
    _edit(path, "calibration", CALIBRATION)  # the 4 stored scores: the count alone would fit
    _refused(path, "field calibration")


def test_calibration_n_must_count_the_stored_scores_even_when_the_spec_agrees(tmp_path):
    # The forger edits n in the JSON *and* in the spec, and re-hashes: only the comparison
    # with the scores the weights hold can refuse it.
    path = _calibrated(tmp_path)
    for n in (999999, 3, 5):
        _edit(path, "calibration.n", n)
        _forge_spec(path, "calibration.n", n)
        _refused(path, f"calibration.n ({n}) is not the number of calibration scores stored (4)")
    # and with the scores gone the record counts none of them
    _edit(path, "calibration.n", 4)
    _forge_spec(path, "calibration.n", 4)
    _forge(path, lambda tensors: tensors.pop(SCORES_TENSOR))
    _refused(path, "calibration scores stored (0)")


def test_a_calibrated_checkpoint_whose_spec_lacks_the_record_is_refused(tmp_path):
    # What clipflow-calibrate wrote before the record was hashed, or a forger's deletion.
    path = _calibrated(tmp_path)
    _forge_spec(path, "calibration", DELETE)
    msg = _refused(path, "field calibration")
    assert "clipflow-calibrate" in msg


@pytest.mark.parametrize(
    "record,needle",
    [
        ({"holdout": 0.5}, "calibration.holdout"),  # only refit=true holds out photos
        ({"n_fit": 3}, "calibration.n_fit"),
        ({"refit": True}, "calibration.holdout"),  # refit=true records both
        ({"refit": True, "holdout": 0.5}, "calibration.n_fit"),
    ],
)
def test_calibration_fields_follow_refit(tmp_path, record, needle):
    with pytest.raises(CheckpointError, match=needle):
        _calibrated(tmp_path / "save", **record)
    assert not (tmp_path / "save").exists()
    path = _calibrated(tmp_path / "load")
    for key, value in record.items():  # the same record, written by hand (spec agrees)
        _edit(path, f"calibration.{key}", value)
        _forge_spec(path, f"calibration.{key}", value)
    _refused(path, needle)


def test_save_refuses_a_calibration_count_that_is_not_the_scores(tmp_path):
    with pytest.raises(CheckpointError, match=r"calibration.n \(4\).*\(3\)"):
        _save(tmp_path / "run", n_scores=3, calibration=CALIBRATION)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- shown strings


def test_save_records_control_characters_escaped_and_the_file_loads(tmp_path):
    root = f"/photos/{TERMINAL}\nnext\udcff\x9b\\kept"
    path = _calibrated(tmp_path, root=root)
    text = path.with_suffix(".json").read_text(encoding="utf-8")
    assert "\\u001b" not in text and "\\n" not in text.replace("\\\\", "")  # nothing raw
    meta = load_checkpoint(path).meta
    assert meta["calibration"]["root"] == display_text(root)
    assert meta["calibration"]["root"] == (
        "/photos/\\x1b]0;owned\\x07\\x1b[2J\\x0anext\\xff\\x9b\\kept"
    )
    assert _spec(path)["calibration"]["root"] == meta["calibration"]["root"]


def test_save_escapes_keys_and_values_of_the_free_form_records(tmp_path):
    config = {"data": {"train_root": "C:\\photos\ttab", f"key{TERMINAL}": [f"x{TERMINAL}"]}}
    path = save_checkpoint(
        tmp_path, CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=1)), 0.0, {"name": "tiny"}, config
    )
    data = load_checkpoint(path).meta["config"]["data"]
    assert data["train_root"] == "C:\\photos\\x09tab"  # the backslash itself is kept
    assert data[display_text(f"key{TERMINAL}")] == [display_text(f"x{TERMINAL}")]


# (dotted field of model.json, a value a terminal would act on, the field the error names)
UNSHOWABLE = [
    ("calibration.root", f"/photos/{TERMINAL}", "calibration.root"),
    ("calibration.root", "/photos/\x9b31m", "calibration.root"),  # C1 CSI
    ("calibration.root", "/photos/\udcff", "calibration.root"),  # a lone surrogate
    ("backbone.pretrained", "weights\n.bin", "backbone.pretrained"),
    ("versions.torch", "2.0\x7f", "versions.torch"),
    ("train.augmentation", f"crop{TERMINAL}", "train.augmentation"),
    ("validation.proxy", "band\rstop", "validation.proxy"),
    ("config.data", {"root": f"x{TERMINAL}"}, "config.data.root"),
    ("config.data", [["ok", f"x{TERMINAL}"]], "config.data.0.1"),
    ("config.data", {f"key{TERMINAL}": 1}, "config.data"),
    ("proxy", {f"sigma{TERMINAL}": 1.0}, "proxy"),
    ("train.classes", {f"cat{TERMINAL}": 3}, "train.classes"),
    (f"surprise{TERMINAL}", 1, "key"),  # an unknown top-level field, named safely
]


@pytest.mark.parametrize(
    "field,value,named", UNSHOWABLE, ids=[f"{f[:18]}-{i}" for i, (f, _, _) in enumerate(UNSHOWABLE)]
)
def test_strings_a_terminal_would_act_on_are_refused_and_never_echoed(
    tmp_path, field, value, named
):
    path = _save(
        tmp_path,
        backbone={"name": "tiny", "pretrained": "weights.bin"},
        config={"seed": 0, "data": {}},
        calibration=CALIBRATION,
        train={"mode": "N", "augmentation": "none", "classes": {"cat": 3}},
        validation={"proxy": "bandstop"},
        versions={"torch": "2.0"},
        proxy={"sigma": 1.0},
    )
    load_checkpoint(path)  # the untouched file loads
    _edit(path, field, value)
    if field.startswith("calibration."):  # the spec agrees: the text rule alone refuses it
        _forge_spec(path, field, value)
    msg = _refused(path, named)
    assert "\x1b" not in msg and "\n" not in msg


def test_folder_names_in_errors_are_shown_as_display_path_writes_them(tmp_path):
    folder = tmp_path / f"run{TERMINAL}\nx"
    path = _save(folder)
    path.write_bytes(path.read_bytes()[:-10])
    msg = _refused(path, "truncated")
    assert "run\\x1b]0;owned\\x07\\x1b[2J\\x0ax" in msg


# ----------------------------------------------------------------------------- size caps


def test_an_oversized_model_json_is_refused_unread(tmp_path):
    path = _save(tmp_path)
    meta_path = path.with_suffix(".json")
    text = meta_path.read_text()
    meta_path.write_text(text + " " * (MAX_META_BYTES - len(text) + 1))  # still valid JSON
    msg = _refused(path, "over 4 MiB")
    assert "refused unread" in msg
    with open(meta_path, "r+b") as fh:  # 1 GiB (sparse): only the cap is ever read
        fh.truncate(2**30)
    start = time.perf_counter()
    _refused(path, "over 4 MiB")
    assert time.perf_counter() - start < 2


def test_a_history_over_the_cap_is_refused(tmp_path):
    path = _save(tmp_path, history=[{"epoch": 1, "loss": 0.5}])
    rows = [{"epoch": i + 1, "loss": 0.5} for i in range(MAX_HISTORY + 1)]
    _edit(path, "history", rows)
    assert path.with_suffix(".json").stat().st_size < MAX_META_BYTES  # the row cap refuses it
    _refused(path, "field history")


def test_save_keeps_an_evenly_spaced_history_within_the_cap(tmp_path):
    rows = [{"epoch": i + 1, "loss": 1.0 / (i + 1)} for i in range(2 * MAX_HISTORY + 345)]
    path = _save(tmp_path, history=rows)
    history = load_checkpoint(path).meta["history"]
    epochs = [row["epoch"] for row in history]
    assert len(history) == MAX_HISTORY and epochs[0] == 1 and epochs[-1] == len(rows)
    assert epochs == sorted(set(epochs))
    assert max(b - a for a, b in zip(epochs, epochs[1:])) <= 3  # evenly spaced, no gap
    assert all(row == rows[row["epoch"] - 1] for row in history)  # rows kept whole


def test_save_refuses_a_record_over_the_size_cap_and_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="4 MiB cap"):
        _save(tmp_path / "run", proxy={"notes": "x" * MAX_META_BYTES})
    assert not (tmp_path / "run").exists()


def test_deep_nesting_is_refused_naming_the_field(tmp_path):
    path = _save(tmp_path)
    deep: list = [1]
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    _edit(path, "config.data", deep)
    _refused(path, "nested deeper than")
    very_deep = "[" * 100_000 + "]" * 100_000  # beyond the parser's own recursion limit
    text = path.with_suffix(".json").read_text()
    path.with_suffix(".json").write_text(text.replace('"seed": 0', f'"seed": {very_deep}'))
    _refused(path, "unreadable")


def test_the_worst_file_within_the_cap_is_read_in_seconds(tmp_path):
    # A million small lists in the free-form config: the most objects 4 MiB of JSON can
    # hold. (A 98 MB model.json used to keep the loader busy for over a minute.)
    path = _save(tmp_path)
    meta = _read_json(path)
    meta["config"] = {"x": [[0]] * 1_000_000}
    text = json.dumps(meta, separators=(",", ":"))
    assert len(text) < MAX_META_BYTES
    path.with_suffix(".json").write_text(text)
    start = time.perf_counter()
    read_meta(path.with_suffix(".json"))
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_mode_even_when_the_writer_replaces_the_file(
    tmp_path, umask, mode
):
    def replace_it(tmp):  # what safetensors' save_file does: its own 0600 file, renamed
        other = tmp.with_name(tmp.name + ".own")
        fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
        os.replace(other, tmp)

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "out.bin", replace_it)
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
