"""Checkpoints: trained parts only, exact round trip, refusal of anything wrong."""

import json
import os
import time

import pytest
import torch
from fixtures_checkpoints import DELETE, set_field
from safetensors.torch import load_file, save_file

from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.checkpoints.save import save_checkpoint
from clipflow.checkpoints.schema import FLOW_SCHEMA, MAX_BLOCKS, MAX_FEATURE_DIM
from clipflow.core.fileio import file_sha256
from clipflow.detect import Detector
from clipflow.errors import CheckpointError
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow


def _save(tmp_path, feature_dim=16, **extra):
    torch.manual_seed(0)
    model = CLIPFlow(feature_dim, FlowConfig(dr_dim=8, n_blocks=2, perm_seed=3))
    path = save_checkpoint(
        tmp_path, model, 0.25, {"name": "tiny"}, {"mode": "N+P"}, torch.arange(4.0), extra
    )
    return model, path


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, path = _save(tmp_path)
    for target in (path, tmp_path, path.with_suffix(".json")):
        ckpt = load_checkpoint(target)
        x = torch.randn(5, 16)
        assert torch.allclose(ckpt.model.score(x), model.eval().score(x))
        assert ckpt.threshold == 0.25 and ckpt.backbone == {"name": "tiny"}
        assert torch.equal(ckpt.val_real_scores, torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    # only the trained parts: a few hundred KB, not a backbone
    assert path.stat().st_size < 2_000_000


def test_truncated_weights_are_refused(tmp_path):
    _, path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_backbone_of_another_feature_size_is_refused_where_production_checks(tmp_path):
    # Production loads the checkpoint, then the recorded backbone, then compares their feature
    # sizes (Detector here; clipflow-eval's prepare_eval calls the same require_feature_dim).
    _save(tmp_path, feature_dim=16)  # recorded backbone: tiny, which gives 768-d features
    with pytest.raises(CheckpointError, match="expects 16-d features.*gives 768-d") as err:
        Detector.from_checkpoint(tmp_path, device="cpu")
    assert "\n" not in str(err.value)


def test_other_format_version_is_refused(tmp_path):
    _, path = _save(tmp_path)
    _edit(path, "format_version", 99)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)


def test_missing_and_foreign_files_give_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04pickle?")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- hostile JSON


def _edit(path, dotted, value):
    """Set (or delete) a dotted field of the checkpoint's model.json."""
    meta_path = path.with_suffix(".json")
    meta_path.write_text(json.dumps(set_field(json.loads(meta_path.read_text()), dotted, value)))


HISTORY = {"history": [{"epoch": 1, "loss": 0.5}], "train": {"mode": "N+P", "epochs": 1}}
HISTORY["validation"] = {"n_images": 4, "n_skipped": 0, "proxy": "bandstop", "acc": 0.75}
HISTORY["versions"] = {"torch": "2.0"}

# (dotted field, hostile value, the field the one-line error must name)
HOSTILE = [
    ("threshold", 999.0, "threshold"),  # finite but not the calibrated one: labels all real
    ("threshold", -1e300, "threshold"),
    ("threshold", "0.25", "threshold"),
    ("threshold", None, "threshold"),
    ("threshold", True, "threshold"),
    ("threshold", DELETE, "threshold"),
    ("feature_dim", -5, "feature_dim"),
    ("feature_dim", 10**7, "feature_dim"),
    ("feature_dim", 16.5, "feature_dim"),
    ("feature_dim", 32, "flow"),  # disagrees with flow.feature_dim
    ("flow.n_blocks", 10**7, "flow.n_blocks"),
    ("flow.n_blocks", 0, "flow.n_blocks"),
    ("flow.n_blocks", 3, "flow"),  # in range, but not what the weights were trained with
    ("flow.dr_dim", -1, "flow.dr_dim"),
    ("flow.dr_dim", 1, "flow"),  # a coupling block cannot split one dimension
    ("flow.dr_dim", 4, "flow"),
    ("flow.hidden_mult", 0, "flow.hidden_mult"),
    ("flow.hidden_mult", 2.0, "flow.hidden_mult"),
    ("flow.clamp", "x", "flow.clamp"),
    ("flow.clamp", 0, "flow.clamp"),
    ("flow.clamp", 1e9, "flow.clamp"),
    ("flow.clamp", 3.0, "flow"),  # changes every score without changing a shape
    ("flow.normalize", "yes", "flow.normalize"),
    ("flow.normalize", False, "flow"),
    ("flow.perm_seed", -1, "flow.perm_seed"),
    ("flow.perm_seed", 10**12, "flow.perm_seed"),
    ("flow.wings", 2, "flow"),
    ("flow.block", "resnet", "flow.block"),
    ("flow.clamp", DELETE, "flow.clamp"),
    ("flow", [], "flow"),
    ("format_version", True, "version"),
    ("sha256", "abc", "sha256"),
    ("clipflow_version", DELETE, "clipflow_version"),
    ("weights", "../../etc/model.safetensors", "weights"),
    ("backbone", "tiny", "backbone"),
    ("backbone.name", "ViT-Nope", "backbone.name"),
    ("backbone.precision", "fp8", "backbone.precision"),
    ("backbone.preprocess", 3, "backbone.preprocess"),
    ("backbone.feature_dim", 0, "backbone.feature_dim"),
    ("backbone.mean", [0.5, "x", 0.5], "backbone.mean.1"),
    ("backbone.colour", "red", "backbone"),
    ("config", None, "config"),
    ("history", [], "history"),  # an empty history: no epoch ran
    ("history", [{"epoch": 1, "loss": "nan"}], "history.0.loss"),
    ("history", [{"loss": 0.5}], "history.0.epoch"),
    ("train.mode", "Q", "train.mode"),
    ("train.epochs", 0, "train.epochs"),
    ("validation.acc", 2.0, "validation.acc"),
    ("versions", {"torch": 2}, "versions.torch"),
    ("surprise", 1, "surprise"),
]


