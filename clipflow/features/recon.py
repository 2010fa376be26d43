"""Autoencoder reconstructions of image files, cached on disk like features, and the
reconstruction proxy built from them (``proxy=recon``).

A reconstruction costs an encoder and a decoder pass at the image's full size, far more than a
backbone pass on a 224-px crop, so each is computed once, batched on the device, and kept::

    <cache>/recon1-<setting key>/<file key>.png

The *setting key* hashes the autoencoder's identity (``describe()``: Hub id and subfolder, a
local folder's file stamps, or the tiny config and seed), the transform applied before the
autoencoder (e.g. the validation band-stop), the pixel cap and the format; the *file key* is
the feature cache's (path, size, mtime, ctime, inode). PNG is lossless, so a cached
reconstruction is bit-identical to a fresh one, and a person can open it. A cache that cannot
be written is reported once; reconstructions are then held in RAM for the run.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..core.fileio import atomic_write_bytes, unwritable_reason
from ..data.imageio import DEFAULT_MAX_PIXELS, load_image
from ..errors import UnreadableImageError
from ..transforms.config import ProxyConfig
from ..transforms.proxy import build_proxy
from ..transforms.recon import frequency_blend, reconstruct
from ..transforms.variant import IDENTITY, Variant, VariantFn
from .cache import CacheSettings, default_cache_dir, file_key, setting_hash
from .decode import pil_to_uint8_tensor

log = logging.getLogger(__name__)

RECON_VERSION = 1
_CHUNK = 64  # files read per step; images of one size within it share batches


class ReconCache:
    """Folders of cached reconstructions under ``root`` (the feature cache's root)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self._unwritable: str | None = None

    def folder(self, autoencoder: dict, before: str, max_pixels: int | None) -> Path:
        """The folder of one setting: autoencoder identity × pre-transform × pixel cap."""
        key = setting_hash([RECON_VERSION, autoencoder, before, max_pixels])
        return self.root / f"recon{RECON_VERSION}-{key}"

    def read(self, path: Path) -> torch.Tensor | None:
        """A cached reconstruction (uint8 (3, H, W)), or None when absent or unreadable."""
        if not path.is_file():
            return None
        try:
            with Image.open(path) as im:
                return pil_to_uint8_tensor(im.convert("RGB"))
        except OSError as err:
            log.warning("reconstruction cache: %s unreadable (%s); computed again", path, err)
            return None

    def write(self, path: Path, image: torch.Tensor) -> bool:
        """Store uint8 (3, H, W) as PNG, atomically; False (warned once) when it cannot."""
        if self._unwritable is None:
            self._unwritable = unwritable_reason(path.parent) or ""
            if self._unwritable:
                log.warning(
                    "reconstruction cache %s cannot be written (%s): reconstructions are held "
                    "in RAM for this run only",
                    path.parent,
                    self._unwritable,
                )
        if self._unwritable:
            return False
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG", compress_level=1)
        atomic_write_bytes(path, buf.getvalue())
        return True


def recon_cache(data: CacheSettings) -> ReconCache | None:
    """The reconstruction cache next to the feature cache, or None when ``data.cache=false``."""
    return ReconCache(data.cache_dir) if data.cache else None


@dataclass
class Reconstructions:
    """path -> reconstruction: read from the cache folder on demand, or held in RAM."""

    folder: Path | None
    cache: ReconCache | None
    keys: dict[str, str]  # path -> file key
    held: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0

    def get(self, path: str) -> torch.Tensor | None:
        """uint8 (3, H, W) reconstruction of ``path``; None when the file could not be read."""
        path = str(path)
        if path in self.held:
            return self.held[path]
        if self.folder is None or self.cache is None or path not in self.keys:
            return None
        return self.cache.read(self.folder / f"{self.keys[path]}.png")


def reconstruct_files(
    autoencoder,
    paths: Sequence[str | Path],
    cache: ReconCache | None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    before: Variant | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    desc: str = "reconstruct",
) -> Reconstructions:
    """Reconstructions of ``paths`` (after ``before``, e.g. a band-stop), cached and reused.

    Files the cache lacks are read in chunks, grouped by size and reconstructed ``batch_size``
    at a time on ``device``; unreadable files are listed in ``skipped``.
    """
    files = [str(p) for p in paths]
    before_key = before.key if before is not None else "identity"
    folder = cache.folder(autoencoder.describe(), before_key, max_pixels) if cache else None
    out = Reconstructions(folder, cache, {p: file_key(p) for p in files})
    todo = [p for p in files if folder is None or not (folder / f"{out.keys[p]}.png").is_file()]
    out.reused = len(files) - len(todo)
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not todo) as bar:
        for c in range(0, len(todo), _CHUNK):
            chunk = todo[c : c + _CHUNK]
            for group in _by_size(_read(chunk, before, max_pixels, out.skipped)).values():
                for b in range(0, len(group), batch_size):
                    batch = group[b : b + batch_size]
                    recon = reconstruct(autoencoder, torch.stack([im for _, im in batch]), device)
                    for (path, _), image in zip(batch, recon):
                        _keep(out, path, image)
            bar.update(len(chunk))
    if todo or out.reused:
        log.info("%s: %d reconstructed, %d from the cache", desc, out.computed, out.reused)
    return out


def _read(paths, before: Variant | None, max_pixels, skipped) -> list[tuple[str, torch.Tensor]]:
    images = []
    for path in paths:
        try:
            image = pil_to_uint8_tensor(load_image(path, max_pixels))  # (3, H, W)
        except UnreadableImageError as err:
            skipped.append((path, err.reason))
            continue
        fn = before.fn_for(path) if before is not None else None
        images.append((path, fn(image, torch.Generator().manual_seed(0)) if fn else image))
    return images


def _by_size(images: list[tuple[str, torch.Tensor]]) -> dict[tuple, list]:
    groups: dict[tuple, list] = defaultdict(list)
    for path, image in images:
        groups[tuple(image.shape)].append((path, image))
    return groups


def _keep(out: Reconstructions, path: str, image: torch.Tensor) -> None:
    out.computed += 1
    stored = (
        out.cache is not None
        and out.folder is not None
        and out.cache.write(out.folder / f"{out.keys[path]}.png", image)
    )
    if not stored:
        out.held[path] = image


def recon_variant(
    cfg: ProxyConfig, mode: str, recons: Reconstructions, autoencoder: dict
) -> Variant:
    """The ``proxy=recon`` variant: each file's reconstruction, frequency-blended with the image
    (``recon_band``, ``recon_mix``, ``recon_cutoff``); with ``freq_share`` > 0 that share of
    the draws is a frequency mask of the image instead (both proxies in one training set)."""
    params = cfg.describe(mode)
    masked = _freq_mask(cfg, mode) if cfg.freq_share > 0 else None

    def for_file(path: str) -> VariantFn:
        def proxy(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            if masked is not None and torch.rand(1, generator=generator).item() < cfg.freq_share:
                return masked(image, generator)
            recon = recons.get(path)
            if recon is None:
                raise UnreadableImageError(
                    path, "no reconstruction (the autoencoder could not read it)"
                )
            recon = recon.to(image.device)
            return frequency_blend(image, recon, cfg.recon_band, cfg.recon_mix, cfg.recon_cutoff)

        return proxy

    key = "proxy:" + json.dumps({**params, "autoencoder": autoencoder}, sort_keys=True)
    return Variant(key, crop_key=IDENTITY.key if cfg.pair_crop else None, per_file=for_file)


def _freq_mask(cfg: ProxyConfig, mode: str):
    return build_proxy(replace(cfg, name="freq_mask"), mode)
