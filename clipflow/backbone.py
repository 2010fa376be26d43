"""The frozen CLIP image tower: open_clip model -> φ(x) = encode_image(x), unnormalised.

The default is ``ViT-L-14-quickgelu`` + ``openai`` (SPEC §2; the ``-quickgelu`` name matters:
plain ``ViT-L-14`` builds nn.GELU and silently changes the features). ``tiny`` is a small
random-init config registered by this package for tests and the demo; it detects nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import open_clip
import torch
from torch import nn

from .errors import BackboneError, first_line

log = logging.getLogger(__name__)

TINY_NAME = "clipflow-tiny"
_TINY_SEED = 0  # the tiny tower is random but identical in every process (train vs eval)
_CONFIG_DIR = Path(__file__).parent / "model_configs"

# fp32: strict float32 (TF32 off, the UnivFD-style baseline); tf32: TensorFloat-32 matmuls;
# bf16 / fp16: a half-precision copy of the frozen tower; amp_bf16: autocast over fp32 weights.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "amp_bf16")
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BackboneConfig:
    """Which CLIP tower, which weights, how to run it. YAML keys under ``backbone:``.

    Attributes:
        name: open_clip model name, or ``tiny`` for the random test backbone.
        pretrained: open_clip tag (``openai``), a local weights file, or null for random init.
        precision: ``fp32`` (strict), ``tf32``, ``bf16``/``fp16`` (half copy of the tower) or
            ``amp_bf16`` (autocast); features are returned as float32 and the flow is fp32.
            ``auto`` (the shipped configs): :func:`auto_precision` for the device.
        compile: wrap the visual tower in ``torch.compile`` (faster on GPUs after warm-up); it
            sees one batch shape, shorter batches are zero-padded (no recompile per dataset).
            If compiling fails the tower runs eagerly (the reason is logged). ``auto`` (the
            shipped configs): on for CUDA, off elsewhere.
        preprocess: ``paper`` (resize 256² → crop 224) or ``univfd`` (center crop only).
        cache_dir: where open_clip caches downloaded weights (null = its default).
    """

    name: str = "ViT-L-14-quickgelu"
    pretrained: str | None = "openai"
    precision: str = "fp32"
    preprocess: str = "paper"
    cache_dir: str | None = None
    compile: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.name in ("tiny", TINY_NAME)


class Backbone(nn.Module):
    """A frozen open_clip visual tower with the facts needed to preprocess and describe it."""

    def __init__(self, model: nn.Module, cfg: BackboneConfig):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.cfg = cfg
        if cfg.precision in _HALF:
            self.model.to(_HALF[cfg.precision])
        # encode_image(x) is visual(x) without normalisation; compile just that tower, for one
        # static batch shape (see forward): a second shape would recompile it, with dynamic shapes.
        compiled = _compiled(self.model.visual) if cfg.compile else None
        self.compiled = compiled is not None
        self.visual = compiled if compiled is not None else self.model.visual
        self._compile_proven = False  # the compiled tower has run once (compile errors are past)
        # The one batch size the compiled tower sees. It is set by the first forward and only
        # grows (a larger batch recompiles once, every shorter batch is padded up to it): the
        # batch size belongs to the caller (extract_features' batch_size), not to the config,
        # so it cannot be fixed here. Without compile it stays None.
        self.static_batch: int | None = None
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(pp.get("std", open_clip.OPENAI_DATASET_STD))
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.feature_dim = int(model.visual.output_dim)

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
                feats = self.visual(images)
        return feats.float()

    def _run_compiled(self, images: torch.Tensor) -> torch.Tensor:
        """The compiled tower; if its first call fails (compilation happens there: no
        compiler, unsupported op), the eager tower from then on, with the reason logged."""
        try:
            feats = run_padded(self.visual, images, self._grow_static_batch(len(images)))
        except Exception as err:
            if self._compile_proven:
                raise  # compiled before: a real error of this batch, not of compilation
            log.warning("backbone.compile: %s; running the tower eagerly", _first_line(err))
            self.compiled, self.visual, self.static_batch = False, self.model.visual, None
            return self.visual(images)
        self._compile_proven = True
        return feats

    def _grow_static_batch(self, n: int) -> int:
        """The compiled batch size for a batch of ``n``: the largest seen (shapes only grow)."""
        self.static_batch = max(self.static_batch or 0, n)
        return self.static_batch

    def describe(self) -> dict:
        """What produced a feature: recorded in checkpoints and results."""
        return {
            "name": TINY_NAME if self.cfg.is_tiny else self.cfg.name,
            "pretrained": None if self.cfg.is_tiny else self.cfg.pretrained,
            "weights_id": weights_identity(self.cfg),
            "random_init": self.cfg.is_tiny or not self.cfg.pretrained,
            "precision": self.cfg.precision,
            "preprocess": self.cfg.preprocess,
            "feature_dim": self.feature_dim,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _compiled(visual: nn.Module) -> nn.Module | None:
    """``torch.compile(visual)``, or None (logged) when this torch cannot compile."""
    try:
        return torch.compile(visual, dynamic=False)
    except Exception as err:  # e.g. an unsupported Python version
        log.warning("backbone.compile: %s; running the tower eagerly", _first_line(err))
        return None


def _first_line(err: Exception) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= 160 else text[:157] + "..."


def auto_precision(device: str | torch.device) -> str:
    """``backbone.precision=auto``: bf16 on a CUDA GPU with native bf16 (compute capability
    8+: A100, H100, ...), fp32 elsewhere (CPU, MPS, older GPUs that would emulate it).

    bf16 is the GPU default because scripts/check_precision.py finds its features at cosine
    >= 0.999 to fp32 and every set's AP within 0.1 point; fp32 stays one flag away.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(dev)[0] >= 8 else "fp32"


