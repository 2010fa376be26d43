"""The settings layer (clipflow.settings.config and .rules): every value typed and
range-checked before any work.

Bad values are composed with Hydra exactly as the CLIs see them and must raise a
ClipflowError naming the key; the Hydra entry points turn Hydra's own errors and an unusable
run dir into one line + exit 2. One subprocess test checks a real console script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from clipflow.backbones.config import BackboneConfig
from clipflow.checkpoints.schema import MAX_PERM_SEED
from clipflow.cli import calibrate as calibrate_cli
from clipflow.cli import detect as detect_cli
from clipflow.cli import evaluate as eval_cli
from clipflow.cli import extract as extract_cli
from clipflow.cli import train as train_cli
from clipflow.cli.common import check_writable_dir
from clipflow.errors import ClipflowError
from clipflow.settings.coerce import SettingsError
from clipflow.settings.config import (
    CalibrateSettings,
    DetectSettings,
    EvalSettings,
    TrainSettings,
    calibrate_settings,
    detect_settings,
    eval_settings,
    extract_settings,
    train_settings,
)
from clipflow.settings.serve import ServeSettings, serve_settings

BUILDERS = {
    "train": train_settings,
    "extract": extract_settings,
    "eval": eval_settings,
    "detect": detect_settings,
    "calibrate": calibrate_settings,
    "serve": serve_settings,
}
MAINS = {
    "train": train_cli,
    "extract": extract_cli,
    "eval": eval_cli,
    "detect": detect_cli,
    "calibrate": calibrate_cli,
}


@lru_cache(maxsize=64)
def _composed(config: str, overrides: tuple[str, ...]) -> dict:
    with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
        cfg = compose(config_name=config, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def composed(config: str, *overrides: str) -> dict:
    return _composed(config, tuple(overrides))


def with_override(tree: dict, override: str) -> dict:
    """``tree`` with one ``key=value`` applied, the value typed by Hydra's own override parser
    (as the CLIs receive it) without a full compose per case."""
    parsed = OverridesParser.create().parse_override(override)
    return _assign(tree, tuple(parsed.key_or_group.split(".")), parsed.value())


# (override, key that the one-line message must name)
TRAIN_BAD = [
    ("proxy.ratio=2", "proxy.ratio=2: must be in (0, 1]"),
    ("proxy.ratio=0", "proxy.ratio=0"),
    ("proxy.band=lows", "proxy.band=lows"),
    ("proxy.band=low+hgh", "proxy.band"),
    ("proxy.mask_mode=exact", "proxy.mask_mode"),
    ("proxy.name=blur", "proxy.name"),
    ("train.lr=abc", "train.lr=abc: must be a number"),
    ("train.lr=0", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.batch_size=abc", "train.batch_size=abc: must be an integer"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("train.epochs=-1", "train.epochs=-1"),
    ("train.epochs=0", "train.epochs"),
    ("train.cuda_graph=maybe", "train.cuda_graph=maybe: must be true or false"),
    ("train.hinge_margin=-5", "train.hinge_margin=-5: must be in [0, 100]"),
    ("train.seed=-1", "train.seed=-1"),
    ("flow.perm_seed=-1", "flow.perm_seed=-1"),
    ("data.per_class=0", "data.per_class=0"),
    ("data.decode=nvjpg", "data.decode=nvjpg"),
    ("data.views=-1", "data.views=-1"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("data.protocol=univ", "data.protocol"),
    ("data.num_workers=-2", "data.num_workers"),
    ("data.cache=maybe", "data.cache"),
    ("data.train_root=[a,b]", "data.train_root"),
    ("data.max_megapixels=0", "data.max_megapixels=0: must be in (0, 10000]"),
    ("data.max_megapixels=-1", "data.max_megapixels=-1"),
    ("data.max_megapixels=1e9", "data.max_megapixels"),
    ("flow.n_blocks=0", "flow.n_blocks=0"),
    ("flow.n_blocks=65", "flow.n_blocks"),
    ("flow.dr_dim=-4", "flow.dr_dim=-4"),
    ("flow.dr_dim=5000", "flow.dr_dim"),
    ("flow.normalize=maybe", "flow.normalize"),
    ("flow.clamp=-1", "flow.clamp"),
    ("mode=NP", "mode=NP"),
    ("loss=l2", "loss=l2"),
    ("seed=-1", "seed=-1"),
    ("seed=abc", "seed=abc"),
    # a training seed is also FrEIA's permutation seed (seed·1000 + block < 2**32)
    (f"seed={MAX_PERM_SEED + 1}", f"seed={MAX_PERM_SEED + 1}: must be in [0, {MAX_PERM_SEED}]"),
    ("device=gpu", "device=gpu"),
    ("backbone.precision=fp8", "backbone.precision"),
    ("backbone.preprocess=clip", "backbone.preprocess"),
    ("backbone.name=ViT-L-14-quickgelux", "backbone.name"),
    ("backbone.compile=maybe", "backbone.compile"),
    ("+train.lrr=1", "train.lrr"),
    ("+flow.depth=3", "flow.depth"),
]
BAD = {
    "train": TRAIN_BAD,
    "extract": [
        ("stages=[train,tests]", "stages=tests"),
        ("proxy.ratio=2", "proxy.ratio"),
        ("train.epochs=-1", "train.epochs"),
    ],
    "eval": [
        ("perturb=jpg75", "perturb=jpg75"),
        ("perturb=[jpeg75,blur0]", "perturb"),
        ("chain.max_len=0", "chain.max_len=0"),
        ("chain.ops=[jpeg,sharpen]", "chain.ops=sharpen"),
        ("perturb=webp0", "perturb=webp0"),
        ("data.protocol=univ", "data.protocol"),
        ("data.benchmark=imagenet", "data.benchmark"),
        ("data.reencode=png", "data.reencode=png"),
        ("data.reencode=jpeg0", "data.reencode"),
        ("data.reencode=short1+jpeg90", "short side 1 px is outside 16-4096 px"),
        ("data.reencode=short99999999+jpeg90", "short side 99999999 px is outside 16-4096"),
        ("data.max_megapixels=0", "data.max_megapixels=0"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.decode=nvjpg", "data.decode"),
        ("seed=x", "seed=x"),
        ("device=cuda:x", "device"),
        ("backbone.precision=fp8", "backbone.precision"),
        ("backbone.preprocess=clip", "backbone.preprocess"),
        ("+backbone.depth=2", "backbone.depth"),
    ],
    "detect": [
        ("format=xml", "format=xml"),
        ("batch_size=0", "batch_size=0"),
        ("num_workers=many", "num_workers=many"),
        ("table=maybe", "table=maybe"),
        ("device=tpu", "device=tpu"),
        ("inputs=[a.png,'']", "inputs"),
        ("backbone.precision=fp8", "backbone.precision"),
        ("fpr=0", "fpr=0"),
        ("fpr=1", "fpr=1"),
        ("unsure_k=9", "unsure_k=9"),
        ("unsure=maybe", "unsure=maybe"),
    ],
    "calibrate": [
        ("fpr=1.5", "fpr=1.5"),
        ("holdout=0.95", "holdout=0.95"),
        ("min_reals=0", "min_reals=0"),
        ("refit=maybe", "refit=maybe"),
        ("data.real_root=[a,b]", "data.real_root"),
        ("data.max_megapixels=-1", "data.max_megapixels=-1"),
    ],
}
CASES = [(cmd, o, key) for cmd, rows in BAD.items() for o, key in rows]


@pytest.mark.parametrize(("command", "override", "needle"), CASES)
def test_bad_value_is_one_line_error_naming_the_key(command: str, override: str, needle: str):
    base = composed(command, "backbone=tiny") if command in ("train", "extract") else None
    with pytest.raises(ClipflowError) as info:
        BUILDERS[command](with_override(base or composed(command), override))
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("command", sorted(BUILDERS))
def test_shipped_defaults_pass(command: str):
    built = BUILDERS[command](composed(command))
    settings = built[0] if isinstance(built, tuple) else built
    assert is_dataclass(settings)  # the shipped YAML passes every rule of its command
    data = getattr(settings, "data", None)
    if hasattr(data, "batch_size"):  # the shipped `auto` sizes are resolved to numbers when built
        assert isinstance(data.batch_size, int) and isinstance(data.num_workers, int)


def test_good_values_are_typed_and_kept():
    s = train_settings(
        composed(
            "train",
            "backbone=tiny",
            "proxy.ratio=1",
            "proxy.band=low+high",
            "train.epochs=3",
            "train.lr=0.001",
            "flow.dr_dim=0",
            "data.views=0",
            "data.per_class=null",
            "seed=7",
            "device=cuda:1",
        )
    )
    assert (s.proxy.ratio, s.proxy.band, s.train.epochs, s.train.lr) == (1.0, "low+high", 3, 1e-3)
    assert (s.flow.dr_dim, s.data.views, s.data.per_class) == (0, 0, None)
    assert (s.seed, s.flow.perm_seed, s.train.seed, s.device) == (7, 7, 7, "cuda:1")
    # strings that spell the type are accepted (env interpolations arrive as strings)
    t = train_settings({"train": {"batch_size": "16", "cuda_graph": "false"}, "seed": 3.0})
    assert (t.train.batch_size, t.train.cuda_graph, t.seed) == (16, False, 3)
    e = eval_settings(composed("eval", "perturb=[jpeg75,blur2]", "backbone.pretrained=/w.pt"))
    assert [p.name for p in e.perturb] == ["jpeg75", "blur2"]
    assert e.backbone == {"pretrained": "/w.pt"}
    d = detect_settings(composed("detect", "inputs=one.png", "format=CSV"))
    assert (d.inputs, d.format) == (["one.png"], "CSV")
    d = detect_settings(composed("detect", "inputs=a.png", "fpr=0.05", "unsure=true"))
    assert (d.fpr, d.unsure, d.unsure_k) == (0.05, True, 4)
    c = calibrate_settings(composed("calibrate", "ckpt=c", "data.real_root=/p", "refit=true"))
    assert (c.ckpt, c.data.real_root, c.refit, c.holdout, c.fpr) == ("c", "/p", True, 0.5, None)
    assert c.out.startswith("outputs/calibrate/")  # the default out= is a fresh dated folder


def test_the_new_ranges_keep_their_edges():
    """The ends of each range stated in clipflow/settings/rules.py pass."""
    s = train_settings(
        composed(
            "train",
            "backbone=tiny",
            "train.hinge_margin=0",
            "data.max_megapixels=0.5",
            f"seed={MAX_PERM_SEED}",
        )
    )
    assert (s.train.hinge_margin, s.data.max_megapixels, s.flow.perm_seed) == (
        0.0,
        0.5,
        MAX_PERM_SEED,
    )
    assert train_settings(composed("train", "data.max_megapixels=null")).data.max_megapixels is None
    for spec in ("short16+jpeg1", "short4096+jpeg100", "none"):
        assert eval_settings(composed("eval", f"data.reencode={spec}")).data.reencode == spec
    assert eval_settings(composed("eval", f"seed={2**32 - 1}")).seed == 2**32 - 1  # no flow


def test_the_training_seed_cap_is_the_checkpoints():
    from clipflow.settings.rules import MAX_TRAIN_SEED

    assert MAX_TRAIN_SEED == MAX_PERM_SEED  # a run's seed is always one its checkpoint may hold


# ---------------------------------------------------------------- every numeric field has a rule
SETTINGS_CLASSES = {
    "train": TrainSettings,
    "eval": EvalSettings,
    "detect": DetectSettings,
    "calibrate": CalibrateSettings,
    "serve": ServeSettings,
}


def _numeric(hint) -> bool:
    """int, float, ``X | None`` or ``list[int]``: a value a range rule must bound."""
    return hint in (int, float) or any(_numeric(a) for a in typing.get_args(hint))


def _is_list(hint) -> bool:
    return any(typing.get_origin(h) is list for h in (hint, *typing.get_args(hint)))


def _numeric_fields(cls: type, prefix: tuple = ()) -> list[tuple[tuple, object]]:
    """Every numeric field a user can set, as (path of YAML keys, type); the ``backbone``
    overrides of eval, detect and calibrate (a dict) are BackboneConfig's fields."""
    out = []
    for name, hint in typing.get_type_hints(cls).items():
        hint = BackboneConfig if name == "backbone" else hint
        if is_dataclass(hint):
            out += _numeric_fields(hint, (*prefix, name))
        elif _numeric(hint):
            out.append(((*prefix, name), hint))
    return out


