"""timm towers: any timm image model; features = its pooled pre-logits (``num_classes=0``).

``backbone.family=timm backbone.name=vit_small_patch14_dinov2.lvd142m``: the name carries
timm's pretrained tag. ``backbone.pretrained``: ``timm`` (timm's weights for that tag), a local
weights file, or null (seeded random init). Size, mean, std and crop come from timm's
``resolve_model_data_config``.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from ..errors import BackboneError, first_line
from .tower import Tower, square_size

TIMM_TAG = "timm"  # backbone.pretrained=timm: the weights timm names for the model's tag
# the files timm's hub loader looks for, in its order of preference
_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def is_timm_name(name: str) -> bool:
    """A timm architecture (with or without a ``.tag``) or an ``hf-hub:`` timm repo."""
    import timm

    return name.startswith("hf-hub:") or timm.is_model(name)


def create_timm(name: str, pretrained: str | None, cache_dir: str | None = None) -> nn.Module:
    """timm's model with its classifier removed (pooled pre-logits out); one-line errors."""
    import timm

    if not is_timm_name(name):
        raise BackboneError(
            f"unknown timm model {name!r}; e.g. backbone.name=vit_small_patch14_dinov2.lvd142m "
            "(see timm.list_models())"
        )
    kwargs: dict = {"num_classes": 0}
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    if pretrained and pretrained != TIMM_TAG:
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(pretrained).expanduser())}
    try:
        return timm.create_model(name, pretrained=bool(pretrained), **kwargs)
    except Exception as err:  # hub, network, file and state-dict errors all end here
        raise BackboneError(
            f"cannot build timm model {name} (pretrained={pretrained}): "
            f"{first_line(err, limit=120)}"
        ) from None


def timm_tower(model: nn.Module) -> Tower:
    """The facts of a timm model, from timm's own data config."""
    import timm.data

    dc = timm.data.resolve_model_data_config(model)
    size = square_size(dc["input_size"])
    crop_pct = float(dc.get("crop_pct") or 1.0)
    blocks = getattr(model, "blocks", None)
    # timm's ViTs hold an nn.Sequential (layers.py only takes len() and indexes it)
    indexed_blocks = blocks if isinstance(blocks, nn.Sequential | nn.ModuleList) else None
    class_token = getattr(model, "cls_token", None) is not None
    return Tower(
        model=model,
        visual=model,
        image_size=size,
        mean=tuple(float(x) for x in dc["mean"]),
        std=tuple(float(x) for x in dc["std"]),
        resize_to=max(size, math.floor(size / crop_pct)),  # timm's own resize-then-crop ratio
        blocks=indexed_blocks,
        class_token=class_token,
        prefix_tokens=int(getattr(model, "num_prefix_tokens", int(class_token))),
    )


def hub_source(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(Hugging Face repo, candidate files) timm would download for ``name``, or None."""
    import timm.models

    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:").split("@")[0], _HUB_FILES
    pcfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    return (hub, _HUB_FILES) if hub else None


def in_hf_cache(repo: str, files: tuple[str, ...], cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache_dir), str) for f in files)


def offline_error(name: str, repo: str, why: str) -> BackboneError:
    return BackboneError(
        f"timm weights {name} are not on this machine and cannot be downloaded ({why}): on a "
        f"connected machine run huggingface-cli download {repo} model.safetensors, copy the "
        f"file here and pass backbone.pretrained=/path/to/model.safetensors"
    )