def auto_compile(device: str | torch.device) -> bool:
    """``backbone.compile=auto``: on for CUDA (one static batch shape), off on CPU, where
    compiling costs more than it saves for one extraction."""
    return torch.device(device).type == "cuda"


def resolve_backbone_auto(cfg: BackboneConfig, device: str | torch.device) -> BackboneConfig:
    """``cfg`` with ``auto`` precision/compile resolved for ``device`` (the settings layer
    does this once; this covers configs built in code)."""
    values = {}
    if cfg.precision == "auto":
        values["precision"] = auto_precision(device)
    if cfg.compile == "auto":
        values["compile"] = auto_compile(device)
    return replace(cfg, **values) if values else cfg


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
    if cfg.is_tiny:
        return f"{TINY_NAME}:random-seed{_TINY_SEED}"
    if not cfg.pretrained:
        return f"{cfg.name}:random-seed{_TINY_SEED}"
    p = Path(cfg.pretrained).expanduser()
    if p.is_file():
        st = p.stat()
        return f"file:{p.name}:{st.st_size}:{int(st.st_mtime)}"
    return f"{cfg.name}:{cfg.pretrained}"


def load_backbone(cfg: BackboneConfig, device: str | torch.device = "cpu") -> Backbone:
    """Build the frozen tower on ``device``; one clear error when weights are unavailable."""
    cfg = resolve_backbone_auto(cfg, device)
    if cfg.precision not in PRECISIONS:
        raise BackboneError(
            f"backbone.precision={cfg.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if cfg.precision == "fp16" and torch.device(device).type != "cuda":
        raise BackboneError("backbone.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if cfg.preprocess not in ("paper", "univfd"):
        raise BackboneError(f"backbone.preprocess={cfg.preprocess!r}: choose paper or univfd")
    if cfg.is_tiny:
        register_tiny_config()
    elif cfg.name not in open_clip.list_models():
        raise BackboneError(
            f"unknown open_clip model {cfg.name!r}; e.g. backbone.name=ViT-L-14-quickgelu"
        )
    if cfg.is_tiny or not cfg.pretrained:
        # Random towers (tests, demo, speed benchmarks) are seeded: the same in every process.
        with torch.random.fork_rng(devices=[]), _quiet_open_clip():
            torch.manual_seed(_TINY_SEED)
            model = open_clip.create_model(TINY_NAME if cfg.is_tiny else cfg.name, pretrained=None)
        log.warning(
            "backbone %r has random weights: results show the pipeline works, not detection",
            cfg.name,
        )
    else:
        with _quiet_open_clip():
            model = _create_pretrained(cfg)
    return Backbone(model, cfg).to(device)


def register_tiny_config() -> None:
    """Make ``clipflow-tiny`` known to open_clip (idempotent; only when a tiny tower is built).

    open_clip finds architectures in a process-wide registry; adding our folder there at
    import would change ``open_clip.list_models()`` for every program that imports clipflow.
    """
    if TINY_NAME not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


class _BelowWarningFrom(logging.Filter):
    """Drops records under WARNING whose source file lies in ``folder``."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.folder)


@contextmanager
def _quiet_open_clip():
    """Keep only open_clip's warnings while it builds a model; nothing else changes.

    open_clip logs its progress with ``logging.info`` on the *root* logger (it has no logger
    of its own), so a filter on the root logger drops just its INFO records; the root level,
    and every other record, stay as the application set them. The filter is removed on exit.
    """
    root = logging.getLogger()
    quiet = _BelowWarningFrom(str(Path(open_clip.__file__).parent))
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def check_weights_available(cfg: BackboneConfig) -> None:
    """Raise BackboneError at once when the weights cannot be had: a missing local file, or an
    open_clip tag that is neither in the cache nor downloadable (offline, or no network).

    Called before any data is scanned and before open_clip, whose hub client would otherwise
    retry for over a minute and print its own lines. Online, the only cost is one TCP connect
    to the hub, and only when the weights are not cached yet (i.e. before a download anyway).
    """
    if cfg.is_tiny or not cfg.pretrained:
        return
    if _looks_like_path(cfg.pretrained):
        if not Path(cfg.pretrained).expanduser().is_file():
            raise BackboneError(
                f"CLIP weights file not found: {cfg.pretrained} — check backbone.pretrained"
            )
        return
    source = _hub_source(cfg)
    if source is None or _in_cache(source, cfg.cache_dir):
        return  # an unknown tag is reported by open_clip; a cached file needs no network
    why = _why_no_download(source)
    if why is None:
        return
    repo, filename = source
    fetch = (
        f"fetch {filename} from the Hugging Face repo {repo} "
        f"(huggingface-cli download {repo} {filename})"
        if not repo.startswith("http")
        else f"fetch {repo}"
    )
    raise BackboneError(
        f"CLIP weights {cfg.name}/{cfg.pretrained} are not on this machine and cannot be "
        f"downloaded ({why}): on a connected machine {fetch}, copy the file here and pass "
        f"backbone.pretrained=/path/to/{filename}"
    )


def _hub_source(cfg: BackboneConfig) -> tuple[str, str] | None:
    """(hub repo id, file name) open_clip would download for the tag, or (url, file name)."""
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, get_pretrained_cfg, has_hf_hub

    pcfg = get_pretrained_cfg(cfg.name, cfg.pretrained)
    if not pcfg or "file" in pcfg:
        return None
    hub = pcfg.get("hf_hub", "")
    if hub and has_hf_hub():
        repo, filename = os.path.split(hub)  # 'org/model/' = open_clip's default file
        return repo, filename or HF_SAFE_WEIGHTS_NAME
    url = pcfg.get("url", "")
    return (url, os.path.basename(url)) if url else None


def _in_cache(source: tuple[str, str], cache_dir: str | None) -> bool:
    repo, filename = source
    if repo.startswith("http"):  # open_clip's URL cache: <cache_dir or ~/.cache/clip>/<name>
        root = Path(cache_dir or "~/.cache/clip").expanduser()
        return (root / filename).is_file()
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    # open_clip loads the safetensors file when the repo has one, else the .bin
    names = dict.fromkeys([filename, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME])
    return any(
        isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str) for name in names
    )


def _why_no_download(source: tuple[str, str]) -> str | None:
    """Why a download cannot work right now, or None when it may (then open_clip tries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connect says nothing: let the hub client try
    repo, _ = source
    host = _host(repo if repo.startswith("http") else _hub_endpoint())
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        return f"no network: cannot reach {host}: {err.strerror or err}"
    return None


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or url


def _create_pretrained(cfg: BackboneConfig) -> nn.Module:
    pretrained = cfg.pretrained
    check_weights_available(cfg)  # fast and one line, before open_clip's hub client retries
    try:
        return open_clip.create_model(
            cfg.name,
            pretrained=str(Path(pretrained).expanduser())
            if pretrained and _looks_like_path(pretrained)
            else pretrained,
            cache_dir=cfg.cache_dir,
        )
    except Exception as err:  # hub, network and file errors all end here
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        reason = first_line(err, limit=120)
        hint = " (HF_HUB_OFFLINE=1)" if offline else ""
        raise BackboneError(
            f"cannot load CLIP weights {cfg.name}/{pretrained}{hint}: "
            f"{reason} — download them once with network access, or pass "
            "backbone.pretrained=/path/to/open_clip_model.safetensors"
        ) from None


def _looks_like_path(s: str) -> bool:
    return os.sep in s or s.endswith((".safetensors", ".bin", ".pt", ".pth"))
