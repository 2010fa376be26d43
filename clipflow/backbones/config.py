"""What a backbone is, as settings: :class:`BackboneConfig` and the choices of its fields.

Kept free of torch and open_clip (only the standard library): the settings layer builds and
checks these before any model code is imported. The tower itself is
:mod:`clipflow.backbones.backbone`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TINY_NAME = "clipflow-tiny"
# fp32: strict float32 (TF32 off, the UnivFD-style baseline); tf32: TensorFloat-32 matmuls;
# bf16 / fp16: a half-precision copy of the frozen tower; amp_bf16: autocast over fp32 weights.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "amp_bf16")
CUSTOM = "custom"  # a user's extractor: built by ``factory`` or given to the Python API
FAMILIES = ("open_clip", "timm", CUSTOM)
LAYER_POOLS = ("concat", "mean")  # how the class tokens of several blocks combine
# ``package.module:callable`` (the attribute may be dotted: ``module:Class.create``)
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
FACTORY_FORM = re.compile(rf"{_DOTTED}:{_DOTTED}")


def factory_problem(text: str) -> str | None:
    """Why ``text`` is no ``package.module:callable`` import path (the settings' check; the
    module is imported only when the run loads the backbone), or None."""
    if FACTORY_FORM.fullmatch(text) is None:
        return "must be an import path package.module:callable (e.g. mypkg.nets:make_extractor)"
    return None


def model_config_dir() -> Path:
    """The random-only test architectures shipped with clipflow (open_clip JSON configs)."""
    return Path(__file__).parent / "model_configs"


def packaged_names() -> tuple[str, ...]:
    """The random-only test architectures in model_config_dir() (``clipflow-tiny``, ...)."""
    return tuple(sorted(p.stem for p in model_config_dir().glob("*.json")))


@dataclass
class BackboneConfig:
    """Which CLIP tower, which weights, how to run it. YAML keys under ``backbone:``.

    Attributes:
        family: ``open_clip`` (default), ``timm`` (which library builds ``name``) or
            ``custom`` (your own extractor, built by ``factory``).
        name: open_clip model name (``tiny`` = the random test backbone), or a timm model
            name with its pretrained tag (``vit_small_patch14_dinov2.lvd142m``).
        pretrained: open_clip tag (``openai``), ``timm`` (timm's weights for the name's tag),
            a local weights file, or null for a seeded random init.
        layers: block indices (``[-1]``, ``[8, 16, 23]``): the class token of those
            transformer blocks instead of the tower output; null = the tower output.
        layer_pool: how the chosen blocks' tokens combine: ``concat`` or ``mean``.
        precision: ``fp32`` (strict), ``tf32``, ``bf16``/``fp16`` (half copy of the tower) or
            ``amp_bf16`` (autocast); features are returned as float32 and the flow is fp32.
            ``auto`` (the shipped configs): chosen for the device by
            :func:`clipflow.settings.auto.resolve_auto`.
        compile: wrap the visual tower in ``torch.compile`` (faster on GPUs after warm-up); it
            sees one batch shape, shorter batches are zero-padded (no recompile per dataset).
            If compiling fails the tower runs eagerly (the reason is logged). ``auto`` (the
            shipped configs): on for CUDA, off elsewhere.
        preprocess: ``paper`` (resize 256² → crop 224) or ``univfd`` (center crop only).
        cache_dir: where open_clip caches downloaded weights (null = its default).
        factory: ``family: custom``: ``package.module:callable`` returning a
            :class:`~clipflow.backbones.protocol.BackboneProtocol` extractor (called with
            ``device=`` when it takes one); recorded in the checkpoint, so that evaluation,
            detection and calibration rebuild it. See docs/backbones.md.
    """

    name: str = "ViT-L-14-quickgelu"
    pretrained: str | None = "openai"
    precision: str = "fp32"
    preprocess: str = "paper"
    cache_dir: str | None = None
    compile: bool = False
    family: str = "open_clip"
    layers: list[int] | None = None
    layer_pool: str = "concat"
    factory: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.family == "open_clip" and self.name in ("tiny", TINY_NAME)

    @property
    def is_packaged(self) -> bool:
        """A random-only test architecture shipped in clipflow/model_configs."""
        return self.family == "open_clip" and (self.is_tiny or self.name in packaged_names())
