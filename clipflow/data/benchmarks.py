"""Today's AI-image benchmarks beside the paper's 19 sets: GenImage, Chameleon, Synthbuster, WildRF.

Each benchmark has its own published folder layout (none uses CNNSpot's ``0_real``/``1_fake``
everywhere), so each has a finder here that turns its layout into
:class:`~clipflow.data.layouts.TestSet` objects carrying a ``benchmark`` and a ``protocol``
name. Set names are prefixed with the benchmark (``genimage/adm``, ``synthbuster/glide``):
GenImage's BigGAN or Synthbuster's GLIDE must never be mistaken for the paper's
``biggan``/``glide_*`` sets, whose mean keeps its meaning.

``data.benchmark`` chooses: ``univfd`` (the CNNSpot/UnivFD discovery of
clipflow.data.layouts only), one of :data:`BENCHMARKS`, or ``auto`` (every modern layout found at
the root or in its
children, and CNNSpot/UnivFD discovery for the other children). Layouts, counts and their
sources: docs/datasets.md.

The bias-controlled switch that goes with these sets (``data.reencode``) is
:mod:`clipflow.transforms.reencode`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from .imageio import list_subdirs, scan_images
from .layouts import FAKE_DIR, REAL_DIR, TestSet, discover_test_sets

log = logging.getLogger(__name__)

UNIVFD = "univfd"  # the benchmark name of every set found by clipflow.data.layouts's discovery

# GenImage generator folders (README: Midjourney, VQDM, Wukong, Stable Diffusion V1.4/V1.5,
# GLIDE, BigGAN, ADM; the unpacked archives add a level such as imagenet_ai_0419_sdv4).
_GENIMAGE_KEYS = (
    ("sdv14", re.compile(r"sdv4|v_?1[._]?4|sd_?14|sdv14")),
    ("sdv15", re.compile(r"sdv5|v_?1[._]?5|sd_?15|sdv15")),
    ("midjourney", re.compile(r"midjourney")),
    ("adm", re.compile(r"adm")),
    ("glide", re.compile(r"glide")),
    ("wukong", re.compile(r"wukong")),
    ("vqdm", re.compile(r"vqdm")),
    ("biggan", re.compile(r"biggan")),
)
GENIMAGE_NAMES = {
    "midjourney": "Midjourney", "sdv14": "SD V1.4", "sdv15": "SD V1.5", "adm": "ADM",
    "glide": "GLIDE", "wukong": "Wukong", "vqdm": "VQDM", "biggan": "BigGAN",
}  # fmt: skip
GENIMAGE_KEYS_SET = frozenset(GENIMAGE_NAMES)
GENIMAGE_SPLIT = "val"
GENIMAGE_REAL, GENIMAGE_FAKE = "nature", "ai"

# Synthbuster (Zenodo 10066460 + GRIP's real_RAISE_1k.zip, data/synthbuster_download.sh).
SYNTHBUSTER_GENERATORS = (
    "dalle2", "dalle3", "firefly", "glide", "midjourney-v5", "stable-diffusion-1-3",
    "stable-diffusion-1-4", "stable-diffusion-2", "stable-diffusion-xl",
)  # fmt: skip
SYNTHBUSTER_REALS = ("real_RAISE_1k", "RAISE", "raise-1k", "raise_1k", "real")

WILDRF_PLATFORMS = ("reddit", "twitter", "facebook")


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


# ------------------------------------------------------------------------------- finders


@dataclass
class Found:
    """What the finders made of a root: the sets, and the folders they claimed (not to be
    scanned again as CNNSpot folders, nor flagged by check-data's layout rules)."""

    sets: list[TestSet]
    claimed: list[Path]


def _images(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    if not folder.is_dir():
        return [], []
    listing = scan_images(folder)
    return listing.images, listing.skipped


def _make_set(
    name: str, display: str, bench: str, real_dir: Path, fake_dir: Path, note: str = ""
) -> TestSet | None:
    real, skipped_r = _images(real_dir)
    fake, skipped_f = _images(fake_dir)
    if not real or not fake:
        missing = " and ".join(
            w for w, imgs in (("real", real), ("fake", fake)) if not imgs
        )  # one-sided sets cannot be scored
        log.warning("skipping test set '%s': no %s images (%s, %s)", name, missing, real_dir,
                    fake_dir)  # fmt: skip
        return None
    protocol = LAYOUTS[bench].protocol
    return TestSet(name, display, real, fake, note, skipped_r + skipped_f, bench, protocol)


def genimage_key(folder_name: str) -> str:
    """Canonical generator key of a GenImage folder name (unknown names: lower-cased)."""
    low = folder_name.lower().replace(" ", "_")
    for key, pattern in _GENIMAGE_KEYS:
        if pattern.search(low):
            return key
    return low


def _is_genimage_generator(folder: Path) -> bool:
    split = folder / GENIMAGE_SPLIT
    return (split / GENIMAGE_FAKE).is_dir() or (split / GENIMAGE_REAL).is_dir()


def _genimage_generators(folder: Path) -> list[Path]:
    """Generator folders (holding val/{ai,nature}) at ``folder``, its children or grandchildren
    (the archives unpack as ``<Generator>/imagenet_..._<gen>/val/ai``)."""
    if _is_genimage_generator(folder):
        return [folder]
    found = []
    for child in list_subdirs(folder):
        if _is_genimage_generator(child):
            found.append(child)
        else:
            found += [g for g in list_subdirs(child) if _is_genimage_generator(g)]
    return found


def find_genimage(root: Path, explicit: bool = False) -> Found | None:
    """GenImage generator folders (``<gen>/val/{ai,nature}``, at most two levels down); its
    layout is its own, so ``explicit`` changes nothing."""
    gens = _genimage_generators(root)
    if not gens:
        return None
    sets: list[TestSet] = []
    names: dict[str, Path] = {}
    for g in gens:
        key = genimage_key(g.name)
        if key not in GENIMAGE_KEYS_SET and g.parent != root:
            key = genimage_key(g.parent.name)  # e.g. Midjourney/<odd name>/val
        name = f"genimage/{key}"
        if name in names:
            raise DataError(
                f"two GenImage folders for generator {key!r}: {names[name]} and {g} — "
                "remove one or point data.test_root at one of them"
            )
        names[name] = g
        split = g / GENIMAGE_SPLIT
        ts = _make_set(
            name,
            f"GenImage {GENIMAGE_NAMES.get(key, key)}",
            "genimage",
            split / GENIMAGE_REAL,
            split / GENIMAGE_FAKE,
        )
        if ts:
            sets.append(ts)
    order = {k: i for i, k in enumerate(GENIMAGE_NAMES)}
    sets.sort(key=lambda s: (order.get(s.name.split("/", 1)[1], len(order)), s.name))
    return Found(sets, gens)


def _chameleon_split(folder: Path) -> Path | None:
    for cand in (folder / "test", folder):
        if (cand / REAL_DIR).is_dir() and (cand / FAKE_DIR).is_dir():
            return cand
    return None


def find_chameleon(root: Path, explicit: bool = False) -> Found | None:
    """``Chameleon/test/{0_real,1_fake}`` (also ``Chameleon/Chameleon/test``, or the ``test``
    folder itself). Without ``explicit`` the folder must be named Chameleon: its 0_real/1_fake
    layout alone is CNNSpot's."""
    candidates = [root, root / "Chameleon", root / "chameleon"]
    candidates += [c for c in list_subdirs(root) if c.name.lower() == "chameleon"]
    candidates += [g for c in candidates if c.is_dir() for g in list_subdirs(c)
                   if g.name.lower() == "chameleon"]  # fmt: skip
    for cand in dict.fromkeys(candidates):
        if not cand.is_dir():
            continue
        named = cand.name.lower() == "chameleon" or (
            cand.name == "test" and cand.resolve().parent.name.lower() == "chameleon"
        )
        split = _chameleon_split(cand)
        if split and (named or explicit):
            ts = _make_set(
                "chameleon", "Chameleon", "chameleon", split / REAL_DIR, split / FAKE_DIR
            )
            return Found([ts] if ts else [], [cand])
    return None


def find_synthbuster(root: Path, explicit: bool = False) -> Found | None:
    """A folder with Synthbuster's generator folders (``dalle2`` ...) and the RAISE-1k reals
    (``real_RAISE_1k``, as GRIP's download script unpacks them), at the root or one level down."""
    for folder in [root, *list_subdirs(root)]:
        gens = [folder / g for g in SYNTHBUSTER_GENERATORS if (folder / g).is_dir()]
        named = folder.name.lower() == "synthbuster"
        if not gens or not (named or explicit or len(gens) >= 2):
            continue
        reals = next((folder / r for r in SYNTHBUSTER_REALS if (folder / r).is_dir()), None)
        if reals is None:
            log.warning(
                "Synthbuster folder %s has no RAISE-1k reals (real_RAISE_1k/): its %d "
                "generator folder(s) are skipped — see clipflow-download-data "
                "benchmarks=[synthbuster]",
                folder,
                len(gens),
            )
            return Found([], gens)
        sets = [
            _make_set(f"synthbuster/{g.name}", f"Synthbuster {g.name}", "synthbuster", reals, g)
            for g in gens
        ]
        note = f"real images from {reals.name}"
        return Found([replace(s, note=note) for s in sets if s], [*gens, reals])
    return None


def find_wildrf(root: Path, explicit: bool = False) -> Found | None:
    """``WildRF/test/{reddit,twitter,facebook}/{0_real,1_fake}``: one set per platform."""
    for folder in [root, *list_subdirs(root)]:
        test = folder / "test"
        if folder == root and root.name == "test" and not test.is_dir():
            test = root  # data.test_root=.../WildRF/test
        platforms = [test / p for p in WILDRF_PLATFORMS if (test / p / FAKE_DIR).is_dir()]
        if not platforms:
            continue
        sets = [
            _make_set(
                f"wildrf/{p.name}",
                f"WildRF {p.name.capitalize()}",
                "wildrf",
                p / REAL_DIR,
                p / FAKE_DIR,
            )  # fmt: skip
            for p in platforms
        ]
        claimed = [folder / s for s in ("train", "val") if (folder / s).is_dir()] + [test]
        return Found([s for s in sets if s], claimed)
    return None


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
            found by :func:`clipflow.data.layouts.discover_test_sets`.
        known_counts: published (real, fake) counts per set name, for clipflow-check-data.
    """

    name: str
    display: str
    protocol: str
    find: Callable[[Path, bool], Found | None] | None
    known_counts: dict[str, KnownCount] = field(default_factory=dict)


# A new layout is one entry here (and its finder above); data.benchmark's choices follow.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            UNIVFD,
            "CNNSpot/UnivFD",
            "cnnspot-univfd: 0_real vs 1_fake per set (shared real pools for the diffusion sets)",
            None,
        ),
        Layout(
            "genimage",
            "GenImage",
            "genimage-val: val split, nature (real) vs ai (fake), per generator",
            find_genimage,
            _unverified([f"genimage/{key}" for key in GENIMAGE_NAMES], _GENIMAGE_SRC),
        ),
        Layout(
            "chameleon",
            "Chameleon",
            "chameleon-test: test/0_real vs test/1_fake, one set",
            find_chameleon,
            _unverified(["chameleon"], _CHAMELEON_SRC),
        ),
        Layout(
            "synthbuster",
            "Synthbuster",
            "synthbuster: RAISE-1k reals vs each generator's 1000 fakes",
            find_synthbuster,
            _synthbuster_counts(),
        ),
        Layout(
            "wildrf",
            "WildRF",
            "wildrf-test: test split, 0_real vs 1_fake per platform",
            find_wildrf,
            _unverified([f"wildrf/{p}" for p in WILDRF_PLATFORMS], _WILDRF_SRC),
        ),
    )
}
BENCHMARKS = tuple(name for name, layout in LAYOUTS.items() if layout.find is not None)
CHOICES = ("auto", *LAYOUTS)  # data.benchmark
KNOWN_COUNTS = {name: kc for layout in LAYOUTS.values() for name, kc in layout.known_counts.items()}


def find_modern(root: Path, benchmark: str = "auto") -> Found:
    """Every set of the modern layouts under ``root`` (``benchmark``: one of them, or auto)."""
    names = BENCHMARKS if benchmark == "auto" else (benchmark,)
    sets: list[TestSet] = []
    claimed: list[Path] = []
    for name in names:
        find = LAYOUTS[name].find
        found = find(root, benchmark == name) if find is not None else None
        if found:
            sets += found.sets
            claimed += found.claimed
    return Found(sets, claimed)


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


def discover_benchmark_sets(root: str | Path, benchmark: str = "auto") -> list[TestSet]:
    """Test sets under ``root`` for ``data.benchmark`` (see the module docstring).

    Raises:
        DataError: an unknown benchmark, a root without any set of the chosen layout(s).
    """
    root = Path(root)
    if benchmark not in CHOICES:
        raise DataError(f"data.benchmark={benchmark!r}: use one of {', '.join(CHOICES)}")
    if benchmark == UNIVFD:
        return tag_univfd(discover_test_sets(root))
    if not root.is_dir():
        return tag_univfd(discover_test_sets(root))  # its one-line error for a missing root
    found = find_modern(root, benchmark)
    if benchmark != "auto":
        if not found.sets:
            raise DataError(
                f"no {LAYOUTS[benchmark].display} set under {root} — expected the layout in "
                "docs/datasets.md (or data.benchmark=auto)"
            )
        return found.sets
    if not found.claimed:
        return tag_univfd(discover_test_sets(root))
    sets = list(found.sets)
    for child in _unclaimed(root, found.claimed):
        try:
            sets += tag_univfd(discover_test_sets(child))
        except DataError as err:  # a folder of other things next to the benchmarks
            log.info("not a test set folder: %s (%s)", child, err)
    if not sets:
        raise DataError(f"no usable test set under {root} (see warnings; docs/datasets.md)")
    check_unique(sets)
    return sets


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


def claimed_folders(root: Path, benchmark: str = "auto") -> list[Path]:
    """The folders the modern finders claim under ``root`` (for clipflow-check-data)."""
    if benchmark == UNIVFD or not Path(root).is_dir():
        return []
    return find_modern(Path(root), benchmark).claimed
