"""Training features that do not fit in RAM: read from the cache's packs in bounded buffers.

The in-RAM path holds every (variant, view, image) feature on the host (and briefly twice,
while stacking the views). Past ``train.ram_budget_gb`` the features stay in their packs and
each epoch streams them through one fixed buffer of R rows per variant:

- the N images are cut into *segments* of consecutive rows (a few hundred: sequential reads
  through the pack's memory map, yet fine-grained enough to mix classes, which the file order
  keeps together);
- each epoch shuffles the segments and fills the buffer with R rows' worth of them at a time;
- the buffer's rows are shuffled again, and the steps run over them.

When all N rows fit in one buffer there is no segment shuffle and the buffer holds the rows
in file order, so the epoch's order is ``randperm(N)`` from the same generator as the in-RAM
path: the same batches, the same model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .cache import FeatureCache, read_rows

log = logging.getLogger(__name__)

SEGMENT_ROWS = 256  # rows read in one sequential piece (768 floats each: 0.75 MiB)
# Host copies of a buffer's rows at once: the buffer itself, the rows read from a pack before
# they are copied in, and the device copy's staging.
BUFFER_COPIES = 3


class RowSource(Protocol):
    """Features of one variant, (V, N, D): ``read(view, positions)`` -> (len, D) float32."""

    shape: tuple[int, int, int]

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor: ...


class TensorRows:
    """A (V, N, D) tensor as a :class:`RowSource` (small data, tests)."""

    def __init__(self, features: torch.Tensor):
        self.features = features
        self.shape = tuple(features.shape)

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor:
        return self.features[view].index_select(0, positions)


@dataclass
class PackRows:
    """One variant's features in the cache's packs: per view, the pack and row of each image."""

    packs: list[list[Path]]  # [view] -> pack paths
    pack_of: torch.Tensor  # (V, N) int32 index into packs[view]
    row_of: torch.Tensor  # (V, N) int32 row inside that pack
    dim: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.pack_of.shape, self.dim)

    def __getitem__(self, view: int) -> torch.Tensor:
        """All (N, D) rows of one view in RAM, for callers that need every row at once
        (the baselines): the budget does not apply to them."""
        return self.read(view, torch.arange(self.shape[1]))

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor:
        """Rows of ``positions`` (ascending runs read as one slice per pack)."""
        out = torch.empty(len(positions), self.dim)
        packs, rows = self.pack_of[view, positions], self.row_of[view, positions]
        for p in packs.unique().tolist():
            at = (packs == p).nonzero().squeeze(1)
            r = rows[at].long()
            lo, hi = int(r.min()), int(r.max()) + 1
            block = read_rows(self.packs[view][p], lo, hi)  # (hi - lo, D): one sequential read
            out[at] = block.index_select(0, r - lo)
        return out


class PackFeatures:
    """(K, V, N, D) training features left on disk; ``[k]`` is variant k's :class:`PackRows`."""

    def __init__(self, variants: list[PackRows]):
        self.variants = variants

    def __getitem__(self, k: int) -> PackRows:
        return self.variants[k]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.variants), *self.variants[0].shape)


def ram_budget_bytes(gb: float | None) -> int:
    """``train.ram_budget_gb`` in bytes; None = half of this machine's physical memory."""
    if gb is not None:
        return int(gb * 2**30)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: a conservative 8 GiB
        return 8 * 2**30


def in_ram_bytes(k: int, v: int, n: int, dim: int) -> int:
    """Peak host bytes of the in-RAM path: K × V × N × D float32, twice while stacking."""
    return 2 * k * v * n * dim * 4


