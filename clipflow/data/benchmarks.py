"""Today's AI-image benchmarks beside the paper's 19 sets: GenImage, Chameleon, Synthbuster, WildRF.

Each benchmark has its own published folder layout (none uses CNNSpot's ``0_real``/``1_fake``
everywhere), so each has a finder (:mod:`clipflow.data.finders`) that turns its layout into
:class:`~clipflow.data.layouts.TestSet` objects carrying a ``benchmark`` and a ``protocol``
name, and one :class:`Layout` record here: its finder, protocol, counts, the folder it is
unpacked into and every documented ``data.test_root`` placement. Set names are prefixed with
the benchmark (``genimage/adm``, ``synthbuster/glide``): GenImage's BigGAN or Synthbuster's
GLIDE must never be mistaken for the paper's ``biggan``/``glide_*`` sets, whose mean keeps its
meaning.

``data.benchmark`` chooses: ``univfd`` (the CNNSpot/UnivFD discovery of
clipflow.data.layouts only), one of :data:`BENCHMARKS`, or ``auto`` (every modern layout found
at any of its documented placements, and CNNSpot/UnivFD discovery for the other children).
Where nothing is found, the error names each layout tried; a recognised tree missing a part
names the part (:class:`BenchmarkNotFound`, ``Found.skipped``). Layouts, placements, counts and
their sources: docs/datasets.md.

The bias-controlled switch that goes with these sets (``data.reencode``) is
:mod:`clipflow.transforms.reencode`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from .finders import (
    CHAMELEON_DIR,
    GENIMAGE_DIR,
    GENIMAGE_NAMES,
    SYNTHBUSTER_DIR,
    SYNTHBUSTER_GENERATORS,
    SYNTHBUSTER_REALS,
    WILDRF_DIR,
    WILDRF_PLATFORMS,
    Found,
    find_chameleon,
    find_genimage,
    find_synthbuster,
    find_wildrf,
)
from .imageio import list_subdirs
from .layouts import TestSet
from .testsets import NoTestSetError, discover_test_sets

log = logging.getLogger(__name__)

UNIVFD = "univfd"  # the benchmark name of every set found by clipflow.data.testsets's discovery
DOCS = "docs/datasets.md"


# ------------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class KnownCount:
    """A published (real, fake) count and where it comes from. ``verified``: the figure was
    read from the source named (a file list or a README), not from a summary elsewhere;
    an unverified entry is never compared with (clipflow-check-data says "count not known")."""

    real: int | None
    fake: int | None
    source: str
    verified: bool

    def expected(self) -> tuple[int, int] | None:
        if not self.verified or self.real is None or self.fake is None:
            return None
        return (self.real, self.fake)


_GRIP_CSV = (
    "https://github.com/grip-unina/ClipBased-SyntheticImageDetection/blob/"
    "c76ef7f5e158c5aba9e55b8b94ab0079720d281e/data/commercial_tools.csv: lists 1000 files "
    "under synthbuster/real_RAISE_1k and 1000 under synthbuster/{gen}"
)
_SYNTHBUSTER_PAPER = (
    "Bammey, Synthbuster (IEEE OJSP 2023) / https://zenodo.org/records/10066460 describe 1000 "
    "images per generator for 9 generators; no file list of {gen} was available here"
)
_GENIMAGE_SRC = (
    "https://github.com/GenImage-Dataset/GenImage (Readme.md, commit 746781b) gives the layout "
    "but no per-generator val counts; the paper's per-subset table was not readable here"
)
_CHAMELEON_SRC = (
    "https://github.com/shilinyan99/AIDE README (Chameleon on request by e-mail; issue #13: "
    "test set only) gives no counts; secondary summaries (~26,000 images) disagree with each other"
)
_WILDRF_SRC = (
    "https://github.com/barcavia/RealTime-DeepfakeDetection-in-the-RealWorld README gives the "
    "layout but no counts"
)


def _synthbuster_counts() -> dict[str, KnownCount]:
    known = {}
    for gen in SYNTHBUSTER_GENERATORS:
        listed = gen in ("dalle2", "dalle3", "firefly", "midjourney-v5")
        src = (_GRIP_CSV if listed else _SYNTHBUSTER_PAPER).format(gen=gen)
        known[f"synthbuster/{gen}"] = KnownCount(1000, 1000 if listed else None, src, listed)
    return known


def _unverified(names: list[str], source: str) -> dict[str, KnownCount]:
    return {name: KnownCount(None, None, source, False) for name in names}


# ------------------------------------------------------------------------------- the layouts


@dataclass(frozen=True)
class Layout:
    """Everything clipflow knows of one benchmark's layout, in one record.

    Attributes:
        name: the ``data.benchmark`` value, and the prefix of its set names.
        display: the benchmark's name in tables.
        protocol: what a set of it compares, recorded on every set found.
        find: ``find(root, explicit)`` -> the sets under root (``explicit``: the user named
            this benchmark, so a generic folder name is accepted); None for CNNSpot/UnivFD,
            found by :func:`clipflow.data.testsets.discover_test_sets`.
        expects: where its folders are expected under ``data.test_root`` (``[x/]``: the
            level may be the root itself), for the error that says what was tried.
        home: the folder clipflow-download-data and docs/datasets.md unpack it into.
        folder: its own folder under ``home`` ("" for the paper's containers).
        placements: every ``data.test_root`` the docs name for it; each is found (tests
            generate each with clipflow.data.synthetic).
        known_counts: published (real, fake) counts per set name, for clipflow-check-data.
    """

    name: str
    display: str
    protocol: str
    find: Callable[[Path, bool], Found | None] | None
    expects: str
    home: str
    folder: str
    placements: tuple[str, ...]
    known_counts: dict[str, KnownCount] = field(default_factory=dict)

    def tried(self) -> str:
        return f"{self.display} ({self.expects})"


_HOME = "data/benchmarks"  # clipflow-download-data benchmarks=...: <root>/benchmarks


def _placements(*below: str) -> tuple[str, ...]:
    return (_HOME, *(f"{_HOME}/{b}" for b in below))


# A new layout is one entry here (and its finder in clipflow.data.finders).
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            UNIVFD,
            "CNNSpot/UnivFD",
            "cnnspot-univfd: 0_real vs 1_fake per set (shared real pools for the diffusion sets)",
            None,
            "<set>/{0_real,1_fake}, also <set>/<class>/... and inside container folders",
            "data/benchmark",
            "",
            ("data/benchmark",),
        ),
        Layout(
            "genimage",
            "GenImage",
            "genimage-val: val split, nature (real) vs ai (fake), per generator",
            find_genimage,
            f"[{GENIMAGE_DIR}/]<Generator>/[imagenet_*/]val/{{ai,nature}}",
            _HOME,
            GENIMAGE_DIR,
            _placements(GENIMAGE_DIR),
            _unverified([f"genimage/{key}" for key in GENIMAGE_NAMES], _GENIMAGE_SRC),
        ),
        Layout(
            "chameleon",
            "Chameleon",
            "chameleon-test: test/0_real vs test/1_fake, one set",
            find_chameleon,
            f"[{CHAMELEON_DIR}/]test/{{0_real,1_fake}}",
            _HOME,
            CHAMELEON_DIR,
            _placements(CHAMELEON_DIR, f"{CHAMELEON_DIR}/test"),
            _unverified(["chameleon"], _CHAMELEON_SRC),
        ),
        Layout(
            "synthbuster",
            "Synthbuster",
            "synthbuster: RAISE-1k reals vs each generator's 1000 fakes",
            find_synthbuster,
            f"[{SYNTHBUSTER_DIR}/]{SYNTHBUSTER_REALS[0]}/ beside "
            f"{'/, '.join(SYNTHBUSTER_GENERATORS[:2])}/, ... (images directly inside)",
            _HOME,
            SYNTHBUSTER_DIR,
            _placements(SYNTHBUSTER_DIR),
            _synthbuster_counts(),
        ),
        Layout(
            "wildrf",
            "WildRF",
            "wildrf-test: test split, 0_real vs 1_fake per platform",
            find_wildrf,
            f"[{WILDRF_DIR}/]test/{{{','.join(WILDRF_PLATFORMS)}}}/{{0_real,1_fake}}",
            _HOME,
            WILDRF_DIR,
            _placements(WILDRF_DIR, f"{WILDRF_DIR}/test"),
            _unverified([f"wildrf/{p}" for p in WILDRF_PLATFORMS], _WILDRF_SRC),
        ),
    )
}
BENCHMARKS = tuple(name for name, layout in LAYOUTS.items() if layout.find is not None)
CHOICES = ("auto", *LAYOUTS)  # data.benchmark
KNOWN_COUNTS = {name: kc for layout in LAYOUTS.values() for name, kc in layout.known_counts.items()}


class BenchmarkNotFound(DataError):
    """No scorable set under a root: each layout tried and where it looked, then the first
    part found missing. ``found`` keeps what was recognised (claimed folders, every missing
    part) and ``tried`` the message without that part, for clipflow-check-data."""

    def __init__(self, root: Path, layouts: Iterable[Layout], found: Found):
        layouts = list(layouts)
        what = layouts[0].display if len(layouts) == 1 else "test"
        self.found = found
        self.tried = (
            f"no {what} set under {root} — tried "
            + "; ".join(lay.tried() for lay in layouts)
            + f" (docs: {DOCS})"
        )
        text = self.tried
        if found.skipped:
            (folder, reason), n = found.skipped[0], len(found.skipped)
            more = f" (and {n - 1} more, see the warnings)" if n > 1 else ""
            text += f" — recognised but incomplete: {folder}: {reason}{more}"
        super().__init__(text)


def find_modern(root: Path, benchmark: str = "auto") -> Found:
    """Every set of the modern layouts under ``root`` (``benchmark``: one of them, or auto),
    each with its layout's protocol; the folders claimed and the parts left out."""
    names = BENCHMARKS if benchmark == "auto" else (benchmark,)
    out = Found()
    for name in names:
        find = LAYOUTS[name].find
        found = find(root, benchmark == name) if find is not None else None
        if found:
            out.sets += [replace(s, protocol=LAYOUTS[name].protocol) for s in found.sets]
            out.claimed += found.claimed
            out.skipped += found.skipped
    return out


def _unclaimed(root: Path, claimed: list[Path]) -> list[Path]:
    """Children of root that no finder claimed and that hold none of the claimed folders."""
    res = [c.resolve() for c in claimed]
    out = []
    for child in list_subdirs(root):
        r = child.resolve()
        if any(r == c or r in c.parents or c in r.parents for c in res):
            continue
        out.append(child)
    return out


def find_benchmark(root: str | Path, benchmark: str = "auto") -> Found:
    """Test sets under ``root`` for ``data.benchmark`` (see the module docstring), with the
    folders the modern finders claimed and the parts of their trees that are not scored.

    Raises:
        DataError: an unknown benchmark, a missing root; :class:`BenchmarkNotFound` when no
            set of the chosen layout(s) is found (its message names each layout tried).
    """
    root = Path(root)
    if benchmark not in CHOICES:
        raise DataError(f"data.benchmark={benchmark!r}: use one of {', '.join(CHOICES)}")
    if benchmark == UNIVFD or not root.is_dir():  # its one-line error for a missing root
        return Found(tag_univfd(discover_test_sets(root)))
    found = find_modern(root, benchmark)
    if benchmark != "auto":
        if not found.sets:
            raise BenchmarkNotFound(root, [LAYOUTS[benchmark]], found)
        return found
    if not found.claimed:
        try:
            return Found(tag_univfd(discover_test_sets(root)))
        except NoTestSetError:
            raise BenchmarkNotFound(root, LAYOUTS.values(), found) from None
    sets = list(found.sets)
    for child in _unclaimed(root, found.claimed):
        try:
            sets += tag_univfd(discover_test_sets(child))
        except DataError as err:  # a folder of other things next to the benchmarks
            log.info("not a test set folder: %s (%s)", child, err)
    if not sets:
        raise BenchmarkNotFound(root, LAYOUTS.values(), found)
    check_unique(sets)
    return Found(sets, found.claimed, found.skipped)


def discover_benchmark_sets(root: str | Path, benchmark: str = "auto") -> list[TestSet]:
    """The test sets of :func:`find_benchmark` (parts left out are logged as warnings)."""
    return find_benchmark(root, benchmark).sets


def tag_univfd(sets: list[TestSet]) -> list[TestSet]:
    return [replace(s, benchmark=s.benchmark or UNIVFD, protocol=s.protocol or
                    LAYOUTS[UNIVFD].protocol) for s in sets]  # fmt: skip


def check_unique(sets: list[TestSet]) -> None:
    seen: set[str] = set()
    for s in sets:
        if s.name in seen:
            raise DataError(
                f"two test sets named '{s.name}' — point data.test_root at one benchmark folder"
            )
        seen.add(s.name)
