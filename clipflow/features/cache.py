"""On-disk feature cache: the backbone runs once per (image, view, variant), training many times.

One folder per *setting* (everything that changes a feature except the file itself: backbone
name + weights identity + precision, the transform, the variant, the seed and the view) holds
*packs* of up to ``shard_size`` files each::

    <cache>/v2-<setting key>/pack-<hash>.safetensors

A pack stores the features (n, D) float32 of its readable files, in its metadata the setting
key it was written under, the *file key* of each row, the (file key, reason) of the files that
could not be read and a checksum of the features. Entries are found by file key, not by file
list, so adding or changing k files of a folder extracts those k files only (into new packs),
and any subset of cached files is served from the cache.

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
completed ones. Under torchrun, rank r extracts chunks r, r + world, ... of the missing files
and every rank then reads the others' packs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..backbones.preprocess import ImageTransform
from ..backbones.protocol import BackboneProtocol
from ..core.distributed import Distributed
from ..core.fileio import atomic_write_bytes, path_key_bytes
from ..transforms.variant import Variant, VariantFn, as_variant
from .extract import FeatureSet, extract_features, iter_feature_batches
from .loader import DEFAULT_LOADER, Loader

log = logging.getLogger(__name__)


class CacheSettings(Protocol):
    """The ``data.*`` fields :func:`feature_cache` reads (settings.config.DataConfig)."""

    cache: bool
    cache_dir: str | None
    cache_shard_size: int


CACHE_VERSION = 2  # the folder layout and setting keys (v2-<key>)
# 3: the header records the setting key the pack was written under. Format 2 packs lack it and
# are removed as stale (serving one that was copied from another setting's folder is the bug
# the key prevents).
PACK_VERSION = 3
PACK_FORMAT = f"clipflow-feature-pack-{PACK_VERSION}"
_STALE_FORMATS = ("clipflow-feature-pack-2",)
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


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _checksum(features: torch.Tensor) -> str:
    # CRC-32 finds disk and copy damage at memory speed; the cache guards against accidents,
    # not against someone forging features.
    # .data: the array's own buffer (a memoryview, no copy), which zlib takes as bytes.
    return f"crc32:{zlib.crc32(features.contiguous().numpy().data):08x}"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


@dataclass
class Pack:
    """A pack's header: which files its rows and skip records belong to."""

    path: Path
    rows: list[str]  # file key of each feature row
    skipped: dict[str, str]  # file key -> reason it could not be read
    checksum: str


@dataclass
class Known:
    """What the cache holds (or this run extracted) for one setting, by file key.

    Rows stay in their (n, D) blocks (packs or extracted chunks) until :meth:`gather`, which
    copies the wanted ones out in one index_select instead of one tensor per file.
    """

    blocks: list[torch.Tensor] = field(default_factory=list)  # (n_b, D) each
    where: dict[str, tuple[int, int]] = field(default_factory=dict)  # file key -> (block, row)
    skipped: dict[str, str] = field(default_factory=dict)  # file key -> reason

    def __contains__(self, key: str) -> bool:
        return key in self.where or key in self.skipped

    def add(self, features: torch.Tensor, rows: list[tuple[int, str]]) -> None:
        """Record the (row of ``features``, file key) pairs; the first record of a key wins."""
        block = len(self.blocks)
        self.blocks.append(features)
        for r, key in rows:
            self.where.setdefault(key, (block, r))

    def update(self, other: Known) -> None:
        base = len(self.blocks)
        self.blocks += other.blocks
        for key, (b, r) in other.where.items():
            self.where.setdefault(key, (base + b, r))
        for key, reason in other.skipped.items():
            self.skipped.setdefault(key, reason)

    def gather(self, keys: list[str], out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (len(keys), D) with the features of ``keys`` (all must be held).

        A block whose rows land in one run of ``out`` (the usual case: packs follow the file
        order) is one slice copy; others go through index_copy_.
        """
        runs: dict[int, tuple[list[int], list[int]]] = {}
        for pos, key in enumerate(keys):
            b, r = self.where[key]
            runs.setdefault(b, ([], []))
            runs[b][0].append(pos)
            runs[b][1].append(r)
        for b, (places, rows) in runs.items():
            n, p0, r0 = len(places), places[0], rows[0]
            if places == list(range(p0, p0 + n)) and rows == list(range(r0, r0 + n)):
                out[p0 : p0 + n] = self.blocks[b][r0 : r0 + n]
            else:
                picked = self.blocks[b].index_select(0, torch.tensor(rows))
                out.index_copy_(0, torch.tensor(places), picked)
        return out


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
        key = _hash(
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
                header = _read_header(path, key)
            except _StalePack:
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
            return _read_features(pack, dim)
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
        checksum = _checksum(features)
        meta = {
            "format": PACK_FORMAT,
            "setting": key,  # a copy into another setting's folder is refused on reading
            "rows": json.dumps(rows),
            "skipped": json.dumps(skipped),
            "checksum": checksum,
        }
        name = f"pack-{_hash([rows, sorted(skipped)])}.safetensors"
        try:
            data = save({"features": features.contiguous()}, metadata=meta)
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


class _StalePack(Exception):
    """A pack of an older format: removed and extracted again, reported once per folder."""


def _read_header(path: Path, key: str) -> Pack:
    """The header of the pack at ``path`` of setting ``key``; raises if it is damaged, of
    another format or of another setting."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        shape = fh.get_slice("features").get_shape()
    if meta.get("format") in _STALE_FORMATS:
        raise _StalePack(meta["format"])
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"not a {PACK_FORMAT} file")
    if meta.get("setting") != key:
        raise ValueError(
            f"written for setting {meta.get('setting')}, not {key} (copied from another folder?)"
        )
    rows, skipped = json.loads(meta["rows"]), json.loads(meta["skipped"])
    if len(shape) != 2 or shape[0] != len(rows):
        raise ValueError(f"features of shape {shape} for {len(rows)} files")
    return Pack(path, rows, skipped, meta["checksum"])


