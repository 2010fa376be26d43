"""On-disk feature cache: the backbone runs once per (image, view, variant), training runs many times.

An entry holds the features of one variant of one file list::

    <cache>/<key>/shard-00000.safetensors   features (n, D) float32, index (n,) int64
    <cache>/<key>/shard-00000.json          skipped files of that shard
    <cache>/<key>/index.json                written last: the entry is complete

The key hashes everything that changes a feature: backbone name + weights identity +
precision, the transform (protocol, size, train crop), the variant (proxy op + parameters),
the seed, the view index and the file list (paths + sizes + mtimes). Shards are written
atomically, so an interrupted extraction resumes from the completed shards. Under torchrun,
rank r computes shards r, r + world, ... and rank 0 writes the index once all are done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .features import FeatureSet, Variant, as_variant, extract_features, iter_feature_batches
from .fileio import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_SHARD_SIZE = 4096


def default_cache_dir() -> Path:
    """``$CLIPFLOW_CACHE``, else ``$XDG_CACHE_HOME/clipflow/features`` (outside the source tree)."""
    if os.environ.get("CLIPFLOW_CACHE"):
        return Path(os.environ["CLIPFLOW_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "clipflow" / "features"


def files_fingerprint(paths: Sequence) -> str:
    """Hash of the ordered file list with sizes and mtimes (a missing file hashes as such)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @staticmethod
    def current() -> Distributed:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return Distributed()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


class FeatureCache:
    """A folder of cache entries; see the module docstring for the layout."""

    def __init__(self, root: str | Path | None = None, shard_size: int = DEFAULT_SHARD_SIZE):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.shard_size = shard_size

    def entry_key(
        self, backbone, transform, variant: Variant, seed: int, view: int, fingerprint: str
    ) -> str:
        bb = backbone.describe()
        return _hash(
            {
                "v": CACHE_VERSION,
                "backbone": [bb["name"], bb["weights_id"], bb["precision"]],
                "transform": transform.describe(),
                "variant": variant.key,
                "seed": seed,
                "view": view,
                "files": fingerprint,
            }
        )

    def complete(self, key: str) -> bool:
        return (self.root / key / "index.json").is_file()

    def shard_done(self, key: str, shard: int) -> bool:
        return (self.root / key / f"shard-{shard:05d}.json").is_file()

    def write_shard(
        self,
        key: str,
        shard: int,
        features: torch.Tensor,
        index: torch.Tensor,
        skipped: list[tuple[str, str]],
    ) -> None:
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"shard-{shard:05d}.safetensors"
        tmp = folder / f".{weights.name}.{os.getpid()}.tmp"
        save_file({"features": features.contiguous(), "index": index.contiguous()}, str(tmp))
        os.replace(tmp, weights)
        # The JSON marks the shard done, so it goes after the tensors.
        atomic_write_text(folder / f"shard-{shard:05d}.json", json.dumps({"skipped": skipped}))

    def write_index(self, key: str, n_files: int, n_shards: int, meta: dict) -> None:
        atomic_write_text(
            self.root / key / "index.json",
            json.dumps({"n_files": n_files, "n_shards": n_shards, **meta}, indent=1),
        )

    def read(
        self, key: str, paths: Sequence[str]
    ) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
        """(features (n, D), kept indices into ``paths``, skipped) of a complete entry."""
        folder = self.root / key
        n_shards = json.loads((folder / "index.json").read_text())["n_shards"]
        feats, kept, skipped = [], [], []
        for shard in range(n_shards):
            tensors = load_file(str(folder / f"shard-{shard:05d}.safetensors"))
            feats.append(tensors["features"])
            kept += tensors["index"].tolist()
            skipped += [
                tuple(s)
                for s in json.loads((folder / f"shard-{shard:05d}.json").read_text())["skipped"]
            ]
        return torch.cat(feats), kept, skipped


