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

Host memory beyond the buffer does not grow with N: :func:`locate` finds the files' rows
through a sorted array of key hashes (:class:`KeyIndex`, dropped when it returns) and keeps,
per view and variant, runs of consecutive pack rows (:class:`RowRuns`, one per pack when the
files are listed in extraction order), not a Python object or tensor entry per file.
"""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .cache import FeatureCache
from .packs import read_rows

log = logging.getLogger(__name__)

SEGMENT_ROWS = 256  # rows read in one sequential piece (768 floats each: 0.75 MiB)
# Host copies of a buffer's rows at once: the buffer itself, the rows read from a pack before
# they are copied in, and the device copy's staging.
BUFFER_COPIES = 3
READ_GAP = 32  # rows: nearer rows of one pack are read in the same slice
COMPACT_CHUNK = 1 << 16  # positions re-indexed at once by _compact


class RowSource(Protocol):
    """Features of one variant, (V, N, D): ``read(view, positions)`` -> (len, D) float32."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor: ...


class TensorRows:
    """A (V, N, D) tensor as a :class:`RowSource` (small data, tests)."""

    def __init__(self, features: torch.Tensor):
        self.features = features
        self.shape = tuple(features.shape)

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor:
        return self.features[view].index_select(0, positions)


class RowRuns:
    """Where positions 0..N-1 of one view's rows are, as runs of consecutive rows of one pack.

    Run j covers positions ``start[j]`` up to the next run's start, at rows ``row[j]``,
    ``row[j] + 1``, ... of pack ``pack[j]``. Files listed in the order they were extracted
    (the usual case) give one run per pack, so the index is O(packs), not O(files); in the
    worst case (a list in another order than the packs) it is one run per file, 16 bytes each.
    """

    def __init__(self, start: np.ndarray, pack: np.ndarray, row: np.ndarray):
        self.start = start.astype(np.int64)  # ascending, start[0] == 0
        self.pack = pack.astype(np.int32)
        self.row = row.astype(np.int32)  # rows inside one pack

    def at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pack, row) of each position."""
        j = np.searchsorted(self.start, positions, side="right") - 1
        return self.pack[j], self.row[j] + (positions - self.start[j])

    @property
    def nbytes(self) -> int:
        return self.start.nbytes + self.pack.nbytes + self.row.nbytes


@dataclass
class PackRows:
    """One variant's features in the cache's packs: per view, the packs and the runs of rows."""

    packs: list[list[Path]]  # [view] -> pack paths
    runs: list[RowRuns]  # [view] -> where each position's row is
    n: int
    dim: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.runs), self.n, self.dim)

    def __getitem__(self, view: int) -> torch.Tensor:
        """All (N, D) rows of one view in RAM, for callers that need every row at once
        (the baselines): the budget does not apply to them."""
        return self.read(view, torch.arange(self.n))

    def read(self, view: int, positions: torch.Tensor) -> torch.Tensor:
        """Rows of ``positions``: per pack, nearby rows are read as one slice (sequential)."""
        out = torch.empty(len(positions), self.dim)
        where = np.asarray(positions, dtype=np.int64)
        if not len(where):
            return out
        if where.min() < 0 or where.max() >= self.n:  # the runs would wrap around silently
            raise IndexError(f"positions outside 0..{self.n - 1}")
        packs, rows = self.runs[view].at(where)
        by_pack = np.lexsort((rows, packs))  # grouped by pack, rows ascending
        packs, rows = packs[by_pack], rows[by_pack]
        # A new slice where the pack changes or the next row is more than READ_GAP rows on.
        cut = (packs[1:] != packs[:-1]) | (rows[1:] - rows[:-1] > READ_GAP)
        bounds = [0, *(np.flatnonzero(cut) + 1).tolist(), len(rows)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            lo, hi = int(rows[a]), int(rows[b - 1]) + 1
            block = read_rows(self.packs[view][int(packs[a])], lo, hi)  # one sequential read
            picked = block.index_select(0, torch.from_numpy(rows[a:b] - lo))
            # index_copy_, not out[idx] = ...: index_put waits at an OpenMP barrier per call
            # when another process holds a core (~17 ms instead of ~30 µs on 2 cores).
            out.index_copy_(0, torch.from_numpy(by_pack[a:b]), picked)
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
    """Where a training set's features are: per view × variant, or why a file has none.

    ``kept`` and ``missing`` hold no Python object per file: ``range(N)`` when every file is
    kept, else an ``array('q')`` of positions (8 bytes each).
    """

    features: PackFeatures
    kept: Sequence[int]  # positions (into the caller's paths) of the files every key holds
    skipped: dict[int, str]  # position -> reason a key could not read it
    missing: Sequence[int]  # positions some key neither holds nor has a skip record for


class KeyIndex:
    """The caller's file keys, searchable without a dict of N keys (~100 bytes per file).

    Holds their 64-bit ``hash()`` values sorted (int64) and each one's position (int32 below
    2**31 files): 12 bytes per file in two numpy arrays. A hash match is confirmed by comparing
    the keys themselves, so a hash collision cannot map a row to the wrong file.
    """

    def __init__(self, fkeys: Sequence[str]):
        self.fkeys = fkeys
        n = len(fkeys)
        hashes = np.fromiter((hash(k) for k in fkeys), dtype=np.int64, count=n)
        order = np.argsort(hashes, kind="stable")  # equal hashes: ascending positions
        hashes.sort()  # in place: one (N,) int64 less at the peak than hashes[order]
        self.hashes = hashes
        self.order = order.astype(np.int32) if n < 2**31 else order

    def find(self, keys: Sequence[str]) -> np.ndarray:
        """Position of the first occurrence of each of ``keys`` in the caller's list; -1 if
        absent."""
        n, m = len(self.hashes), len(keys)
        wanted = np.fromiter((hash(k) for k in keys), dtype=np.int64, count=m)
        at = np.minimum(np.searchsorted(self.hashes, wanted), max(n - 1, 0))
        out = np.full(m, -1, dtype=np.int64)
        if n == 0:
            return out
        cand = np.flatnonzero(self.hashes[at] == wanted)
        pos = self.order[at[cand]].astype(np.int64)
        fkeys = self.fkeys
        same = np.fromiter(
            (fkeys[p] == keys[j] for j, p in zip(cand.tolist(), pos.tolist())),
            dtype=bool,
            count=len(cand),
        )
        out[cand[same]] = pos[same]
        for j in cand[~same].tolist():  # a hash collision: look along the equal hashes
            out[j] = self._scan(int(at[j]), keys[j])
        return out

    def _scan(self, i: int, key: str) -> int:
        h, n = self.hashes[i], len(self.hashes)
        while i < n and self.hashes[i] == h:
            if self.fkeys[int(self.order[i])] == key:
                return int(self.order[i])
            i += 1
        return -1

    def repeats(self) -> np.ndarray:
        """Positions whose key occurs earlier in the list (a file listed twice)."""
        later = np.flatnonzero(self.hashes[1:] == self.hashes[:-1]) + 1
        out = [p for i in later.tolist() if (p := int(self.order[i])) != self._first(i)]
        return np.asarray(out, dtype=np.int64)

    def _first(self, i: int) -> int:
        """The first position holding the key of sorted entry ``i``."""
        j = i
        while j > 0 and self.hashes[j - 1] == self.hashes[i]:
            j -= 1
        return self._scan(j, self.fkeys[int(self.order[i])])


def locate(cache: FeatureCache, keys: list[list[str]], fkeys: list[str], dim: int) -> Located:
    """Find the rows of ``fkeys`` under setting ``keys[view][variant]`` without loading them.

    Every pack that holds a wanted row is verified once (read, shape, finiteness, checksum;
    one pack in memory at a time); a damaged one is dropped as in :meth:`FeatureCache.lookup`
    and its files come back as missing. Beyond the caller's lists, the index costs O(packs)
    (see :class:`RowRuns`) and ``kept`` (nothing when every file is kept); while it is built,
    about 20 bytes per file in numpy arrays (:class:`KeyIndex` and a few boolean masks).
    """
    n_var, n = len(keys[0]), len(fkeys)
    index = KeyIndex(fkeys)
    held = np.ones(n, dtype=bool)  # every key holds the file
    found: list[list[tuple[list[Path], RowRuns]]] = [[] for _ in range(n_var)]
    skipped: dict[int, str] = {}
    for view_keys in keys:
        for k, key in enumerate(view_keys):
            found[k].append(_locate_key(cache, key, index, dim, held, skipped))
    first = np.ones(n, dtype=bool)
    first[index.repeats()] = False  # a file listed twice counts once, at its first position
    del index
    held &= first
    unskipped = np.ones(n, dtype=bool)
    unskipped[list(skipped)] = False
    keep = held & unskipped
    if keep.all():
        kept: range | array[int] = range(n)
    else:
        kept = array("q", np.flatnonzero(keep).tobytes())
    missing = array("q", np.flatnonzero(~held & unskipped & first).tobytes())
    variants = [
        PackRows(
            [packs for packs, _ in per_view],
            [_compact(runs, kept) for _, runs in per_view],
            len(kept),
            dim,
        )
        for per_view in found
    ]
    return Located(PackFeatures(variants), kept, skipped, missing)


def _locate_key(
    cache: FeatureCache,
    key: str,
    index: KeyIndex,
    dim: int,
    held: np.ndarray,
    skipped: dict[int, str],
) -> tuple[list[Path], RowRuns]:
    """One setting's packs and runs (in the caller's positions); clears ``held`` where the
    setting lacks a file and fills ``skipped``."""
    have = np.zeros(len(held), dtype=bool)
    packs: list[Path] = []
    pieces: list[np.ndarray] = []  # (3, runs) per pack: start, pack, row
    for pack in cache.iter_packs(key):
        if pack.skipped:
            names = list(pack.skipped)
            at, pos = _hits(index.find(names))
            for j, p in zip(at.tolist(), pos.tolist()):  # Python ints: callers print them
                skipped.setdefault(p, pack.skipped[names[j]])
        rows, pos = _hits(index.find(pack.rows))
        new = ~have[pos]  # the first pack holding a file wins, as in lookup()
        if not new.any() or cache.load(pack, dim) is None:  # load: verify, then let it go
            continue
        rows, pos = rows[new], pos[new]
        have[pos] = True
        pieces.append(_runs(pos, rows, len(packs)))
        packs.append(pack.path)
    held &= have
    if not pieces:
        return packs, RowRuns(np.zeros(0), np.zeros(0), np.zeros(0))
    start, pack_i, row = np.concatenate(pieces, axis=1)
    by_start = np.argsort(start, kind="stable")
    return packs, RowRuns(start[by_start], pack_i[by_start], row[by_start])


def _hits(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into the searched keys, position) of the keys that were found."""
    at = np.flatnonzero(positions >= 0)
    return at, positions[at]


