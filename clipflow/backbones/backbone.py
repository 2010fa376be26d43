"""The frozen image tower: φ(x) = the backbone's image features, unnormalised.

The default is open_clip ``ViT-L-14-quickgelu`` + ``openai`` (SPEC §2; the ``-quickgelu`` name
matters: plain ``ViT-L-14`` builds nn.GELU and silently changes the features). ``tiny`` is a
small random-init config registered by this package for tests and the demo; it detects nothing.

Families (``backbone.family``): ``open_clip`` (every open_clip architecture: CLIP, SigLIP, EVA,
timm-based towers) and ``timm`` (any timm image model, pooled pre-logits). ``backbone.layers``
reads the class token of chosen transformer blocks instead. Your own extractor plugs in
through :class:`BackboneProtocol` (the Python API). See docs/backbones.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..core.machine import auto_compile, auto_precision
from ..errors import BackboneError, first_line
from . import open_clip_tower as open_clip_family
from . import timm_tower as timm_family
from .config import (
    CUSTOM,
    FAMILIES,
    LAYER_POOLS,
    PRECISIONS,
    TINY_NAME,
    BackboneConfig,
    packaged_names,
)
from .custom import find_factory, load_custom
from .layers import LayerTap
from .protocol import BackboneProtocol, ExtractorBackbone, input_record
from .tower import Tower
from .weights import check_weights_available

log = logging.getLogger(__name__)

_TINY_SEED = 0  # the tiny tower is random but identical in every process (train vs eval)

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
__all__ = ["Backbone", "BackboneConfig", "BackboneProtocol", "as_backbone", "load_backbone"]


class Backbone(nn.Module):
    """A frozen image tower (open_clip or timm) with the facts needed to preprocess and
    describe it. Implements :class:`BackboneProtocol`."""

    _eager: nn.Module  # the tower as built (kept outside nn.Module's registry, see __init__)
    visual: Callable[[torch.Tensor], torch.Tensor]  # the eager tower or its compiled form

    def __init__(self, tower: Tower, cfg: BackboneConfig):
        super().__init__()
        self.model = tower.model.eval().requires_grad_(False)
        self.cfg = cfg
        self.mean, self.std = tuple(tower.mean), tuple(tower.std)
        self.image_size, self.resize_to = tower.image_size, tower.resize_to
        # Hooks go on before compiling: the tap reads block outputs of the tower as it runs.
        self.tap = LayerTap(tower, cfg.layers, cfg.layer_pool, cfg.name) if cfg.layers else None
        # the eager tower, kept out of nn.Module's registry: self.model holds its weights and
        # self.visual may become a compiled function (not a module) below
        object.__setattr__(self, "_eager", tower.visual)
        known = tower.feature_dim if self.tap is None else None
        # no output_dim (timm towers) or block tokens: measured by one forward pass
        self.feature_dim: int = known if known is not None else self._probe_dim()
        if cfg.precision in _HALF:
            self.model.to(_HALF[cfg.precision])
        # visual(x) is the features without normalisation; compile just that tower, for one
        # static batch shape (see forward): a second shape would recompile it, with dynamic shapes.
        # Why a requested compile is not in effect (None: compiled, or not requested).
        self.compile_fallback: str | None = None
        compiled = self._compiled_tower(tower.visual) if cfg.compile and self.tap is None else None
        if cfg.compile and self.tap is not None:
            self._fall_back("not with backbone.layers")
        self.compiled = compiled is not None
        self.visual = compiled if compiled is not None else tower.visual
        self._compile_proven = False  # the compiled tower has run once (compile errors are past)
        # The one batch size the compiled tower sees. It is set by the first forward and only
        # grows (a larger batch recompiles once, every shorter batch is padded up to it): the
        # batch size belongs to the caller (extract_features' batch_size), not to the config,
        # so it cannot be fixed here. Without compile it stays None.
        self.static_batch: int | None = None

    def _probe_dim(self) -> int:
        """The feature size from one forward pass of a zero image (fp32, before any cast)."""
        dtype = next(self.model.parameters(), torch.zeros(())).dtype
        zero = torch.zeros(1, 3, self.image_size, self.image_size, dtype=dtype)
        with torch.no_grad():
            out = self._features(self._eager(zero))
        if out.ndim != 2:
            raise BackboneError(
                f"backbone {self.cfg.name!r} gives {tuple(out.shape)}-shaped outputs, not "
                "(N, D) features; pick a pooled model"
            )
        return int(out.shape[1])

    def _features(self, out: torch.Tensor) -> torch.Tensor:
        return self.tap.features() if self.tap is not None else out

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 3, S, S) -> float32 features (N, D)."""
        precision = self.cfg.precision
        if precision in _HALF:
            images = images.to(_HALF[precision])
        amp = (
            torch.autocast(images.device.type, dtype=torch.bfloat16)
            if precision == "amp_bf16"
            else nullcontext()
        )
        with amp, _tf32(precision == "tf32"):
            if self.compiled:
                feats = self._run_compiled(images)
            else:
                feats = self._features(self.visual(images))
        return feats.float()

    def _run_compiled(self, images: torch.Tensor) -> torch.Tensor:
        """The compiled tower; if its first call fails (compilation happens there: no
        compiler, unsupported op), the eager tower from then on, with the reason logged."""
        try:
            feats = run_padded(self.visual, images, self._grow_static_batch(len(images)))
        except Exception as err:
            if self._compile_proven:
                raise  # compiled before: a real error of this batch, not of compilation
            self._fall_back(first_line(err, 160))
            self.compiled, self.visual, self.static_batch = False, self._eager, None
            return self.visual(images)
        self._compile_proven = True
        return feats

    def _compiled_tower(self, visual: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``torch.compile(visual)``, or None (a loud, recorded fallback) when this torch
        cannot compile."""
        try:
            return torch.compile(visual, dynamic=False)
        except Exception as err:  # e.g. an unsupported Python version
            self._fall_back(first_line(err, 160))
            return None

    def _fall_back(self, reason: str) -> None:
        self.compile_fallback = reason
        log.warning(
            "backbone.compile FAILED (%s): the tower runs EAGERLY, slower on a GPU; recorded "
            "as speed.compile in the run's metadata (backbone.compile=false skips the attempt)",
            reason,
        )

    @property
    def compile_status(self) -> str:
        """For the run's metadata: ``on`` (compiled; ``on (not run yet)`` before the first
        batch proved it), ``off`` (not asked for) or ``failed: <reason>`` (eager fallback)."""
        if self.compile_fallback is not None:
            return f"failed: {self.compile_fallback}"
        if not self.cfg.compile:
            return "off"
        return "on" if self._compile_proven else "on (not run yet)"

    def _grow_static_batch(self, n: int) -> int:
        """The compiled batch size for a batch of ``n``: the largest seen (shapes only grow)."""
        self.static_batch = max(self.static_batch or 0, n)
        return self.static_batch

    def describe(self) -> dict:
        """What produced a feature: recorded in checkpoints and results."""
        return {
            "family": self.cfg.family,
            "name": TINY_NAME if self.cfg.is_tiny else self.cfg.name,
            "pretrained": None if self.cfg.is_tiny else self.cfg.pretrained,
            "weights_id": weights_identity(self.cfg),
            "random_init": self.cfg.is_tiny or not self.cfg.pretrained,
            **input_record(self),
            "layers": list(self.tap.layers) if self.tap else None,
            "layer_pool": self.cfg.layer_pool if self.tap else None,
        }


def compile_status(backbone) -> str:
    """What ran for ``backbone.compile`` (:attr:`Backbone.compile_status`; ``off`` for an
    extractor of your own, which clipflow never compiles)."""
    return getattr(backbone, "compile_status", "off")


def speed_line(compile: str, cuda_graph: str | None = None) -> str:
    """One log line of the fast path's state, e.g. ``speed: compile=on cuda_graph=captured``."""
    graph = f" cuda_graph={cuda_graph}" if cuda_graph is not None else ""
    return f"speed: compile={compile}{graph}"