def cached_extract(
    backbone,
    paths: Sequence,
    transform,
    variants: Sequence,
    cache: FeatureCache | None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    view: int = 0,
    desc: str = "extract",
    **loader,
) -> FeatureSet:
    """:func:`extract_features` through the cache (``cache=None`` extracts directly).

    ``loader`` holds extract_features' keyword-only loader options (decode, prefetch_factor).
    """
    variants = [as_variant(v, i) for i, v in enumerate(variants)]
    if cache is None:
        return extract_features(
            backbone,
            paths,
            transform,
            variants,
            device,
            batch_size,
            num_workers,
            seed,
            view,
            desc,
            **loader,
        )
    paths = [str(p) for p in paths]
    fingerprint = files_fingerprint(paths)
    keys = [cache.entry_key(backbone, transform, v, seed, view, fingerprint) for v in variants]
    missing = [i for i, k in enumerate(keys) if not cache.complete(k)]
    if missing:
        _fill(
            cache,
            backbone,
            paths,
            transform,
            [variants[i] for i in missing],
            [keys[i] for i in missing],
            device,
            batch_size,
            num_workers,
            seed,
            view,
            desc,
            loader,
        )
    else:
        log.info(
            "%s: %d files × %d variant(s) read from cache %s",
            desc,
            len(paths),
            len(keys),
            cache.root,
        )
    return _load(cache, keys, paths)


def _fill(
    cache,
    backbone,
    paths,
    transform,
    variants,
    keys,
    device,
    batch_size,
    num_workers,
    seed,
    view,
    desc,
    loader,
):
    """Compute the missing entries of this rank's shards in one stream, writing each shard as it completes."""
    dist = Distributed.current()
    n_shards = max(1, -(-len(paths) // cache.shard_size))
    todo = [
        sh
        for sh in range(dist.rank, n_shards, dist.world)
        if not all(cache.shard_done(k, sh) for k in keys)
    ]
    # Global indices of the files still to do; a resumed run skips the completed shards.
    order = [
        i
        for sh in todo
        for i in range(sh * cache.shard_size, min(len(paths), (sh + 1) * cache.shard_size))
    ]
    pending = {
        sh: _ShardBuffer(min(len(paths), (sh + 1) * cache.shard_size) - sh * cache.shard_size)
        for sh in todo
    }
    stream = iter_feature_batches(
        backbone,
        [paths[i] for i in order],
        transform,
        variants,
        device,
        batch_size,
        num_workers,
        seed,
        view,
        f"{desc} [{len(todo)}/{n_shards} shards]",
        **loader,
    )
    for idx, feats, bad in stream:
        for j, pos in enumerate(idx):
            g = order[pos]
            pending[g // cache.shard_size].add(g, feats[:, j])
        for pos, reason in bad:
            g = order[pos]
            pending[g // cache.shard_size].skip(paths[g], reason)
        for sh in [sh for sh, buf in pending.items() if buf.full()]:
            buf = pending.pop(sh)
            features, index = buf.tensors(len(keys), backbone.feature_dim)
            for k, key in enumerate(keys):
                cache.write_shard(key, sh, features[k], index, buf.skipped)
    dist.barrier()
    if dist.rank == 0:
        for variant, key in zip(variants, keys):
            cache.write_index(
                key,
                len(paths),
                n_shards,
                {
                    "variant": variant.key,
                    "seed": seed,
                    "view": view,
                    "backbone": backbone.describe()["weights_id"],
                },
            )
    dist.barrier()


class _ShardBuffer:
    """Collects one shard's results until every file of it has been seen."""

    def __init__(self, size: int):
        self.size, self.index, self.rows, self.skipped = size, [], [], []

    def add(self, global_index: int, features: torch.Tensor) -> None:  # features (K, D)
        self.index.append(global_index)
        self.rows.append(features)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    def full(self) -> bool:
        return len(self.index) + len(self.skipped) == self.size

    def tensors(self, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = sorted(range(len(self.index)), key=self.index.__getitem__)
        feats = (
            torch.stack([self.rows[i] for i in order], dim=1) if order else torch.empty(k, 0, dim)
        )
        return feats, torch.tensor([self.index[i] for i in order], dtype=torch.long)


def _load(cache: FeatureCache, keys: list[str], paths: list[str]) -> FeatureSet:
    feats, kept, skipped = [], None, []
    for key in keys:
        f, k, s = cache.read(key, paths)
        if kept is not None and k != kept:
            raise RuntimeError(
                f"cache entry {key} lists other files than its sibling entries; clear {cache.root}"
            )
        feats.append(f)
        kept, skipped = k, s
    dim = feats[0].shape[-1] if feats else 0
    stacked = torch.stack(feats) if kept else torch.empty(len(keys), 0, dim)
    return FeatureSet(stacked, [paths[i] for i in (kept or [])], skipped)
