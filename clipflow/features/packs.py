"""One pack of the feature cache: its file format, its checked reading, and what packs hold.

A pack (``pack-<hash>.safetensors`` in a setting's folder, see :mod:`clipflow.features.cache`)
stores the features (n, D) float32 of its readable files and, in its metadata, the setting
key it was written under, the *file key* of each row, the (file key, reason) of the files that
could not be read and a checksum of the features. :func:`read_header` and :func:`read_features`
raise on any damage (wrong shape or dtype, non-finite values, wrong checksum, another
setting's pack); :class:`StalePack` marks a pack of an older format. :class:`Known` indexes
the rows of many packs by file key.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

# 3: the header records the setting key the pack was written under. Format 2 packs lack it and
# are removed as stale (serving one that was copied from another setting's folder is the bug
# the key prevents).
PACK_VERSION = 3
PACK_FORMAT = f"clipflow-feature-pack-{PACK_VERSION}"
_STALE_FORMATS = ("clipflow-feature-pack-2",)


def features_checksum(features: torch.Tensor) -> str:
    # CRC-32 finds disk and copy damage at memory speed; the cache guards against accidents,
    # not against someone forging features.
    # .data: the array's own buffer (a memoryview, no copy), which zlib takes as bytes.
    return f"crc32:{zlib.crc32(features.contiguous().numpy().data):08x}"


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


class StalePack(Exception):
    """A pack of an older format: removed and extracted again, reported once per folder."""


def read_header(path: Path, key: str) -> Pack:
    """The header of the pack at ``path`` of setting ``key``; raises if it is damaged, of
    another format or of another setting."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        shape = fh.get_slice("features").get_shape()
    if meta.get("format") in _STALE_FORMATS:
        raise StalePack(meta["format"])
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


def read_features(pack: Pack, dim: int | None) -> torch.Tensor:
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
    if features_checksum(features) != pack.checksum:
        raise ValueError("checksum mismatch")
    return features


def pack_bytes(key: str, rows: list[str], features: torch.Tensor, skipped: dict[str, str]) -> bytes:
    """The bytes of a pack of setting ``key`` (what :func:`read_header` reads back)."""
    meta = {
        "format": PACK_FORMAT,
        "setting": key,  # a copy into another setting's folder is refused on reading
        "rows": json.dumps(rows),
        "skipped": json.dumps(skipped),
        "checksum": features_checksum(features),
    }
    return save({"features": features.contiguous()}, metadata=meta)
