"""On-disk feature cache: the backbone runs once per (image, view, variant), training many times.

One folder per *setting* (everything that changes a feature except the file itself: backbone
name + weights identity + precision, the transform, the variant, the seed and the view) holds
*packs* of up to ``shard_size`` files each::

    <cache>/v2-<setting key>/pack-<hash>.safetensors

A pack (:mod:`clipflow.features.packs`) stores the features (n, D) float32 of its readable
files, in its metadata the setting key it was written under, the *file key* of each row, the
(file key, reason) of the files that could not be read and a checksum of the features.
Entries are found by file key, not by file list, so adding or changing k files of a folder
extracts those k files only (into new packs), and any subset of cached files is served from
the cache.

A file key hashes the path with the file's size, mtime, ctime and inode: a file replaced by
another of the same size whose mtime was restored still changes ctime and inode. The flip side:
moving or copying a dataset, or chmod/chown of its files, changes ctime or inode too, so its
features are extracted again.

Damage never reaches the caller: a pack that cannot be read, has the wrong shape or dtype,
non-finite values or a wrong checksum, or that records another setting than its folder's (a
pack copied between setting folders) is reported in one warning line, removed, and only its
files are extracted again. Packs of format 2 (before packs recorded their setting) cannot be
told apart from such a copy: they are removed too, one warning line per folder, and their
files extracted again. A cache folder that cannot be written (read-only, a file, ...) is
reported once; it still serves what it holds, and new features are extracted but not stored
(a run that exists to fill the cache sets ``stop_on_write_error`` and stops instead).
Packs are written atomically as each completes, so an interrupted extraction resumes from the
completed ones. :func:`clipflow.features.cached_extract.cached_extract` runs the backbone on
what the cache lacks (under torchrun, each rank its share of the missing files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from ..core.fileio import atomic_write_bytes, path_key_bytes
from ..transforms.variant import Variant
from .packs import Known, Pack, StalePack, pack_bytes, read_features, read_header

log = logging.getLogger(__name__)


class CacheSettings(Protocol):
    """The ``data.*`` fields :func:`feature_cache` reads (settings.config.DataConfig)."""

    cache: bool
    cache_dir: str | None
    cache_shard_size: int


CACHE_VERSION = 2  # the folder layout and setting keys (v2-<key>)
DEFAULT_SHARD_SIZE = 4096


def default_cache_dir() -> Path:
    """``$CLIPFLOW_CACHE``, else ``$XDG_CACHE_HOME/clipflow/features`` (outside the source tree)."""
    if os.environ.get("CLIPFLOW_CACHE"):
        return Path(os.environ["CLIPFLOW_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "clipflow" / "features"


def file_key(path: str) -> str:
    """Hash of a path and its size, mtime, ctime and inode (a missing file hashes as such).

    ctime and inode cannot be set back by ``os.utime``: a file replaced in place gets a new key.
    """
    try:
        st = os.stat(path)
        ident = f"\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
    except OSError:
        ident = "\0missing"
    # The name's bytes: a name that is not valid UTF-8 gets a key too.
    return hashlib.blake2b(path_key_bytes(path) + ident.encode(), digest_size=16).hexdigest()


def setting_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class FeatureCache:
    """A folder of per-setting pack folders; see the module docstring for the layout."""

    def __init__(self, root: str | Path | None = None, shard_size: int = DEFAULT_SHARD_SIZE):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.shard_size = shard_size
        self.read_only: bool | None = None  # None until check() has probed the folder
        # False: a pack that cannot be written is warned about and the run goes on uncached;
        # True (clipflow-extract, whose job is to store them): the write's OSError is raised.
        self.stop_on_write_error = False
        self.write_error: OSError | None = None  # the write that failed, if one did
        self.stored_packs = 0  # what this object wrote, for reports of a run cut short
        self.stored_entries = 0  # feature rows + skip records

    def check(self) -> str | None:
        """Probe, before any extraction, that the cache folder can be written; warn once if not.

        Returns the reason it cannot be written, or None. An unwritable cache still serves the
        features it holds; new ones are then extracted without being stored.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            reason = None
        except OSError as err:
            reason = _one_line(err)
            log.warning(
                "feature cache %s is not writable (%s): features are extracted without caching",
                self.root,
                reason,
            )
        self.read_only = reason is not None
        return reason

    def setting_key(
        self, backbone, transform, variant: Variant, seed: int, view: int, max_pixels=None
    ) -> str:
        """One folder per setting. ``max_pixels`` is part of it: a file refused as too large
        under one cap must be extracted when the cap is raised."""
        bb = backbone.describe()
        ident = [bb["name"], bb["weights_id"], bb["precision"]]
        if bb.get("family", "open_clip") != "open_clip" or bb.get("layers"):
            # other families and block tokens: their own folders; plain open_clip towers keep
            # the keys they always had (their cached features stay valid)
            ident += [bb.get("family"), bb.get("layers"), bb.get("layer_pool")]
        key = setting_hash(
            {
                "v": CACHE_VERSION,
                "backbone": ident,
                "transform": transform.describe(),
                "variant": variant.key,
                "seed": seed,
                "view": view,
                "max_pixels": max_pixels,
            }
        )
        return f"v{CACHE_VERSION}-{key}"

    def packs(self, key: str) -> list[Pack]:
        """Headers of the packs of setting ``key``; damaged ones are reported and dropped."""
        return list(self.iter_packs(key))

    def iter_packs(self, key: str) -> Iterator[Pack]:
        """:meth:`packs` one header at a time (a million files' keys need not be held twice)."""
        stale = 0
        for path in sorted((self.root / key).glob("pack-*.safetensors")):
            try:
                header = read_header(path, key)
            except StalePack:
                stale += 1
                self._remove(path)
                continue
            except Exception as err:  # any failure to parse a pack means the pack is damaged
                self.discard(path, err)
                continue
            yield header
        if stale:  # one line for the folder: an old cache has hundreds of them
            log.warning(
                "feature cache: ignoring %d pack(s) of an older format in %s (they do not "
                "record their setting); their files are extracted again",
                stale,
                self.root / key,
            )

    def load(self, pack: Pack, dim: int | None) -> torch.Tensor | None:
        """The pack's (n, D) features, checked; None (reported, removed) when damaged."""
        try:
            return read_features(pack, dim)
        except Exception as err:  # truncated, deleted, rewritten: extract its files again
            self.discard(pack.path, err)
            return None

    def discard(self, path: Path, err: BaseException) -> None:
        log.warning(
            "feature cache: ignoring damaged %s (%s); its files are extracted again",
            path,
            _one_line(err),
        )
        self._remove(path)

    def _remove(self, path: Path) -> None:
        if not self.read_only:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # an unremovable pack stays ignored: it fails the same checks next time

    def lookup(self, key: str, wanted: set[str], dim: int | None) -> Known:
        """The cached features and skip records of the ``wanted`` file keys under ``key``.

        ``dim`` is the feature width the caller expects (None: each pack's own).
        """
        known = Known()
        where, skipped = known.where, known.skipped  # plain dict look-ups: packs are big
        for pack in self.packs(key):
            rows = [
                (r, k)
                for r, k in enumerate(pack.rows)
                if k in wanted and k not in where and k not in skipped
            ]
            skips = {k: v for k, v in pack.skipped.items() if k in wanted and k not in known}
            if rows:
                features = self.load(pack, dim)
                if features is None:
                    continue
                known.add(features, rows)
            skipped.update(skips)
        return known

    def read(self, key: str) -> Known:
        """Everything setting ``key`` holds (for tools and tests)."""
        wanted = {k for pack in self.packs(key) for k in [*pack.rows, *pack.skipped]}
        return self.lookup(key, wanted, None)

    def write_pack(
        self, key: str, rows: list[str], features: torch.Tensor, skipped: dict[str, str]
    ) -> None:
        """Store one pack atomically; on failure warn once and stop writing (run goes on), or
        with ``stop_on_write_error`` raise the OSError."""
        if self.read_only:
            return
        name = f"pack-{setting_hash([rows, sorted(skipped)])}.safetensors"
        try:
            data = pack_bytes(key, rows, features, skipped)
            atomic_write_bytes(self.root / key / name, data)
        except OSError as err:
            self.read_only, self.write_error = True, err
            if self.stop_on_write_error:
                raise
            log.warning(
                "feature cache %s: cannot write (%s): features are extracted without caching",
                self.root,
                err.strerror or _one_line(err),
            )
            return
        self.stored_packs += 1
        self.stored_entries += len(rows) + len(skipped)


def feature_cache(data: CacheSettings) -> FeatureCache | None:
    """The configured feature cache, or None when ``data.cache=false``.

    The folder is probed here, before any extraction: an unwritable one is reported in one
    warning line and the run goes on, extracting what the cache does not already hold.
    """
    if not data.cache:
        return None
    cache = FeatureCache(data.cache_dir, data.cache_shard_size)
    cache.check()
    return cache
