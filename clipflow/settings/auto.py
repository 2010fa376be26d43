"""The ``auto`` speed settings resolved for the machine a run will use, once, at startup.

The shipped configs say ``auto`` for ``backbone.precision``, ``backbone.compile``,
``data.batch_size``, ``data.num_workers`` and ``data.decode``; :func:`resolve_auto` replaces
each by its value for the run's device and CPUs when :mod:`clipflow.settings.config` builds the
settings. What they became is logged in one line and kept in ``settings.auto`` (so in the
checkpoint's and the results' config); the resolved precision is in the backbone record and
the feature cache key. Library code never sees ``auto``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..backbones.config import BackboneConfig
from ..features.loader import BY_SIZE  # torch-free, as this layer must stay

if TYPE_CHECKING:
    from ..core.machine import Machine
    from .config import CalibrateSettings, DetectSettings, EvalSettings, TrainSettings

# The log line keeps the settings module's name: it is where users look for what auto chose.
log = logging.getLogger("clipflow.settings.config")

# The value that asks for a machine-dependent default (resolved by resolve_auto).
AUTO = "auto"


_CPU_WORKER_CAP = 4  # CPU runs: the main process runs the model; see auto_workers
_GPU_WORKER_CAP = 16  # past ~16 decoders the GPU, not the input pipeline, is the bound
_AUTO_BATCH = {"cuda": 256, "cpu": 64}  # docs/benchmarks.md: 256 saturates an H200 tower


def auto_workers(cpus: int, cuda: bool) -> int:
    """Loader processes: one CPU left to the main process, capped.

    On CUDA the main process only feeds the GPU: every other CPU decodes (up to 16). On CPU
    the main process runs the model on all cores, so workers compete with it: a few overlap
    decoding with the model (measured faster than 0 on 2 cores, see docs/benchmarks.md),
    more only take cores from it.
    """
    cap = _GPU_WORKER_CAP if cuda else _CPU_WORKER_CAP
    return max(0, min(cap, cpus - 1))


def resolve_auto(settings: TrainSettings | EvalSettings | CalibrateSettings):
    """``settings`` with every ``auto`` replaced by its value for the run's device; the
    choices in ``settings.auto`` and in one log line. No auto: no device query, no line."""
    data_auto = [n for n in ("batch_size", "num_workers", "decode") if _is_auto(settings.data, n)]
    bb = settings.backbone
    bb_values = vars(bb) if isinstance(bb, BackboneConfig) else bb
    if not data_auto and AUTO not in bb_values.values():
        return settings
    m = _probe(settings.device)
    chosen: dict[str, Any] = {}
    resolved_bb, bb_chosen = _resolve_backbone(bb, m)
    chosen.update(bb_chosen)
    values = {name: _auto_data_value(name, m) for name in data_auto}
    chosen.update({f"data.{k}": v for k, v in values.items()})
    settings.backbone = resolved_bb
    settings.data = replace(settings.data, **values)
    settings.auto = {**chosen, "device": m.label}
    _log_auto(settings.auto)
    return settings


def resolve_detect_auto(settings: DetectSettings) -> DetectSettings:
    """clipflow-detect's ``num_workers`` and its backbone overrides (a dict over the
    checkpoint's backbone) with each ``auto`` resolved for ``settings.device`` as
    :func:`resolve_auto` resolves them for the other commands, logged in the same line."""
    workers_auto = settings.num_workers == AUTO
    if not workers_auto and AUTO not in settings.backbone.values():
        return settings
    m = _probe(settings.device)
    settings.backbone, chosen = _resolve_backbone(settings.backbone, m)
    if workers_auto:
        settings.num_workers = auto_workers(m.cpus, m.cuda)
        chosen["data.num_workers"] = settings.num_workers
    _log_auto({**chosen, "device": m.label})
    return settings


def _probe(device: str) -> Machine:
    """The machine facts, asked only now that every setting has been checked: the probe
    imports torch (seconds), which a refused setting never waits for."""
    from ..core.machine import machine

    return machine(device)


def _is_auto(obj: Any, name: str) -> bool:
    return getattr(obj, name) == AUTO


def _auto_data_value(name: str, m: Machine) -> Any:
    if name == "batch_size":
        return _AUTO_BATCH["cuda" if m.cuda else "cpu"]
    if name == "num_workers":
        return auto_workers(m.cpus, m.cuda)
    # decode: on a GPU that can decode JPEGs, nvJPEG or PIL per extraction by the files' size
    # and the workers (features.loader.choose_decoder: measured, not always nvJPEG)
    return BY_SIZE if m.gpu_decode else "pil"


def _resolve_backbone(bb: BackboneConfig | dict, m: Machine):
    """(backbone with precision/compile resolved, {key: value chosen}); a dict of overrides
    (eval, detect) stays a dict."""
    values = bb if isinstance(bb, dict) else vars(bb)
    facts = {"precision": m.precision, "compile": m.compile}
    chosen = {k: v for k, v in facts.items() if values.get(k) == AUTO}
    named = {f"backbone.{k}": v for k, v in chosen.items()}
    if isinstance(bb, dict):
        return {**bb, **chosen}, named
    resolved = bb
    if "precision" in chosen:
        resolved = replace(resolved, precision=m.precision)
    if "compile" in chosen:
        resolved = replace(resolved, compile=m.compile)
    return resolved, named


def _log_auto(chosen: dict[str, Any]) -> None:
    """One line, e.g. ``auto: precision=bf16 decode=by_size num_workers=14 batch_size=256
    compile=on (cuda:0 NVIDIA H200)``."""
    parts = [f"{key.split('.')[-1]}={_on_off(chosen[key])}" for key in _LOG_ORDER if key in chosen]
    if parts:
        where = f" ({chosen['device']})" if "device" in chosen else ""
        log.info("auto: %s%s", " ".join(parts), where)


_LOG_ORDER = (
    "backbone.precision",
    "data.decode",
    "data.num_workers",
    "data.batch_size",
    "backbone.compile",
)


def _on_off(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)