NUMERIC_FIELDS = [
    (command, path, hint)
    for command, cls in SETTINGS_CLASSES.items()
    for path, hint in _numeric_fields(cls)
]


@pytest.mark.parametrize(
    ("command", "path", "hint"),
    NUMERIC_FIELDS,
    ids=[f"{c}:{'.'.join(p)}" for c, p, _ in NUMERIC_FIELDS],
)
def test_every_numeric_setting_has_a_rule(command: str, path: tuple, hint):
    """A value far below any sensible one is refused, naming the key. A numeric field added
    without a rule in RULES fails here (train.hinge_margin=-5 and data.max_megapixels=0 were
    accepted, and failed or misled only later)."""
    absurd = -(10**15)
    base = composed(command, "backbone=tiny") if command == "train" else composed(command)
    tree = _assign(base, path, [absurd] if _is_list(hint) else absurd)
    with pytest.raises(SettingsError) as info:
        BUILDERS[command](tree)
    assert f"{path[-1]}={absurd}" in str(info.value), str(info.value)


def test_the_walk_finds_the_fields_that_had_no_rule():
    names = {".".join(p) for c, p, _ in NUMERIC_FIELDS if c == "train"}
    assert {"train.hinge_margin", "data.max_megapixels", "flow.perm_seed", "seed"} <= names
    assert len(NUMERIC_FIELDS) > 40  # every command, nested sections and overrides included