def resolve_backbone_auto(cfg: BackboneConfig, device: str | torch.device) -> BackboneConfig:
    """``cfg`` with ``auto`` precision/compile resolved for ``device`` (the settings layer
    does this once; this covers configs built in code)."""
    if cfg.precision == "auto":
        cfg = replace(cfg, precision=auto_precision(device))
    if cfg.compile == "auto":
        cfg = replace(cfg, compile=auto_compile(device))
    return cfg


def run_padded(fn, images: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` on ``images`` (N ≤ size, ...) zero-padded to ``size`` rows; the padding rows dropped.

    A compiled ``fn`` then sees one shape: every dataset's odd-sized last batch would otherwise
    cost a recompilation. The tower treats images independently, so padding does not change
    the real rows.
    """
    n = len(images)
    if n < size:
        images = torch.cat([images, images.new_zeros(size - n, *images.shape[1:])])
    return fn(images)[:n]


@contextmanager
def _tf32(enabled: bool):
    """TF32 on or off inside the block only; the caller's flags are restored on exit.

    cuDNN convs default to TF32 on; strict fp32 needs it off, without leaking into the caller.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def weights_identity(cfg: BackboneConfig) -> str:
    """A short identity of the weights: the tag, or the local file's name + size + mtime."""
    prefix = "timm:" if cfg.family == "timm" else ""  # timm and open_clip names never collide
    if cfg.is_tiny:
        return f"{TINY_NAME}:random-seed{_TINY_SEED}"
    if not cfg.pretrained:
        return f"{prefix}{cfg.name}:random-seed{_TINY_SEED}"
    p = Path(cfg.pretrained).expanduser()
    if p.is_file():
        st = p.stat()
        return f"{prefix}file:{p.name}:{st.st_size}:{int(st.st_mtime)}"
    return f"{prefix}{cfg.name}:{cfg.pretrained}"


def load_backbone(
    cfg: BackboneConfig, device: str | torch.device = "cpu"
) -> Backbone | ExtractorBackbone:
    """Build the frozen tower on ``device``; one clear error when weights are unavailable.
    ``family: custom``: the user's extractor, built by ``cfg.factory`` (:mod:`.custom`)."""
    if cfg.family == CUSTOM:
        return load_custom(cfg, device)
    cfg = resolve_backbone_auto(cfg, device)
    check_settings(cfg)
    if cfg.precision == "fp16" and torch.device(device).type != "cuda":
        raise BackboneError("backbone.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    random = cfg.is_tiny or not cfg.pretrained
    if random:
        log.warning(
            "backbone %r has random weights: results show the pipeline works, not detection",
            cfg.name,
        )
    if cfg.family == "timm":
        check_weights_available(cfg)
        with _seeded(random):
            model = timm_family.create_timm(cfg.name, cfg.pretrained, cfg.cache_dir)
        return Backbone(timm_family.timm_tower(model), cfg).to(device)
    # Random towers (tests, demo, speed benchmarks) are seeded: the same in every process.
    with _seeded(random):
        model = open_clip_family.create_open_clip(cfg)
    return Backbone(open_clip_family.open_clip_tower(model, cfg.name), cfg).to(device)


def check_settings(cfg: BackboneConfig) -> None:
    """The choices of a backbone config, each refused in one line before anything is built."""
    if cfg.family == CUSTOM:
        find_factory(cfg.factory)  # importable, and a callable; called by load_backbone
        return
    if cfg.family not in FAMILIES:
        raise BackboneError(f"backbone.family={cfg.family!r}: choose one of {', '.join(FAMILIES)}")
    if cfg.precision not in PRECISIONS:
        raise BackboneError(
            f"backbone.precision={cfg.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if cfg.preprocess not in ("paper", "univfd"):
        raise BackboneError(f"backbone.preprocess={cfg.preprocess!r}: choose paper or univfd")
    if cfg.layer_pool not in LAYER_POOLS:
        raise BackboneError(f"backbone.layer_pool={cfg.layer_pool!r}: choose concat or mean")
    if cfg.family == "timm":
        if not timm_family.is_timm_name(cfg.name):
            raise BackboneError(
                f"unknown timm model {cfg.name!r}; e.g. backbone.family=timm "
                "backbone.name=vit_small_patch14_dinov2.lvd142m (see timm.list_models())"
            )
    elif not cfg.is_packaged and not open_clip_family.is_open_clip_name(cfg.name):
        hint = " (a timm model? add backbone.family=timm)" if _is_timm(cfg.name) else ""
        raise BackboneError(
            f"unknown open_clip model {cfg.name!r}{hint}; e.g. backbone.name=ViT-L-14-quickgelu"
        )


def _is_timm(name: str) -> bool:
    try:
        return timm_family.is_timm_name(name)
    except ImportError:
        return False


def name_problem(name: str) -> str | None:
    """Why ``name`` is no backbone name of any family (settings check), or None."""
    if (
        name == "tiny"
        or name in packaged_names()
        or open_clip_family.is_open_clip_name(name)
        or _is_timm(name)
    ):
        return None
    return "not an open_clip or timm model name (see open_clip.list_models(), timm.list_models())"


def recorded_name_problem(record: dict) -> str | None:
    """Why a checkpoint's backbone record names no model of its family, or None."""
    family, name = record.get("family") or "open_clip", record["name"]
    if family == CUSTOM:
        return None  # any one-line name; the extractor given at load time is compared to it
    if family == "timm":
        return None if _is_timm(name) else "not a timm model name"
    if name == "tiny" or name in packaged_names() or open_clip_family.is_open_clip_name(name):
        return None
    return "not an open_clip model name"


@contextmanager
def _seeded(on: bool):
    """Random towers are seeded (the same in every process) without touching the caller's RNG."""
    if not on:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        yield


def as_backbone(backbone) -> Backbone | ExtractorBackbone:
    """A :class:`Backbone` as is; any other :class:`BackboneProtocol` object wrapped (checked)."""
    if isinstance(backbone, (Backbone, ExtractorBackbone)):
        return backbone
    return ExtractorBackbone(backbone, BackboneConfig)


# what must agree between a checkpoint's backbone record and the backbone scoring for it
IDENTITY_FIELDS = ("family", "name", "layers", "layer_pool", "weights_id", "feature_dim")
_IDENTITY_DEFAULTS = {"family": "open_clip", "layers": None, "layer_pool": None}


def identity_mismatch(recorded: dict, actual: dict) -> str | None:
    """The first identity field on which ``actual`` differs from ``recorded``, as a phrase;
    fields a (older) record lacks are not compared, except the defaulted family/layers."""
    for key in IDENTITY_FIELDS:
        if key not in recorded and key not in _IDENTITY_DEFAULTS:
            continue
        want = recorded.get(key, _IDENTITY_DEFAULTS.get(key))
        got = actual.get(key, _IDENTITY_DEFAULTS.get(key))
        if key == "layer_pool" and not recorded.get("layers"):
            continue
        if want != got:
            return f"{key} {got!r} (the checkpoint was trained with {want!r})"
    return None
