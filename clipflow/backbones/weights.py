"""Are a backbone's weights on this machine, or can they be downloaded right now?

:func:`check_weights_available` answers before any data is scanned and before open_clip or
timm try the hub themselves (their clients retry for over a minute, then print tracebacks):
one BackboneError line that says which file to fetch and where to pass it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackboneError
from . import timm_tower as timm_family
from .config import CUSTOM
from .custom import find_factory

if TYPE_CHECKING:
    from .config import BackboneConfig


def check_weights_available(cfg: BackboneConfig) -> None:
    """Raise BackboneError at once when the weights cannot be had: a missing local file, or an
    open_clip tag that is neither in the cache nor downloadable (offline, or no network).

    Called before any data is scanned and before open_clip, whose hub client would otherwise
    retry for over a minute and print its own lines. Online, the only cost is one TCP connect
    to the hub, and only when the weights are not cached yet (i.e. before a download anyway).
    """
    if cfg.family == CUSTOM:  # no weights of ours: the factory must at least be importable
        find_factory(cfg.factory)
        return
    if cfg.is_tiny or not cfg.pretrained:
        return
    if cfg.family == "timm":
        _check_timm_weights(cfg)
        return
    if looks_like_path(cfg.pretrained):
        _check_weights_file(cfg.pretrained, "CLIP")
        return
    source = _hub_source(cfg)
    if source is None or _in_cache(source, cfg.cache_dir):
        return  # an unknown tag is reported by open_clip; a cached file needs no network
    why = why_no_download(source)
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


def _check_timm_weights(cfg: BackboneConfig) -> None:
    """check_weights_available for timm: a local file exists, or timm's hub file is cached
    or downloadable."""
    if not cfg.pretrained:  # no weights to check (check_weights_available returns before too)
        return
    if cfg.pretrained != timm_family.TIMM_TAG:
        _check_weights_file(
            cfg.pretrained,
            "timm",
            f" (or use backbone.pretrained={timm_family.TIMM_TAG} for timm's own weights)",
        )
        return
    if not timm_family.is_timm_name(cfg.name):
        return  # check_settings words this one
    source = timm_family.hub_source(cfg.name)
    if source is None:
        return  # weights from a URL or none: timm reports it
    repo, files = source
    if timm_family.in_hf_cache(repo, files, cfg.cache_dir):
        return
    why = why_no_download((repo, files[0]))
    if why is not None:
        raise timm_family.offline_error(cfg.name, repo, why)


def _check_weights_file(pretrained: str, family: str, alternative: str = "") -> None:
    """A local ``backbone.pretrained`` is a readable weights file, or one BackboneError line
    saying what it is instead. Without this, open_clip's loader reports a text file as
    "list index out of range" (torch's unpickler choking on it)."""
    problem = weights_file_problem(Path(pretrained).expanduser(), pretrained)
    if problem:
        raise BackboneError(
            f"{family} weights {problem} — check backbone.pretrained: the model's weights "
            f"file (.safetensors, or a PyTorch .pt/.pth/.bin){alternative}"
        )


# What a weights file starts with: PyTorch's zip format (torch.save, TorchScript; .npz too),
# a legacy torch.save pickle (protocol 2-5), a .npy array; safetensors is checked by its header.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_NPY_MAGIC = b"\x93NUMPY"
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit on its JSON header


def weights_file_problem(path: Path, shown: str | None = None) -> str | None:
    """Why ``path`` is no weights file open_clip or timm could load, or None: a phrase such as
    ``file not found: X`` (X = ``shown``, default the path). Read from the first bytes, so a
    mistyped path to a text file or a folder is refused at once and says what it is."""
    shown = shown or str(path)
    if path.is_dir():
        return f"path is a folder, not a file: {shown}"
    if not path.is_file():
        return f"file not found: {shown}" if not path.exists() else f"not a regular file: {shown}"
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as err:
        return f"file cannot be read: {shown} ({err.strerror or err})"
    if not head:
        return f"file is empty: {shown}"
    if head.startswith((_ZIP_MAGIC, _NPY_MAGIC, *_PICKLE_PROTOCOLS)):
        return None
    if _is_safetensors(head, path.stat().st_size):
        return None
    return f"file not recognised: {shown} is no safetensors, PyTorch or NumPy checkpoint"


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that much JSON."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n <= min(size - 8, _SAFETENSORS_MAX_HEADER)


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


def why_no_download(source: tuple[str, str]) -> str | None:
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


def looks_like_path(s: str) -> bool:
    return os.sep in s or s.endswith((".safetensors", ".bin", ".pt", ".pth"))
