"""Property-based fuzz of checkpoint loading: any mutation of model.json, of the tensors or of
the hashed spec either loads a valid model or raises CheckpointError, never another
exception; what loads has finite scores, a calibration record that counts its scores and only
strings a terminal shows as text."""

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from clipflow.checkpoints.checkpoint import Checkpoint, load_checkpoint
from clipflow.checkpoints.save import save_checkpoint
from clipflow.checkpoints.schema import text_problem
from clipflow.checkpoints.tensors import SPEC_TENSOR
from clipflow.core.fileio import file_sha256
from clipflow.errors import CheckpointError
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DELETE = "<delete>"


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """One tiny checkpoint, built once; every example works on a copy."""
    folder = tmp_path_factory.mktemp("fuzz-ckpt")
    torch.manual_seed(0)
    model = CLIPFlow(6, FlowConfig(dr_dim=4, n_blocks=1, hidden_mult=1))
    extra = {
        "history": [{"epoch": 1, "loss": 0.5}],
        "train": {"mode": "N", "epochs": 1, "n_images": 3},
        "validation": {"n_images": 3, "n_skipped": 0, "proxy": "bandstop", "acc": 0.5},
        "versions": {"torch": "2"},
        "calibration": {
            "n": 3,
            "fingerprint": "0" * 64,
            "root": "/photos",
            "date": "2026-11-29T14:00:00+00:00",
            "refit": False,
        },
    }
    save_checkpoint(folder, model, 0.1, {"name": "tiny"}, {"seed": 0}, torch.arange(3.0), extra)
    return folder


def _fields(node, prefix=()):
    """Every dotted path of the JSON tree (objects and lists), the containers included."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _fields(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _fields(v, (*prefix, i))
    return out


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-3, max_value=70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(alphabet=st.characters(max_codepoint=0xA0), max_size=6),  # control characters
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(DELETE),
)


def _strings(node):
    """Every key and string of a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _assert_loads_or_refuses(folder: Path) -> None:
    try:
        ckpt = load_checkpoint(folder)
    except CheckpointError as err:
        assert text_problem(str(err)) is None, repr(str(err))  # one line, no escape codes
        return
    assert isinstance(ckpt, Checkpoint) and math.isfinite(ckpt.threshold)
    scores = ckpt.model.score(torch.randn(4, ckpt.model.feature_dim))
    assert torch.isfinite(scores).all()
    assert torch.isfinite(ckpt.val_real_scores).all()
    calibration = ckpt.meta.get("calibration")
    assert calibration is None or calibration["n"] == ckpt.val_real_scores.numel()
    assert all(text_problem(s) is None for s in _strings(ckpt.meta))


def _copy(original: Path, dst: Path) -> Path:
    for name in ("model.json", "model.safetensors"):
        shutil.copy(original / name, dst / name)
    return dst


@FUZZ
@given(data=st.data())
def test_mutated_json_loads_or_is_refused(original, data):
    meta = json.loads((original / "model.json").read_text())
    paths = _fields(meta)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="n_mutations")):
        path = data.draw(st.sampled_from(paths), label="field")
        value = data.draw(values, label="value")
        node = meta
        try:
            for key in path[:-1]:
                node = node[key]
            if value == DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a parent
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(original, Path(tmp))
        (folder / "model.json").write_text(json.dumps(meta))
        _assert_loads_or_refuses(folder)


tensor_changes = st.sampled_from(
    ["nan", "inf", "-inf", "big_int", "negative", "reshape", "truncate", "dtype", "drop", "extra"]
)


def _mutate(t: torch.Tensor, change: str) -> torch.Tensor | None:
    t = t.clone()
    flat = t.view(-1)
    if change in ("nan", "inf", "-inf") and t.is_floating_point() and flat.numel():
        flat[0] = float(change)
    elif change == "big_int" and flat.numel():
        flat[0] = 10**6 if t.is_floating_point() else torch.iinfo(t.dtype).max
    elif change == "negative" and flat.numel():
        flat[0] = -1 if t.dtype != torch.uint8 else 0  # uint8: the spec bytes
    elif change == "reshape":
        return t.reshape(1, -1)
    elif change == "truncate":
        return flat[:-1].clone()
    elif change == "dtype":
        return t.double() if t.is_floating_point() else t.float()
    elif change == "drop":
        return None
    return t


@FUZZ
@given(data=st.data(), forge_hash=st.booleans())
def test_mutated_tensors_load_or_are_refused(original, data, forge_hash):
    tensors = load_file(str(original / "model.safetensors"))
    names = sorted(tensors)
    for _ in range(data.draw(st.integers(min_value=1, max_value=2), label="n_mutations")):
        name = data.draw(st.sampled_from(names), label="tensor")
        change = data.draw(tensor_changes, label="change")
        if change == "extra":
            tensors[f"{name}.extra"] = torch.zeros(2)
            continue
        if name not in tensors:
            continue
        mutated = _mutate(tensors[name], change)
        if mutated is None:
            del tensors[name]
        else:
            tensors[name] = mutated
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(original, Path(tmp))
        save_file(tensors, str(folder / "model.safetensors"))
        if forge_hash:  # the JSON re-hashed too: only the tensor checks stand in the way
            meta = json.loads((folder / "model.json").read_text())
            meta["sha256"] = file_sha256(folder / "model.safetensors")
            (folder / "model.json").write_text(json.dumps(meta))
        _assert_loads_or_refuses(folder)


@FUZZ
@given(data=st.data())
def test_mutated_spec_with_a_matching_hash_loads_or_is_refused(original, data):
    # The forger's next step: edit the hashed spec (and re-hash), with or without the same
    # edit in model.json.
    tensors = load_file(str(original / "model.safetensors"))
    spec = json.loads(bytes(tensors[SPEC_TENSOR].tolist()).decode())
    meta = json.loads((original / "model.json").read_text())
    path = data.draw(st.sampled_from(_fields(spec)), label="field")
    value = data.draw(values, label="value")
    also_json = data.draw(st.booleans(), label="also_json")
    for tree in (spec, meta) if also_json else (spec,):
        node = tree
        for key in path[:-1]:
            node = node[key]
        if value == DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    tensors[SPEC_TENSOR] = torch.tensor(
        list(json.dumps(spec, sort_keys=True).encode()), dtype=torch.uint8
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(original, Path(tmp))
        save_file(tensors, str(folder / "model.safetensors"))
        meta["sha256"] = file_sha256(folder / "model.safetensors")
        (folder / "model.json").write_text(json.dumps(meta))
        _assert_loads_or_refuses(folder)
