"""The finders of today's benchmarks: each turns one published folder layout into test sets.

One finder per benchmark (GenImage, Chameleon, Synthbuster, WildRF); the record that ties a
finder to its name, protocol, counts and documented placements is
:class:`clipflow.data.benchmarks.Layout`. A finder also records every part of a tree it
recognised but cannot score (a GenImage generator with only ``ai``, Synthbuster without its
RAISE reals, a WildRF platform without ``1_fake``, a WildRF tree without ``test``), each
with the advice of its own layout: clipflow-eval lists them in skipped.txt,
clipflow-check-data as errors.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from .imageio import list_subdirs, scan_images
from .layouts import FAKE_DIR, REAL_DIR, TestSet

log = logging.getLogger(__name__)

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
GENIMAGE_SPLIT, GENIMAGE_TRAIN = "val", "train"
GENIMAGE_REAL, GENIMAGE_FAKE = "nature", "ai"
# benchmark folder -> generator folder: <Gen>/imagenet_*/val at most, and the placement of
# clipflow-download-data (data/benchmarks/genimage/<Gen>/imagenet_*/val) is one level more
_GENIMAGE_DEPTH = 3

# The folder each benchmark is unpacked into under data/benchmarks (clipflow-download-data's
# steps); matched without regard to letter case.
GENIMAGE_DIR, CHAMELEON_DIR, SYNTHBUSTER_DIR, WILDRF_DIR = (
    "genimage", "Chameleon", "synthbuster", "WildRF"
)  # fmt: skip

# Synthbuster (Zenodo 10066460 + GRIP's real_RAISE_1k.zip, data/synthbuster_download.sh).
SYNTHBUSTER_GENERATORS = (
    "dalle2", "dalle3", "firefly", "glide", "midjourney-v5", "stable-diffusion-1-3",
    "stable-diffusion-1-4", "stable-diffusion-2", "stable-diffusion-xl",
)  # fmt: skip
SYNTHBUSTER_REALS = ("real_RAISE_1k", "RAISE", "raise-1k", "raise_1k", "real")

WILDRF_PLATFORMS = ("reddit", "twitter", "facebook")
WILDRF_TEST, WILDRF_TRAIN_SPLITS = "test", ("train", "val")


@dataclass
class Found:
    """What the finders made of a root: the sets, the folders they claimed (not to be scanned
    again as CNNSpot folders, nor flagged by check-data's CNNSpot rules), and the parts of a
    recognised tree that are missing or unusable, each ``(folder, reason)``."""

    sets: list[TestSet] = field(default_factory=list)
    claimed: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skip(self, folder: Path, reason: str) -> None:
        log.warning("not scored: %s — %s", folder, reason)
        self.skipped.append((folder, reason))

    def pair(self, name: str, display: str, bench: str, real: Path, fake: Path) -> None:
        """The set ``real`` vs ``fake``, or a skip naming the side that has no image."""
        real_images, skipped_r = _images(real)
        fake_images, skipped_f = _images(fake)
        for folder, images, what in ((real, real_images, "real"), (fake, fake_images, "fake")):
            if not images:
                part = f"{folder.parent.name}/{folder.name}/ ({what} images)"
                state = "is missing" if not folder.is_dir() else "holds no images"
                self.skip(folder, f"{display}: {part} {state} — put them there; until then "
                                  f"{display} is not scored")  # fmt: skip
        if real_images and fake_images:
            skipped = skipped_r + skipped_f
            self.sets.append(TestSet(name, display, real_images, fake_images, "", skipped, bench))


def _images(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    if not folder.is_dir():
        return [], []
    listing = scan_images(folder)
    return listing.images, listing.skipped


def _named(folder: Path, name: str) -> bool:
    return folder.name.lower() == name.lower()


# ------------------------------------------------------------------------------- GenImage


def genimage_key(folder_name: str) -> str:
    """Canonical generator key of a GenImage folder name (unknown names: lower-cased)."""
    low = folder_name.lower().replace(" ", "_")
    for key, pattern in _GENIMAGE_KEYS:
        if pattern.search(low):
            return key
    return low


def _is_genimage_generator(folder: Path) -> bool:
    """Holds {val,train}/{ai,nature} (even in part: an incomplete generator is named)."""
    return any(
        (folder / split / part).is_dir()
        for split in (GENIMAGE_SPLIT, GENIMAGE_TRAIN)
        for part in (GENIMAGE_FAKE, GENIMAGE_REAL)
    )


def _genimage_generators(folder: Path, depth: int = _GENIMAGE_DEPTH) -> list[Path]:
    """Generator folders at ``folder`` or up to ``depth`` levels below it."""
    if _is_genimage_generator(folder):
        return [folder]
    if depth == 0:
        return []
    return [g for child in list_subdirs(folder) for g in _genimage_generators(child, depth - 1)]


def find_genimage(root: Path, explicit: bool = False) -> Found | None:
    """GenImage generator folders (``[genimage/]<Gen>/[imagenet_*/]val/{ai,nature}``); its
    layout is its own, so ``explicit`` changes nothing. ``train`` is never read."""
    gens = _genimage_generators(root)
    if not gens:
        return None
    found = Found(claimed=gens)
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
        display = f"GenImage {GENIMAGE_NAMES.get(key, key)}"
        split = g / GENIMAGE_SPLIT
        if not split.is_dir():
            why = "only train/ is there, and train is never scored"
            found.skip(split, f"{display}: val/ is missing ({why}) — unpack its val/{{ai,nature}}")
            continue
        found.pair(name, display, "genimage", split / GENIMAGE_REAL, split / GENIMAGE_FAKE)
    order = {k: i for i, k in enumerate(GENIMAGE_NAMES)}
    found.sets.sort(key=lambda s: (order.get(s.name.split("/", 1)[1], len(order)), s.name))
    return found


# ------------------------------------------------------------------------------- Chameleon


def find_chameleon(root: Path, explicit: bool = False) -> Found | None:
    """``Chameleon/test/{0_real,1_fake}`` (also ``Chameleon/Chameleon/test``, or the ``test``
    folder itself). Without ``explicit`` the folder must be named Chameleon: its 0_real/1_fake
    layout alone is CNNSpot's."""
    candidates = [root, *[c for c in list_subdirs(root) if _named(c, CHAMELEON_DIR)]]
    candidates += [g for c in candidates[1:] for g in list_subdirs(c) if _named(g, CHAMELEON_DIR)]
    for cand in dict.fromkeys(candidates):
        named = _named(cand, CHAMELEON_DIR) or (
            cand.name == "test" and _named(cand.resolve().parent, CHAMELEON_DIR)
        )
        if not (named or explicit):
            continue
        for split in (cand / "test", cand):
            if (split / REAL_DIR).is_dir() or (split / FAKE_DIR).is_dir():
                found = Found(claimed=[cand])
                found.pair("chameleon", "Chameleon", "chameleon", split / REAL_DIR,
                           split / FAKE_DIR)  # fmt: skip
                return found
        if named and not any(_named(g, CHAMELEON_DIR) for g in list_subdirs(cand)):
            found = Found(claimed=[cand])
            found.skip(cand / "test", "Chameleon: test/{0_real,1_fake} is missing")
            return found
    return None


# ------------------------------------------------------------------------------- Synthbuster


def find_synthbuster(root: Path, explicit: bool = False) -> Found | None:
    """A folder with Synthbuster's generator folders (``dalle2`` ...) and the RAISE-1k reals
    (``real_RAISE_1k``, as GRIP's download script unpacks them), at the root or one level down."""
    for folder in [root, *list_subdirs(root)]:
        gens = [folder / g for g in SYNTHBUSTER_GENERATORS if (folder / g).is_dir()]
        reals = next((folder / r for r in SYNTHBUSTER_REALS if (folder / r).is_dir()), None)
        named = _named(folder, SYNTHBUSTER_DIR)
        if not (gens or (named and reals)) or not (named or explicit or len(gens) >= 2):
            continue
        found = Found(claimed=[*gens, *([reals] if reals else [])])
        if reals is None:  # nothing to score, but each part named
            found.skip(
                folder / SYNTHBUSTER_REALS[0],
                f"Synthbuster: the RAISE-1k reals ({SYNTHBUSTER_REALS[0]}/) are missing, so its "
                f"{len(gens)} generator folder(s) ({', '.join(g.name for g in gens)}) are not "
                "scored — clipflow-download-data benchmarks=[synthbuster] shows how to get them",
            )
            return found
        if not gens:
            names = ", ".join(SYNTHBUSTER_GENERATORS)
            found.skip(folder, f"Synthbuster: no generator folder ({names}) beside {reals.name}/")
        for g in gens:
            found.pair(f"synthbuster/{g.name}", f"Synthbuster {g.name}", "synthbuster", reals, g)
        found.sets = [replace(s, note=f"real images from {reals.name}") for s in found.sets]
        return found
    return None


# ------------------------------------------------------------------------------- WildRF


def _wildrf_platforms(test: Path) -> list[Path]:
    return [test / p for p in WILDRF_PLATFORMS if (test / p).is_dir()]


def find_wildrf(root: Path, explicit: bool = False) -> Found | None:
    """``WildRF/test/{reddit,twitter,facebook}/{0_real,1_fake}``: one set per platform.
    ``train``/``val`` are never scored: a WildRF tree without ``test`` gives no set, only the
    reason."""
    for folder in [root, *list_subdirs(root)]:
        test = folder / WILDRF_TEST
        if folder == root and root.name == WILDRF_TEST and not test.is_dir():
            test = root  # data.test_root=.../WildRF/test
        splits = [folder / s for s in WILDRF_TRAIN_SPLITS if (folder / s).is_dir()]
        platforms = _wildrf_platforms(test)
        if not platforms:
            if (_named(folder, WILDRF_DIR) or explicit) and any(
                (s / REAL_DIR).is_dir() or (s / FAKE_DIR).is_dir() for s in splits
            ):
                found = Found(claimed=splits)
                found.skip(test, "WildRF: test/{reddit,twitter,facebook}/{0_real,1_fake} is "
                                 "missing; train/ and val/ are never scored (the paper's "
                                 "training data)")  # fmt: skip
                return found
            continue
        found = Found(claimed=[*splits, test])
        for p in (test / name for name in WILDRF_PLATFORMS):
            display = f"WildRF {p.name.capitalize()}"
            if not p.is_dir():
                found.skip(p, f"{display}: {WILDRF_TEST}/{p.name}/ is missing; not scored")
                continue
            found.pair(f"wildrf/{p.name}", display, "wildrf", p / REAL_DIR, p / FAKE_DIR)
        return found
    return None