def buffer_rows(budget: int, k: int, dim: int, batch_size: int) -> int:
    """Rows per streaming buffer: what ``budget`` holds (K variants, BUFFER_COPIES copies),
    rounded down to whole batches and at least one batch."""
    rows = budget // (BUFFER_COPIES * k * dim * 4)
    return max(batch_size, rows // batch_size * batch_size)


def epoch_buffers(
    n: int, rows: int, gen: torch.Generator, segment: int = SEGMENT_ROWS
) -> Iterator[torch.Tensor]:
    """The positions each buffer of one epoch holds, in buffer order (see the module doc).

    All N in one buffer: positions 0..N-1 in order, the generator untouched. Otherwise
    shuffled segments of ``segment`` rows (at most ``rows``), ``rows // segment`` per buffer;
    each buffer's positions ascend (sequential reads), the caller shuffles within it.
    """
    if n <= rows:
        yield torch.arange(n)
        return
    segment = max(1, min(segment, rows))
    starts = torch.arange(0, n, segment)
    order = starts[torch.randperm(len(starts), generator=gen)]
    per_buffer = max(1, rows // segment)
    for b in range(0, len(order), per_buffer):
        pieces = [torch.arange(s, min(s + segment, n)) for s in order[b : b + per_buffer].tolist()]
        yield torch.cat(pieces).sort().values


@dataclass
class Located:
    """Where a training set's features are: per view × variant, or why a file has none."""

    features: PackFeatures
    kept: list[int]  # positions (into the caller's paths) of the files every key holds
    skipped: dict[int, str]  # position -> reason a key could not read it
    missing: list[int]  # positions some key neither holds nor has a skip record for


def locate(cache: FeatureCache, keys: list[list[str]], fkeys: list[str], dim: int) -> Located:
    """Find the rows of ``fkeys`` under setting ``keys[view][variant]`` without loading them.

    Every pack that holds a wanted row is verified once (read, shape, finiteness, checksum;
    one pack in memory at a time); a damaged one is dropped as in :meth:`FeatureCache.lookup`
    and its files come back as missing.
    """
    n_views, n_var, n = len(keys), len(keys[0]), len(fkeys)
    position = {}
    for i, fk in enumerate(fkeys):
        position.setdefault(fk, i)
    pack_of = torch.full((n_var, n_views, n), -1, dtype=torch.int32)
    row_of = torch.full((n_var, n_views, n), -1, dtype=torch.int32)
    packs: list[list[list[Path]]] = [[[] for _ in range(n_views)] for _ in range(n_var)]
    skipped: dict[int, str] = {}
    for v, view_keys in enumerate(keys):
        for k, key in enumerate(view_keys):
            where = (packs[k][v], pack_of[k, v], row_of[k, v])
            _locate_key(cache, key, position, dim, where, skipped)
    first = torch.zeros(n, dtype=torch.bool)
    first[list(position.values())] = True
    held = (pack_of >= 0).flatten(0, 1).all(0) & first
    unskipped = first.clone()
    unskipped[list(skipped)] = False
    kept = (held & unskipped).nonzero().squeeze(1).tolist()
    missing = (~held & unskipped).nonzero().squeeze(1).tolist()
    idx = torch.tensor(kept, dtype=torch.long)
    variants = [
        PackRows(packs[k], pack_of[k][:, idx].contiguous(), row_of[k][:, idx].contiguous(), dim)
        for k in range(n_var)
    ]
    return Located(PackFeatures(variants), kept, skipped, missing)


def _locate_key(cache, key, position, dim, where, skipped: dict[int, str]) -> None:
    """Fill ``where`` = (pack paths, pack_of (N,), row_of (N,)) and ``skipped`` for one key."""
    packs, pack_of, row_of = where
    for pack in cache.iter_packs(key):
        for fk, reason in pack.skipped.items():
            if fk in position:
                skipped.setdefault(position[fk], reason)
        hits = [(r, position[fk]) for r, fk in enumerate(pack.rows) if fk in position]
        if not hits:
            continue
        rows, pos = torch.tensor(hits, dtype=torch.long).T
        new = pack_of[pos] < 0  # the first pack holding a file wins, as in lookup()
        if not new.any() or cache.load(pack, dim) is None:  # load: verify, then let it go
            continue
        pack_of[pos[new]] = len(packs)
        row_of[pos[new]] = rows[new].to(torch.int32)
        packs.append(pack.path)
