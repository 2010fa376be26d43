"""The backbone that scores for a checkpoint, checked against the one it recorded.

A backbone given ready-made (the Python API) must match the recorded family, name, layers
and feature size; otherwise the recorded one is loaded with the user's ``backbone.*``
overrides. A custom extractor's recorded factory is never run: the user names it.
"""

from __future__ import annotations

from ..backbones.backbone import Backbone, as_backbone, identity_mismatch, load_backbone
from ..backbones.config import CUSTOM, BackboneConfig
from ..backbones.protocol import ExtractorBackbone
from ..core.fileio import display_path
from ..errors import CheckpointError
from .checkpoint import Checkpoint


def require_feature_dim(ckpt: Checkpoint, backbone) -> None:
    """The one check that a backbone's features fit a checkpoint's flow."""
    if backbone.feature_dim != ckpt.model.feature_dim:
        raise CheckpointError(
            f"checkpoint expects {ckpt.model.feature_dim}-d features, backbone {backbone.cfg.name} "
            f"gives {backbone.feature_dim}-d; use the backbone it was trained with "
            f"({ckpt.backbone.get('name')})"
        )


def require_backbone_identity(ckpt: Checkpoint, backbone) -> None:
    """A backbone given ready-made (the Python API) must be the one the checkpoint recorded:
    family, name, layers and feature size; a custom extractor also its ``weights_id``."""
    actual = backbone.describe()
    recorded = dict(ckpt.backbone)
    if recorded.get("family", "open_clip") != CUSTOM:
        recorded.pop("weights_id", None)  # a local copy of the same weights is fine
    problem = identity_mismatch(recorded, actual)
    if problem:
        raise CheckpointError(
            f"backbone {actual.get('name')!r} does not match checkpoint "
            f"{display_path(ckpt.path or '?')}: {problem}"
        )
    require_feature_dim(ckpt, backbone)


def eval_backbone_config(ckpt: Checkpoint, overrides: dict) -> BackboneConfig:
    """The checkpoint's backbone, with the user's overrides (e.g. a local weights file).

    A custom extractor's recorded ``factory`` is never used: loading a checkpoint runs no code
    it names (docs/detect.md), so the user passes ``backbone.factory`` (or the extractor)."""
    keys = ("name", "pretrained", "precision", "preprocess", "family", "layers", "layer_pool")
    recorded = {k: ckpt.backbone.get(k) for k in keys}
    recorded = {k: v for k, v in recorded.items() if v is not None or k in ("pretrained", "layers")}
    cfg = BackboneConfig(**{**recorded, **overrides})
    if cfg.family == CUSTOM:
        _check_custom_overrides(ckpt, overrides)
    return cfg


def _check_custom_overrides(ckpt: Checkpoint, overrides: dict) -> None:
    """A custom extractor is rebuilt by the factory the user names, and nothing else applies."""
    shown = display_path(ckpt.path or "the checkpoint")
    if not overrides.get("factory"):
        recorded = ckpt.backbone.get("factory")
        example = recorded or "package.module:make_extractor"
        trained = f" (it recorded factory {recorded})" if recorded else ""
        raise CheckpointError(
            f"{shown} was trained with the custom extractor {ckpt.backbone['name']!r}{trained}: "
            f"pass backbone.factory={example} (clipflow runs no code a checkpoint names), or the "
            "extractor itself to the Python API (backbone=extractor); docs/backbones.md"
        )
    other = sorted(set(overrides) - {"factory", "family"})
    if other:
        raise CheckpointError(
            f"backbone.{other[0]} does not apply to the custom extractor of {shown}: its own "
            "describe() and attributes set how it runs; pass only backbone.factory"
        )


def checkpoint_backbone(
    ckpt: Checkpoint, overrides: dict, device, ready=None
) -> Backbone | ExtractorBackbone:
    """The backbone that scores for ``ckpt``, checked against its record: ``ready`` (an object
    given to the Python API), else the recorded one with the user's ``backbone.*`` overrides.
    A custom extractor (given, or built by ``backbone.factory``) must match the recorded
    family, name, ``weights_id`` and feature size; a built-in tower its feature size."""
    if ready is not None:
        backbone = as_backbone(ready)
        require_backbone_identity(ckpt, backbone)
        return backbone
    cfg = eval_backbone_config(ckpt, overrides)
    backbone = load_backbone(cfg, device)
    if cfg.family == CUSTOM:
        require_backbone_identity(ckpt, backbone)
    require_feature_dim(ckpt, backbone)
    return backbone
