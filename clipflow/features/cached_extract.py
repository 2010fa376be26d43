"""Features through the cache: only the files it lacks (per variant) go through the backbone.

:func:`cached_extract` looks every file up by file key under each variant's setting, extracts
the missing ones in one stream (one decode feeds every variant that lacks the file), writes a
pack per ``shard_size`` chunk as it completes (an interrupted extraction resumes from the
completed ones) and assembles the (K, N, D) features in input order. Under torchrun, rank r
extracts chunks r, r + world, ... of the missing files and every rank then reads the others'
packs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..backbones.preprocess import ImageTransform
from ..backbones.protocol import BackboneProtocol
from ..core.distributed import Distributed
from ..transforms.variant import Variant, VariantFn, as_variant
from .cache import FeatureCache, file_key
from .extract import FeatureSet, extract_features, iter_feature_batches
from .loader import DEFAULT_LOADER, Loader
from .packs import Known

log = logging.getLogger(__name__)


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