# ---------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("trian.lr=1", "train.lr"),
        ("train.lrr=1", "train.lr"),
        ("data.reencod=jpeg96", "data.reencode"),
        ("lr=0.01", "train.lr"),  # the right name without its section
    ],
)
def test_unknown_key_suggests_the_closest_known_ones(
    monkeypatch, capsys, tmp_path: Path, typed: str, meant: str
):
    """Hydra's advice ("To append to your config use +trian.lr=1") is never what the user
    wants; the line names the closest known keys instead."""
    code, _, err = _main(monkeypatch, capsys, train_cli, typed, f"hydra.run.dir={tmp_path}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    key = typed.split("=")[0]
    assert f"unknown key {key} (did you mean {meant}" in err, err
    assert "To append" not in err and f"+{key}" not in err


def test_unknown_key_without_a_close_one_lists_the_top_level_keys(
    monkeypatch, capsys, tmp_path: Path
):
    code, _, err = _main(monkeypatch, capsys, train_cli, "zzz.q=1", f"hydra.run.dir={tmp_path}")
    assert code == 2 and "did you mean" not in err
    assert "unknown key zzz.q (top-level keys: backbone, proxy" in err and "hydra" not in err


def test_unknown_key_in_a_settings_mapping_suggests_too():
    with pytest.raises(SettingsError, match=r"train\.lrr \(did you mean train\.lr\?\)"):
        train_settings({"train": {"lrr": 1e-3}})
    with pytest.raises(SettingsError, match=r"sede \(did you mean seed\?\)"):
        train_settings({"sede": 1})


def _main(monkeypatch, capsys, module, *args: str) -> tuple[int, str, str]:
    """A console script in-process: exit code (0 when it returns), stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["clipflow", *args])
    with pytest.raises(SystemExit) as info:
        module.main()
        sys.exit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        ("train", ["train.lrr=1"], "train.lrr"),  # unknown key (Hydra's struct check)
        ("train", ["proxy=freqmask"], "freq_mask"),  # unknown group option: lists the options
        ("train", ["train.lr=["], "train.lr=["),  # override syntax
        ("eval", ["ckpt=x", "perturb=jpg"], "perturb=jpg"),
        ("extract", ["stages=[tests]"], "stages=tests"),
        ("detect", ["ckpt=x", "inputs=a.png", "batch_size=0"], "batch_size=0"),
        ("calibrate", ["ckpt=x", "holdout=0"], "holdout=0"),
        # a bad value is reported before the (missing) data or the (unavailable) weights
        ("train", ["data.train_root=/nonexistent", "proxy.ratio=2"], "proxy.ratio=2"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    monkeypatch, capsys, tmp_path: Path, command: str, args: list[str], needle: str
):
    run = [f"hydra.run.dir={tmp_path / 'run'}"] if command != "detect" else []
    code, out, err = _main(monkeypatch, capsys, MAINS[command], *args, *run)
    assert code == 2, (code, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err


def test_cli_run_dir_that_is_a_file_exits_2(monkeypatch, capsys, tmp_path: Path):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    code, _, err = _main(
        monkeypatch, capsys, train_cli, "backbone=tiny", f"hydra.run.dir={blocker}"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: cannot write the run dir") and str(blocker) in err


def test_unwritable_run_dir_is_refused(tmp_path: Path):
    (tmp_path / "f").write_text("a file where a folder should be")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(ClipflowError, match="cannot write the run dir"):
            check_writable_dir(bad)
    assert check_writable_dir(tmp_path / "new" / "run").is_dir()
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ClipflowError, match="cannot write the run dir"):
        check_writable_dir(locked)


def test_cfg_job_still_prints_the_config(monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys, train_cli, "--cfg", "job", "backbone=tiny")
    assert code == 0 and "mode: N+P" in out and "name: tiny" in out, err


def test_console_script_hydra_typo_exits_2_with_one_line(tmp_path: Path):
    """The one real subprocess: Hydra's own error path, as a user meets it."""
    proc = subprocess.run(
        [sys.executable, "-m", "clipflow.cli.train", "trian.lr=1", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "trian" in proc.stderr and proc.stdout == ""
    assert "did you mean train.lr?" in proc.stderr


# ---------------------------------------------------------------- property-based fuzz
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["N", "P", "N+P", "low", "paper", "fp32", "nvjpeg", "all", "1", "true"]),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in tree.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


def _assign(tree: dict, path: tuple, value) -> dict:
    tree = {**tree}
    node = tree
    for key in path[:-1]:
        node[key] = dict(node[key]) if isinstance(node.get(key), dict) else {}
        node = node[key]
    node[path[-1]] = value
    return tree


def _typed(obj) -> None:
    """Every scalar field of a built settings object has its declared type."""
    for f in fields(obj):
        value, hint = getattr(obj, f.name), typing.get_type_hints(type(obj))[f.name]
        if is_dataclass(value):
            _typed(value)
        elif value is not None and hint in (int, float, bool, str, int | None, float | None):
            allowed = tuple(a for a in typing.get_args(hint) if a is not type(None)) or (hint,)
            assert isinstance(value, allowed) and not (
                int in allowed and isinstance(value, bool)
            ), (f.name, value)
            if isinstance(value, float):
                assert value == value and abs(value) != float("inf"), (f.name, value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    command=st.sampled_from(sorted(BUILDERS)),
    picks=st.lists(st.tuples(st.integers(0, 10_000), VALUES), min_size=1, max_size=4),
    extra=st.one_of(st.none(), st.tuples(st.text(max_size=6), VALUES)),
)
def test_fuzzed_settings_build_or_raise_clipflow_error(command, picks, extra):
    config = "train" if command == "extract" else command
    tree = composed(config, "backbone=tiny") if config == "train" else composed(config)
    paths = _paths(tree)
    for index, value in picks:
        tree = _assign(tree, paths[index % len(paths)], value)
    if extra is not None:
        tree = _assign(tree, (extra[0],), extra[1])
    try:
        built = BUILDERS[command](tree)
    except ClipflowError as err:
        assert "\n" not in str(err)
        return
    for obj in built if isinstance(built, tuple) else (built,):
        if is_dataclass(obj):
            _typed(obj)


def test_reproduce_and_check_data_values_go_through_the_layer(tmp_path: Path):
    from clipflow.cli.check_data import parse_request as check_data_request
    from clipflow.cli.reproduce import parse_request
    from clipflow.paper.experiment_configs import compose_settings
    from clipflow.runs.check_data import run_check

    for argv, needle in [
        (["experiment=table1", "seeds=[0,x]"], "seeds=x: must be an integer"),
        (["experiment=table1", "seeds=[-1]"], "seeds=-1"),
        (["experiment=table1", "dry_run=maybe"], "dry_run=maybe"),
        (["experiment=table1", "save_checkpoints=perhaps"], "save_checkpoints=perhaps"),
    ]:
        with pytest.raises(ClipflowError, match=needle):
            parse_request(argv)
    with pytest.raises(ClipflowError, match="proxy.ratio=2"):  # every arm's train overrides
        compose_settings(["backbone=tiny", "proxy.ratio=2"])
    with pytest.raises(ClipflowError, match="strict=maybe"):  # before any folder is scanned
        run_check(check_data_request([f"data.test_root={tmp_path / 'absent'}", "strict=maybe"]))