@pytest.mark.parametrize(
    "field,value,named", HOSTILE, ids=[f"{f}={str(v)[:12]}" for f, v, _ in HOSTILE]
)
def test_hostile_json_field_is_refused_naming_the_field(tmp_path, field, value, named):
    _, path = _save(tmp_path, **HISTORY)
    load_checkpoint(path)  # the untouched file loads
    _edit(path, field, value)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert named in msg and "\n" not in msg, msg
    assert time.perf_counter() - start < 5  # caps first: no 40 s build of 10**7 blocks


def test_nan_in_the_json_text_is_refused(tmp_path):
    _, path = _save(tmp_path)
    meta_path = path.with_suffix(".json")
    meta_path.write_text(meta_path.read_text().replace('"threshold": 0.25', '"threshold": NaN'))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(path)


def test_schema_covers_every_flow_field():
    # A new FlowConfig field must get a check (and a cap) here, or checkpoints would carry it
    # unchecked; the caps must admit the defaults.
    names = {f for f in FlowConfig.__dataclass_fields__}
    assert names | {"feature_dim"} <= set(FLOW_SCHEMA)
    assert FlowConfig().n_blocks <= MAX_BLOCKS and 768 <= MAX_FEATURE_DIM


# ----------------------------------------------------------------------------- hostile tensors


def _forge(path, change):
    """Rewrite the weights with ``change(tensors)`` and re-hash them into the JSON: what a
    buggy writer or a deliberate forger produces; the hash alone cannot catch it."""
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))
    _edit(path, "sha256", file_sha256(path))


def _set(name, value):
    def change(tensors):
        if value is DELETE:
            del tensors[name]
        else:
            tensors[name] = value

    return change


def _poison(name, value):
    def change(tensors):
        t = tensors[name].clone()
        t.view(-1)[0] = value
        tensors[name] = t

    return change


HOSTILE_TENSORS = [
    (_poison("model.dr.weight", float("nan")), "NaN or infinite"),
    (_poison("model.flow.module_list.0.subnet1.2.bias", float("inf")), "NaN or infinite"),
    (_poison("val_real_scores", float("nan")), "NaN or infinite"),
    (_poison("model.flow.module_list.1.perm", 10**9), "not a permutation"),
    (_poison("model.flow.module_list.1.perm_inv", -1), "not a permutation"),
    (_set("model.dr.weight", torch.zeros(8, 17)), "model.dr.weight is [8, 17]"),
    (_set("model.dr.weight", torch.zeros(8, 16, dtype=torch.float64)), "model.dr.weight"),
    (_set("model.dr.bias", DELETE), "missing model.dr.bias"),
    (_set("model.extra", torch.zeros(1)), "unexpected tensor model.extra"),
    (_set("val_real_scores", torch.zeros(2, 2)), "val_real_scores"),
    (_set("spec", torch.tensor([1, 2, 3], dtype=torch.uint8)), "spec"),
    (_set("spec", torch.zeros(3)), "spec"),
]


@pytest.mark.parametrize("change,needle", HOSTILE_TENSORS)
def test_forged_tensors_are_refused(tmp_path, change, needle):
    _, path = _save(tmp_path)
    _forge(path, change)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_checkpoint_without_spec_tensor_is_refused(tmp_path):
    # Without the spec nothing would tie threshold or clamp to the weights: such a file is
    # refused whatever else it holds (re-hashed, so the hash check is not what refuses it).
    _, path = _save(tmp_path)
    _forge(path, _set("spec", DELETE))
    with pytest.raises(CheckpointError, match="has no spec tensor") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- writer


@pytest.mark.parametrize(
    "threshold,extra,weights_nan,needle",
    [
        (float("nan"), {}, False, "threshold"),
        (0.0, {"history": []}, False, "history"),
        (0.0, {}, True, "NaN"),
        (0.0, {"proxy": {"sigma": float("inf")}}, False, "NaN or infinite setting"),
    ],
)
def test_save_refuses_what_load_would_refuse_and_writes_nothing(
    tmp_path, threshold, extra, weights_nan, needle
):
    model = CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=1))
    if weights_nan:
        with torch.no_grad():
            model.dr.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=needle):
        save_checkpoint(tmp_path / "run", model, threshold, {"name": "tiny"}, {}, None, extra)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_both_checkpoint_files_get_the_mode_of_a_plain_open(tmp_path, umask, mode):
    # safetensors writes its own 0600 temporary file; the weights must still follow the
    # umask like model.json (and every other output) does.
    old = os.umask(umask)
    try:
        _, path = _save(tmp_path)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