def read_rows(path: Path, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a pack's features, read through a memory map (only those pages
    are touched; the map is closed on return, so nothing stays resident). Not checked: the
    caller verified the pack (:meth:`FeatureCache.load`) when it located its rows."""
    with safe_open(str(path), framework="pt") as fh:
        return fh.get_slice("features")[start:stop]  # an owned copy of those rows


def _read_features(pack: Pack, dim: int | None) -> torch.Tensor:
    features = load_file(str(pack.path))["features"]
    dim = features.shape[-1] if dim is None else dim
    if features.dtype != torch.float32 or tuple(features.shape) != (len(pack.rows), dim):
        raise ValueError(
            f"{features.dtype} features of shape {tuple(features.shape)}, "
            f"expected float32 ({len(pack.rows)}, {dim})"
        )
    # The sum is finite only if every value is (one pass, no mask); an overflowing sum of
    # finite values falls through to the exact check.
    if not torch.isfinite(features.sum()) and not torch.isfinite(features).all():
        raise ValueError("non-finite features")
    if _checksum(features) != pack.checksum:
        raise ValueError("checksum mismatch")
    return features


def cached_extract(
    backbone: BackboneProtocol,
    paths: Sequence,
    transform: ImageTransform,
    variants: Sequence[Variant | VariantFn | None],
    cache: FeatureCache | None,
    device: str | torch.device = "cpu",
    loader: Loader = DEFAULT_LOADER,
    *,
    seed: int = 0,
    view: int = 0,
    desc: str = "extract",
) -> FeatureSet:
    """:func:`extract_features` through the cache (``cache=None`` extracts directly).

    Only the files the cache lacks (per variant) go through the backbone.
    """
    chosen = [as_variant(v, i) for i, v in enumerate(variants)]
    run = _Run(device, loader, seed, view, desc)
    if cache is None:
        return extract_features(
            backbone, paths, transform, chosen, device, loader, seed=seed, view=view, desc=desc
        )
    if cache.read_only is None:
        cache.check()
    paths = [str(p) for p in paths]
    fkeys = [file_key(p) for p in paths]
    dim = backbone.feature_dim
    keys = [
        cache.setting_key(backbone, transform, v, seed, view, loader.max_pixels) for v in chosen
    ]
    known = [cache.lookup(key, set(fkeys), dim) for key in keys]
    dist = Distributed.current()
    dist.barrier()  # every rank looked before any rank writes: all see the same misses
    todo = _missing(fkeys, known)
    log.info(
        "%s: %d of %d files × %d variant(s) from cache %s, %d to extract",
        desc,
        len(paths) - len(todo),
        len(paths),
        len(keys),
        cache.root,
        len(todo),
    )
    job = _Job(cache, backbone, transform, chosen, keys, paths, fkeys, run)
    if todo:
        job.fill(todo, known, dist)
    if dist.world > 1:
        dist.barrier()  # the other ranks' packs are on disk now
        for key, kn in zip(keys, known):
            kn.update(cache.lookup(key, {fkeys[i] for i in _missing(fkeys, [kn])}, dim))
        left = _missing(fkeys, known)
        if left:  # a rank could not write its packs: extract them here
            log.warning("%s: %d files not cached by the other ranks; extracting", desc, len(left))
            job.fill(left, known, Distributed())
    return _assemble(known, paths, fkeys, dim)


def _missing(fkeys: list[str], known: list[Known]) -> list[int]:
    """Indices of the files some setting lacks (the first occurrence of each file key)."""
    seen, todo = set(), []
    for i, fk in enumerate(fkeys):
        if fk not in seen and any(fk not in kn for kn in known):
            todo.append(i)
        seen.add(fk)
    return todo


@dataclass(frozen=True)
class _Run:
    """How one cached_extract call extracts what the cache lacks."""

    device: str | torch.device
    loader: Loader
    seed: int
    view: int
    desc: str


@dataclass
class _Job:
    """One cached_extract call's fixed inputs, for filling what the cache lacks."""

    cache: FeatureCache
    backbone: BackboneProtocol
    transform: ImageTransform
    variants: list[Variant]
    keys: list[str]
    paths: list[str]
    fkeys: list[str]
    run: _Run

    def fill(self, todo: list[int], known: list[Known], dist: Distributed) -> None:
        """Extract this rank's chunks of ``todo`` in one stream, storing a pack per chunk."""
        size = self.cache.shard_size
        chunks = [todo[c : c + size] for c in range(0, len(todo), size)][dist.rank :: dist.world]
        order = [i for chunk in chunks for i in chunk]
        if not order:
            return
        # Variants that lack at least one of the files: one decode feeds all of them.
        need = [v for v, kn in enumerate(known) if any(self.fkeys[i] not in kn for i in order)]
        chunk_of = [c for c, chunk in enumerate(chunks) for _ in chunk]
        buffers = [_ChunkBuffer(len(chunk)) for chunk in chunks]
        run = self.run
        stream = iter_feature_batches(
            self.backbone,
            [self.paths[i] for i in order],
            self.transform,
            [self.variants[v] for v in need],
            run.device,
            run.loader,
            seed=run.seed,
            view=run.view,
            desc=f"{run.desc} [{len(order)} of {len(self.paths)} files not cached]",
        )
        for idx, feats, bad in stream:  # feats (K', B, D)
            touched = set()
            for j, pos in enumerate(idx):
                buffers[chunk_of[pos]].rows[pos] = feats[:, j]
                touched.add(chunk_of[pos])
            for pos, reason in bad:
                buffers[chunk_of[pos]].bad[pos] = reason
                touched.add(chunk_of[pos])
            for c in sorted(touched):
                if buffers[c].full():
                    self._store(buffers[c], order, need, known)
                    buffers[c] = _ChunkBuffer(-1)  # stored: free its rows (never full again)

    def _store(self, buf: _ChunkBuffer, order: list[int], need: list[int], known) -> None:
        """Write one finished chunk, per variant only the files that variant lacked."""
        dim = self.backbone.feature_dim
        for j, v in enumerate(need):
            kn = known[v]
            rows = [p for p in sorted(buf.rows) if self.fkeys[order[p]] not in kn]
            skips = {self.fkeys[order[p]]: r for p, r in buf.bad.items()}
            skips = {k: r for k, r in skips.items() if k not in kn}
            if not rows and not skips:
                continue
            features = torch.stack([buf.rows[p][j] for p in rows]) if rows else torch.empty(0, dim)
            row_keys = [self.fkeys[order[p]] for p in rows]
            self.cache.write_pack(self.keys[v], row_keys, features, skips)
            kn.add(features, list(enumerate(row_keys)))
            kn.skipped.update(skips)


