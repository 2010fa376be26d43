"""Typed values of configs/serve.yaml (clipflow-serve), checked like every other command's.

Kept apart from :mod:`clipflow.settings.config` so that module stays one screenful per
command; the rules and checks are in :mod:`clipflow.settings.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .auto import resolve_detect_auto
from .config import DetectSettings, backbone_overrides
from .rules import check, check_backbone_name, field_hints, top_level, typed_fields


@dataclass
class ServeData:
    """``data:`` of serve.yaml: the pixel cap shared with the other commands."""

    max_megapixels: float | None = 100.0


@dataclass
class ServeSettings:
    """What ``clipflow-serve`` runs: the checkpoint, where it listens, how it decides."""

    ckpt: str = ""
    host: str = "127.0.0.1"  # loopback: only this machine reaches the page
    port: int = 7860  # 0 = any free port
    device: str = "auto"
    batch_size: int = 32
    fpr: float | None = None  # the page's default level; None = the checkpoint threshold
    unsure: bool = False
    unsure_k: int = 4
    max_upload_mb: float = 20.0  # larger uploads are refused (by Gradio, and again per file)
    keep: str | None = None  # folder to copy each upload into; None = nothing is kept
    data: ServeData = field(default_factory=ServeData)
    backbone: dict = field(default_factory=dict)


_PLAIN = ("ckpt", "host", "port", "device", "batch_size", "fpr", "unsure", "unsure_k")
_PLAIN_MORE = ("max_upload_mb", "keep")
_RULE_KEY = {"device": "device", "fpr": "detect.fpr", "unsure_k": "detect.unsure_k"}
_RULE_KEY |= {"batch_size": "detect.batch_size"}


def serve_settings(cfg: dict) -> ServeSettings:
    """clipflow-serve: checkpoint, address, decision level, caps, backbone overrides."""
    cfg = top_level(cfg, {f.name for f in fields(ServeSettings)})
    hints = field_hints(ServeSettings)
    values: dict[str, Any] = {
        name: check(name, cfg[name], hints[name], _RULE_KEY.get(name, f"serve.{name}"))
        for name in (*_PLAIN, *_PLAIN_MORE)
        if name in cfg and not (name in ("ckpt", "keep") and cfg[name] is None)
    }
    data = ServeData(**typed_fields(ServeData, cfg.get("data"), "data"))
    settings = ServeSettings(**values, data=data, backbone=backbone_overrides(cfg.get("backbone")))
    check_backbone_name(settings.backbone.get("name"))
    # the backbone overrides may say auto, as detect's do (workers: none, uploads are few)
    probe = DetectSettings(device=settings.device, num_workers=0, backbone=settings.backbone)
    settings.backbone = resolve_detect_auto(probe).backbone
    return settings