def _runs(pos: np.ndarray, rows: np.ndarray, pack: int) -> np.ndarray:
    """(3, runs): start position, pack, first row of each run of consecutive positions that
    sit at consecutive rows of ``pack``."""
    by_pos = np.argsort(pos, kind="stable")
    pos, rows = pos[by_pos], rows[by_pos]
    cut = np.flatnonzero((np.diff(pos) != 1) | (np.diff(rows) != 1)) + 1
    first = np.concatenate([[0], cut])
    return np.stack([pos[first], np.full(len(first), pack), rows[first]])


def _compact(runs: RowRuns, kept: range | array[int]) -> RowRuns:
    """``runs`` (caller's positions) re-indexed by kept position 0..len(kept)-1: a run is cut
    where a file in it is not kept. Chunk by chunk, so no (N,) array of rows is built."""
    if isinstance(kept, range):  # every file kept: the positions are the same
        return runs
    kept_pos = np.frombuffer(kept, dtype=np.int64) if len(kept) else np.zeros(0, np.int64)
    out, last = [], None  # last: (pack, row) the previous chunk's last position ends at
    for a in range(0, len(kept_pos), COMPACT_CHUNK):
        chunk = kept_pos[a : a + COMPACT_CHUNK]
        pack, row = runs.at(chunk)
        brk = np.ones(len(chunk), dtype=bool)
        brk[1:] = (pack[1:] != pack[:-1]) | (row[1:] != row[:-1] + 1)
        if last is not None:
            brk[0] = (pack[0], row[0]) != (last[0], last[1] + 1)
        at = np.flatnonzero(brk)
        out.append(np.stack([at + a, pack[at], row[at]]))
        last = (pack[-1], row[-1])
    if not out:
        return RowRuns(np.zeros(0), np.zeros(0), np.zeros(0))
    start, pack_i, row = np.concatenate(out, axis=1)
    return RowRuns(start, pack_i, row)