@dataclass
class _ChunkBuffer:
    """One chunk's results (by position in the extraction order) until all its files are seen."""

    size: int
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # (K', D) per kept file
    bad: dict[int, str] = field(default_factory=dict)

    def full(self) -> bool:
        return len(self.rows) + len(self.bad) == self.size


def _assemble(known: list[Known], paths: list[str], fkeys: list[str], dim: int) -> FeatureSet:
    """(K, N, D) features of the files every variant could read, in input order."""
    reasons: dict[str, str] = {}
    for kn in known:  # unreadable for one variant = unreadable (K slices stay aligned)
        for key, reason in kn.skipped.items():
            reasons.setdefault(key, reason)
    held = set.intersection(*(set(kn.where) for kn in known))
    kept, skipped = [], []
    for i, fk in enumerate(fkeys):
        if fk in reasons:
            skipped.append((paths[i], reasons[fk]))
        elif fk in held:
            kept.append(i)
        else:  # an invariant of cached_extract, not a user error
            raise RuntimeError(f"feature cache: no features and no skip record for {paths[i]}")
    if not kept:
        return FeatureSet(torch.empty(len(known), 0, dim), [], skipped)
    features = torch.empty(len(known), len(kept), dim)  # (K, N, D)
    for k, kn in enumerate(known):
        kn.gather([fkeys[i] for i in kept], features[k])
    return FeatureSet(features, [paths[i] for i in kept], skipped)


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
