"""What each setting may be: :data:`RULES` (choices, ranges, checks) and the helpers that
coerce a value to its field's type and apply its rule (:func:`check`, :func:`typed_fields`).

The builders of :mod:`clipflow.settings.config` and :mod:`clipflow.settings.serve` call these
on every value; the first bad one raises :class:`SettingsError` with one line such as
``proxy.ratio=2: must be in (0, 1]``.

Caps (chosen to catch typos, far above any sensible run): ``flow.n_blocks`` ≤ 64,
``flow.dr_dim`` ≤ 4096, ``flow.hidden_mult`` ≤ 64, ``train.epochs`` ≤ 100000, batch sizes
≤ 65536 (``train.batch_size`` ≤ 1048576: features, not images), ``data.num_workers`` ≤ 256,
``data.views`` ≤ 1000, ``data.max_megapixels`` ≤ 10000, ``train.hinge_margin`` ≤ 100,
``seed`` < 2**32 (≤ 4294967 for training: it also seeds the flow's permutations).
Every numeric field has a rule (tests/test_settings.py walks them).
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backbones.config import (
    CUSTOM,
    FAMILIES,
    LAYER_POOLS,
    PRECISIONS,
    BackboneConfig,
    factory_problem,
)
from ..data.benchmarks import CHOICES as BENCHMARK_CHOICES
from ..data.train_images import MIN_IMAGES
from ..flow.config import BLOCKS, LOSSES, MODES
from ..transforms.config import (
    BANDS,
    CHAIN_OPS,
    MASK_MODES,
    PROXY_NAMES,
    RECON_BANDS,
    VAL_BANDS,
)
from ..transforms.reencode import reencode_problem
from .auto import AUTO
from .coerce import SettingsError, bad_value, coerce, shown
from .suggest import did_you_mean


# ---------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """What a value may be: one of ``choices``, or a number in [lo, hi] (ends open if asked),
    or whatever ``check`` accepts (it returns the problem, or None)."""

    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    check: Callable[[Any], str | None] | None = None
    auto: bool = False  # ``auto`` is also allowed (resolved for the device by resolve_auto)

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None  # nullable fields: None passed the type check
        if self.choices and value not in self.choices:
            return f"choose one of {', '.join(self.choices)}"
        if self.lo is not None or self.hi is not None:
            below = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
            above = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
            if below or above:
                return _range_text(self)
        return self.check(value) if self.check else None


def _range_text(r: Rule) -> str:
    lo, hi = _num(r.lo), _num(r.hi)
    if r.hi is None:
        return f"must be {'>' if r.lo_open else '>='} {lo}"
    if r.lo is None:
        return f"must be {'<' if r.hi_open else '<='} {hi}"
    return f"must be in {'(' if r.lo_open else '['}{lo}, {hi}{')' if r.hi_open else ']'}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _band(value: str) -> str | None:
    if all(b in BANDS for b in value.split("+")):
        return None
    return f"choose one of {', '.join(BANDS)}, or a '+' union such as low+high"


def _device(value: str) -> str | None:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return None
    return "use auto, cpu, mps, cuda or cuda:N"


def _one_line(value: str) -> str | None:
    if not value.strip() or any(c in value for c in "\r\n\x00"):
        return "must be one non-empty line"
    return None


def check_backbone(values: BackboneConfig | dict) -> None:
    """``backbone.factory`` only with ``family: custom``, then ``backbone.name`` against the
    registries (a custom extractor names itself). ``family: custom`` without a factory is
    refused when the run loads the backbone: the Python API passes the extractor instead."""
    given = values if isinstance(values, dict) else vars(values)
    family, factory = given.get("family"), given.get("factory")
    if factory and family not in (None, CUSTOM):
        raise bad_value(
            "backbone.factory", factory, f"builds a custom extractor: add backbone.family={CUSTOM}"
        )
    if family != CUSTOM:
        check_backbone_name(given.get("name"))


def check_backbone_name(name: str | None) -> None:
    """``backbone.name`` against open_clip's and timm's registries (dict lookups): a typo fails
    here, not after minutes of setup. Last of the checks, since the registries import torch:
    every other setting is refused without it (load_backbone then checks the name against
    backbone.family)."""
    if name is None:
        return
    from ..backbones.backbone import name_problem

    problem = name_problem(name)
    if problem:
        raise bad_value("backbone.name", name, problem)


def _not_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _ge(lo: float, hi: float | None = None) -> Rule:
    return Rule(lo=lo, hi=hi)


def _unit(lo_open: bool = True, hi_open: bool = False) -> Rule:
    return Rule(lo=0.0, hi=1.0, lo_open=lo_open, hi_open=hi_open)


_SEED = Rule(lo=0, hi=2**32 - 1)
# A training seed is also the flow's permutation seed: FrEIA seeds block i with seed·1000 + i,
# numpy takes seeds < 2**32, and flow.n_blocks ≤ 64 (= checkpoints.schema.MAX_PERM_SEED, which
# a checkpoint is held to when it is loaded).
MAX_TRAIN_SEED = (2**32 - 64) // 1000
_TRAIN_SEED = Rule(lo=0, hi=MAX_TRAIN_SEED)
_DEVICE = Rule(check=_device)
_LOADER_BATCH = _ge(1, 65536)
_WORKERS = Rule(lo=0, hi=256, auto=True)
_POSITIVE = Rule(lo=0.0, lo_open=True)

# Keys as the user types them (YAML paths). Fields without a rule only get the type check.
RULES: dict[str, Rule] = {
    "mode": Rule(choices=MODES),
    "loss": Rule(choices=LOSSES),
    "seed": _SEED,
    "device": _DEVICE,
    "logger": Rule(choices=("none", "tensorboard")),
    "backbone.name": Rule(check=_one_line),
    "backbone.precision": Rule(choices=(*PRECISIONS, AUTO), auto=True),
    "backbone.compile": Rule(auto=True),
    "backbone.preprocess": Rule(choices=("paper", "univfd")),
    "backbone.family": Rule(choices=FAMILIES),
    "backbone.layers": _ge(-1024, 1024),
    "backbone.layer_pool": Rule(choices=LAYER_POOLS),
    # the shape only: the module is imported when the run loads the backbone (not torch-free)
    "backbone.factory": Rule(check=factory_problem),
    "proxy.name": Rule(choices=PROXY_NAMES),
    "proxy.band": Rule(check=_band),
    "proxy.ratio": _unit(),
    "proxy.mask_mode": Rule(choices=MASK_MODES),
    "proxy.sigma": Rule(lo=0.0, hi=100.0, lo_open=True),
    "proxy.amount": _ge(0.0, 100.0),
    "proxy.brightness": _ge(0.0, 10.0),
    "proxy.contrast": _ge(0.0, 10.0),
    "proxy.saturation": _ge(0.0, 10.0),
    "proxy.hue": _ge(0.0, 0.5),
    "proxy.autoencoder": Rule(check=_one_line),  # proxy=recon: tiny | Hub id | folder | mod:fn
    "proxy.recon_band": Rule(choices=RECON_BANDS),
    "proxy.recon_mix": _ge(0.0, 1.0),
    "proxy.recon_cutoff": Rule(lo=0.0, hi=1.5, lo_open=True),
    "proxy.recon_batch_size": _ge(1, 4096),
    "proxy.freq_share": _ge(0.0, 1.0),
    "flow.dr_dim": _ge(0, 4096),
    "flow.n_blocks": _ge(1, 64),
    "flow.hidden_mult": _ge(1, 64),
    "flow.clamp": Rule(lo=0.0, hi=100.0, lo_open=True),
    "flow.block": Rule(choices=BLOCKS),
    "flow.perm_seed": _TRAIN_SEED,  # set from seed= (a saved config may carry it)
    "train.lr": Rule(lo=0.0, hi=1.0, lo_open=True),
    "train.batch_size": _ge(1, 2**20),
    "train.epochs": _ge(1, 100_000),
    "train.ram_budget_gb": Rule(lo=0.0, hi=2**20, lo_open=True),
    # m in relu(m − q), the level proxy scores q are pushed above: a margin, so >= 0 (-5 is a
    # sign typo); <= 100 catches typos, as q is per dimension (a few units for natural images)
    "train.hinge_margin": _ge(0.0, 100.0),
    "train.seed": _TRAIN_SEED,  # seed= of clipflow-train (a saved config may carry train.seed)
    "data.per_class": _ge(1),
    "data.val_fraction": _unit(hi_open=True),
    "data.val_band": Rule(choices=VAL_BANDS),
    "data.views": _ge(0, 1000),
    "data.protocol": Rule(choices=("all", "univfd")),
    "data.benchmark": Rule(choices=BENCHMARK_CHOICES),
    "data.reencode": Rule(check=reencode_problem),
    "data.max_per_class": _ge(1),
    "data.batch_size": Rule(lo=1, hi=65536, auto=True),
    "data.num_workers": Rule(lo=0, hi=256, auto=True),
    "data.prefetch_factor": _ge(1, 64),
    "data.decode": Rule(choices=("pil", "nvjpeg", AUTO), auto=True),
    "data.cache_shard_size": _ge(1, 2**24),
    # > 0 (a cap of 0 skips every image); ≤ 10000 catches typos (PIL refuses past ~179 MP
    # anyway unless the caller raises Image.MAX_IMAGE_PIXELS)
    "data.max_megapixels": Rule(lo=0.0, hi=10_000.0, lo_open=True),
    "stages": Rule(
        check=lambda v: None if v in ("train", "val", "test") else "use train, val, test"
    ),
    "detect.format": Rule(
        check=lambda v: None if v.lower() in ("jsonl", "csv") else "use jsonl or csv"
    ),
    "detect.fpr": _unit(hi_open=True),
    "calibrate.fpr": _unit(hi_open=True),
    "calibrate.holdout": Rule(lo=0.0, hi=0.9, lo_open=True),
    "calibrate.min_reals": _ge(MIN_IMAGES, 10**9),  # = what discovery accepts
    "detect.unsure_k": _ge(1, 8),  # = len(conformal.UNSURE_COPIES)
    "detect.batch_size": _LOADER_BATCH,
    "detect.num_workers": _WORKERS,
    "detect.inputs": Rule(check=_not_empty),
    "serve.host": Rule(check=_one_line),
    "serve.port": _ge(0, 65535),  # 0 = any free port
    "serve.max_upload_mb": Rule(lo=0.0, hi=100_000.0, lo_open=True),
    "serve.keep": Rule(check=_one_line),
    "chain.max_len": _ge(1, len(CHAIN_OPS)),
    "chain.ops": Rule(choices=CHAIN_OPS),
}


# ---------------------------------------------------------------- typing
def check(key: str, value: Any, hint: Any, rule_key: str | None = None) -> Any:
    """Coerce one value and apply its rule (looked up under ``rule_key``, default ``key``).
    ``auto`` stays ``auto`` where the rule allows it, whatever the field's type."""
    rule = RULES.get(rule_key or key)
    if rule is not None and rule.auto and isinstance(value, str) and value.strip() == AUTO:
        return AUTO
    typed = coerce(key, value, hint)
    if rule is not None:
        for item in typed if isinstance(typed, list) else [typed]:
            problem = rule.problem(item)
            if problem:
                raise bad_value(key, value if not isinstance(typed, list) else item, problem)
    return typed


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def typed_fields(cls: type, values: Any, where: str, partial: bool = False) -> dict[str, Any]:
    """Checked keyword arguments for ``cls`` from a mapping; unknown keys are errors.
    ``partial`` keeps only the keys given and drops nulls (backbone overrides of a checkpoint)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise bad_value(where, values, "must be a mapping of keys to values")
    hints = field_hints(cls)
    unknown = sorted(map(str, set(values) - set(hints)))
    if unknown:
        hint = did_you_mean(f"{where}.{unknown[0]}", [f"{where}.{k}" for k in hints])
        raise SettingsError(
            f"unknown key(s) {', '.join(shown(f'{where}.{k}') for k in unknown)}{hint}; "
            f"known under {where}: {', '.join(sorted(hints))}"
        )
    out = {}
    for name, value in values.items():
        if partial and value is None:
            continue
        out[name] = check(f"{where}.{name}", value, hints[name])
    return out


def top_level(cfg: Any, known: set[str]) -> dict:
    if not isinstance(cfg, dict):
        raise SettingsError(f"settings must be a mapping, got {type(cfg).__name__}")
    unknown = sorted(map(shown, set(cfg) - known))
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise SettingsError(
            f"unknown key(s) {', '.join(unknown)}{hint}; known: {', '.join(sorted(known))}"
        )
    return cfg
