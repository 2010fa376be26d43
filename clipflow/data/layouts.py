"""Dataset discovery and sampling: which image files form which test set or training split.

Pure path logic: files are listed (:func:`clipflow.data.imageio.scan_images`), never opened.
Labels everywhere: 0 = real, 1 = fake. Layouts understood (SPEC §6, §8):

* CNNSpot: ``<gen>/0_real``, ``<gen>/1_fake``, or with a class level
  ``<gen>/<class>/{0_real,1_fake}`` (all classes pooled into one set named ``<gen>``);
* UnivFD diffusion sets: shared reals ``imagenet/0_real`` and ``laion/0_real``, generator
  folders with only ``1_fake`` (guided takes imagenet's reals, ldm_*/glide_*/dalle laion's);
* any user generator ``<name>/{0_real,1_fake}``; container folders holding the above.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from clipflow.errors import DataError

from .imageio import Listing, list_subdirs, scan_images

log = logging.getLogger(__name__)

REAL_DIR = "0_real"
FAKE_DIR = "1_fake"

PAPER_ORDER: tuple[str, ...] = (
    "progan", "cyclegan", "biggan", "stylegan", "gaugan", "stargan", "deepfake",
    "seeingdark", "san", "crn", "imle", "guided", "ldm_200", "ldm_200_cfg", "ldm_100",
    "glide_100_27", "glide_50_27", "glide_100_10", "dalle",
)  # fmt: skip
# The paper's grouping of its 19 sets (§IV: six GAN models; DeepFakes, the low-level vision and
# perceptual-loss models and DALL-E; the diffusion models Guided, LDM and Glide).
PAPER_FAMILIES: dict[str, tuple[str, ...]] = {
    "gan": ("progan", "cyclegan", "biggan", "stylegan", "gaugan", "stargan"),
    "diffusion": (
        "guided", "ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27",
        "glide_100_10",
    ),
    "other": ("deepfake", "seeingdark", "san", "crn", "imle", "dalle"),
}  # fmt: skip
# Other CNNSpot sets we recognise; they sort after the paper's 19.
KNOWN_SETS: tuple[str, ...] = PAPER_ORDER + ("stylegan2", "whichfaceisreal")

DISPLAY_NAMES: dict[str, str] = {
    "progan": "ProGAN", "cyclegan": "CycleGAN", "biggan": "BigGAN", "stylegan": "StyleGAN",
    "gaugan": "GauGAN", "stargan": "StarGAN", "deepfake": "DeepFakes", "seeingdark": "SITD",
    "san": "SAN", "crn": "CRN", "imle": "IMLE", "guided": "Guided", "ldm_200": "LDM_200",
    "ldm_200_cfg": "LDM_200_cfg", "ldm_100": "LDM_100", "glide_100_27": "Glide_100_27",
    "glide_50_27": "Glide_50_27", "glide_100_10": "Glide_100_10", "dalle": "DALL-E",
    "stylegan2": "StyleGAN2", "whichfaceisreal": "WFIR",
}  # fmt: skip

# Sets that carry a <class> level in the CNNSpot release (any set may have one, though).
CLASS_LEVEL_SETS = frozenset({"progan", "stylegan", "stylegan2", "cyclegan"})
# UnivFD's diffusion release: real images shared by several generator folders.
SHARED_REAL_POOLS: dict[str, list[str]] = {
    "imagenet": ["guided"],
    "laion": ["ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27",
              "glide_100_10", "dalle"],
}  # fmt: skip

# generator -> its shared real pool (UnivFD diffusion sets)
POOL_OF = {gen: pool for pool, gens in SHARED_REAL_POOLS.items() for gen in gens}
_KNOWN_NAMES = frozenset(KNOWN_SETS) | frozenset(SHARED_REAL_POOLS)
_ORDER = {name: i for i, name in enumerate(KNOWN_SETS)}
_MAX_CONTAINER_DEPTH = 2  # root/<container>/<container>/<set> at most
_TRAIN_HINT = "pass data.train_root=DIR (or data.val_root=DIR) with natural images"
_NO_SETS_HINT = (
    "expected <name>/0_real and <name>/1_fake (CNNSpot/UnivFD layout); see README 'Data layout'"
)


class NoTestSetError(DataError):
    """No 0_real/1_fake folder at all under a root (not: folders found but empty)."""


@dataclass
class TestSet:
    """One evaluation set: real (label 0) and fake (label 1) image paths."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    display_name: str
    real: list[Path]
    fake: list[Path]
    note: str = ""
    # Entries under 0_real/1_fake that are not scored, with the reason (symlinks that would
    # count an image twice or under the other label, FIFOs, unreadable folders ...).
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Which benchmark the set belongs to and how it is scored (clipflow.data.benchmarks);
    # empty for sets found by this module alone.
    benchmark: str = ""
    protocol: str = ""

    @property
    def n_real(self) -> int:
        return len(self.real)

    @property
    def n_fake(self) -> int:
        return len(self.fake)


# The fewest natural images a folder of training or calibration photos may hold (one to fit or
# calibrate on, one more: a split and a p-value both need two); clipflow-calibrate's
# min_reals rule starts here too, so no accepted setting can never succeed.
MIN_IMAGES = 2


@dataclass
class TrainSplit:
    """Natural images for training and for validation (disjoint), and train count per class."""

    train: list[Path]
    val: list[Path]
    classes: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # left out, with the reason


def display_name(name: str) -> str:
    """The paper's name of a set folder (unknown names display as themselves)."""
    return DISPLAY_NAMES.get(name, name)


def listing_skips(sets: list[TestSet]) -> list[tuple[str, str]]:
    """The entries discovery left out of ``sets``, each once (sets share real pools)."""
    return list(dict.fromkeys((str(p), r) for ts in sets for p, r in ts.skipped))


# --------------------------------------------------------------------------- test sets


@dataclass
class _Found:
    """A folder that looks like a test set: ``holders`` are the folders with 0_real/1_fake."""

    name: str
    path: Path
    holders: list[Path]

    def images(self, split: str, foreign: list[Path]) -> Listing:
        """The ``split`` images of every holder; nothing from a ``foreign`` folder."""
        out = Listing([])
        for h in self.holders:
            if (h / split).is_dir():
                part = scan_images(h / split, foreign=foreign)
                out.images += part.images
                out.skipped += part.skipped
        return out

    def is_pool(self) -> bool:
        only_real = (self.path / REAL_DIR).is_dir() and not (self.path / FAKE_DIR).is_dir()
        return self.name in SHARED_REAL_POOLS and self.holders == [self.path] and only_real


def discover_test_sets(root: str | os.PathLike) -> list[TestSet]:
    """Find every test set under ``root`` (CNNSpot, UnivFD, plain and container layouts).

    Root's children are sets (a folder with 0_real/1_fake, or with classes holding them)
    or containers of sets. A folder whose sub-folders hold 0_real/1_fake is a container
    if any of those names is a known set or pool name, else a class-level set. A root
    that itself holds 0_real/1_fake is one set named after it; so is a root with a known
    set name whose sub-folders are classes (``.../progan``). Sets without fakes, or
    without reals and no shared pool to take them from, are skipped with a warning.

    Returns:
        Sets in paper order (then stylegan2, whichfaceisreal), then others by name.

    Raises:
        DataError: root missing or not a folder, no set found, two sets with one name,
            or every set empty or unpaired.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root} — pass data.test_root=DIR")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root} — pass data.test_root=DIR")
    found: dict[str, _Found] = {}
    name = root.resolve().name or str(root)
    classes = _class_holders(root) if name in KNOWN_SETS else None
    if _has_split(root):
        found[name] = _Found(name, root, [root])
    elif classes:  # e.g. test_root=.../progan: one set, not one set per class
        found[name] = _Found(name, root, classes)
    else:
        _scan(root, 0, found)
    if not found:
        raise NoTestSetError(f"no 0_real/1_fake folders under {root} — {_NO_SETS_HINT}")
    sets = _resolve_sets(found)
    if not sets:
        raise DataError(
            f"no usable test set under {root}: {len(found)} folder(s) found but all are empty "
            f"or lack real or fake images (see warnings) — {_NO_SETS_HINT}"
        )
    sets.sort(key=lambda s: (0, _ORDER[s.name], "") if s.name in _ORDER else (1, 0, s.name))
    log.info("found %d test set(s) under %s: %s", len(sets), root, [s.name for s in sets])
    return sets


def _has_split(folder: Path) -> bool:
    return (folder / REAL_DIR).is_dir() or (folder / FAKE_DIR).is_dir()


def _scan(folder: Path, depth: int, found: dict[str, _Found]) -> None:
    """Record the sets among ``folder``'s children, recursing into containers."""
    for child in list_subdirs(folder):
        if _has_split(child):
            _add(found, _Found(child.name, child, [child]))
            continue
        classes = _class_holders(child)
        if classes:
            _add(found, _Found(child.name, child, classes))  # <gen>/<class>/{0_real,1_fake}
        elif depth < _MAX_CONTAINER_DEPTH:
            _scan(child, depth + 1, found)  # a container such as CNN_synth_testset/


def _class_holders(folder: Path) -> list[Path] | None:
    """The class folders of a class-level set, or None if ``folder`` is not one.

    Sub-folders holding 0_real/1_fake make ``folder`` a container when any of them has a
    known set or pool name (CNN_synth_testset/biggan), else a class-level set
    (progan/airplane).
    """
    holders = [g for g in list_subdirs(folder) if _has_split(g)]
    if holders and not any(g.name in _KNOWN_NAMES for g in holders):
        return holders
    return None


def _add(found: dict[str, _Found], item: _Found) -> None:
    if item.name in found:
        raise DataError(
            f"two test sets named '{item.name}': {found[item.name].path} and {item.path} "
            "— remove or rename one, or point data.test_root at one of their parents"
        )
    found[item.name] = item


def _resolve_sets(found: dict[str, _Found]) -> list[TestSet]:
    """Turn found folders into TestSets, giving 1_fake-only sets the reals of their pool."""
    pools = {name: item for name, item in found.items() if item.is_pool()}
    pool_images: dict[str, Listing] = {}
    # A symlink must never make an image count under the other label: a real listing
    # refuses every 1_fake folder found, a fake listing every 0_real folder.
    other = {REAL_DIR: _label_dirs(found, FAKE_DIR), FAKE_DIR: _label_dirs(found, REAL_DIR)}
    sets = []
    for name, item in found.items():
        if name in pools:
            continue
        reals, fakes = (
            item.images(REAL_DIR, other[REAL_DIR]),
            item.images(FAKE_DIR, other[FAKE_DIR]),
        )
        real, fake, note = reals.images, fakes.images, ""
        skipped = reals.skipped + fakes.skipped
        if not fake:
            what = "0_real and 1_fake hold no images" if not real else "1_fake holds no images"
            log.warning("skipping test set '%s' (%s): %s", name, item.path, what)
            continue
        if not real:
            pool = _pick_pool(name, item.path, pools)
            if pool is None:
                continue
            if pool not in pool_images:
                pool_images[pool] = pools[pool].images(REAL_DIR, other[REAL_DIR])
            real = list(pool_images[pool].images)
            skipped += pool_images[pool].skipped
            if not real:
                log.warning("skipping test set '%s': shared pool %s/0_real is empty",
                            name, pools[pool].path)  # fmt: skip
                continue
            note = f"real images from the shared pool {pool}/0_real"
            if name not in POOL_OF:
                note = f"unknown set with only 1_fake: {note} (the only pool found)"
        if len(item.holders) > 1:
            log.info("test set '%s': pooled %d classes", name, len(item.holders))
        if skipped:
            log.warning("test set '%s': %d entries left out (e.g. %s: %s); see skipped.txt",
                           name, len(skipped), *skipped[0])  # fmt: skip
        sets.append(TestSet(name, display_name(name), real, fake, note, skipped))
    return sets


def _label_dirs(found: dict[str, _Found], label: str) -> list[Path]:
    """Every ``label`` folder of the found sets and pools."""
    return [h / label for item in found.values() for h in item.holders if (h / label).is_dir()]


def _pick_pool(name: str, path: Path, pools: dict[str, _Found]) -> str | None:
    """The shared real pool a set without reals should use, or None (warning logged)."""
    wanted = POOL_OF.get(name)
    if wanted is not None:
        if wanted in pools:
            return wanted
        log.warning(
            "skipping test set '%s' (%s): it has no real images and its shared pool "
            "'%s/0_real' was not found — put UnivFD's %s/0_real next to it",
            name, path, wanted, wanted,
        )  # fmt: skip
        return None
    if len(pools) == 1:
        return next(iter(pools))
    why = f"several shared pools ({', '.join(sorted(pools))}) fit" if pools else "no shared pool"
    log.warning(
        "skipping test set '%s' (%s): it has no real images and %s — add %s/0_real",
        name, path, why, name,
    )  # fmt: skip
    return None


def univfd_sample(ts: TestSet, max_per_class: int | None = 1000, seed: int = 0) -> TestSet:
    """UnivFD's evaluation sampling (SPEC §8): at most ``max_per_class`` real and fake.

    Both lists are shuffled with one ``random.Random(seed)`` (reals first, then fakes, as
    UnivFD shuffles after seeding) and the first k of each kept.

    Quirk, reproduced on purpose: if ``max_per_class`` exceeds the number of real OR
    fake images, UnivFD silently falls back to k = 100 for both (so a set with 999
    fakes is evaluated on 100 + 100). We keep that to match its numbers, but log a
    warning and say so in the returned set's ``note``. ``None`` keeps every image.
    """
    if max_per_class is None:
        return replace(ts, real=list(ts.real), fake=list(ts.fake))
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    k, note = max_per_class, ts.note
    if k > ts.n_real or k > ts.n_fake:
        quirk = (
            f"UnivFD sampling fell back from {k} to 100 per class "
            f"({ts.n_real} real / {ts.n_fake} fake < {k})"
        )
        log.warning("test set '%s': %s", ts.name, quirk)
        note = f"{note}; {quirk}" if note else quirk
        k = 100
    rng = random.Random(seed)
    real, fake = list(ts.real), list(ts.fake)
    rng.shuffle(real)
    rng.shuffle(fake)
    return replace(ts, real=real[:k], fake=fake[:k], note=note)


# ----------------------------------------------------------------------- training data


def discover_train_images(
    root: str | os.PathLike,
    per_class: int | None = 360,
    val_fraction: float = 0.1,
    seed: int = 0,
    setting: str = "data.train_root",
) -> TrainSplit:
    """Natural images for training (never anything under a ``1_fake`` folder). ``setting``:
    the key an error tells the user to change (clipflow-calibrate reads ``data.real_root``).

    Layouts: (a) ``<root>/<class>/0_real`` (CNNSpot progan_train); (b) ``<root>/0_real``,
    one class; (c) any folder of images, one class named after the root (only images
    under ``0_real`` folders if there are any; ``1_fake`` subtrees always skipped).

    Per class, images are shuffled with ``random.Random(f"{seed}-{class}")`` (so the pick
    does not depend on which other classes exist); the first
    n_val = max(1, round(val_fraction * min(per_class, n))) go to ``val``, the next
    ``per_class`` to ``train`` (fewer, with a warning, in a small class). At least one
    image per class stays in ``train``. ``per_class=None`` uses all; ``val_fraction=0``
    gives an empty ``val``.

    Raises:
        DataError: root missing, not a folder, inside a 1_fake folder, or with fewer
            than 2 natural images.
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    hint = _root_hint(setting)
    _check_train_root(root, hint)
    groups, skipped = _natural_groups(root)
    total = sum(len(v) for v in groups.values())
    if total < MIN_IMAGES:
        found = "no natural images" if total == 0 else "only 1 natural image"
        raise DataError(
            f"{found} under {root} — at least {MIN_IMAGES} are needed: put them in <class>/0_real "
            f"(CNNSpot progan_train), 0_real/, or a plain folder; {hint}"
        )
    split = TrainSplit(train=[], val=[], classes={}, skipped=skipped)
    for cls, images in groups.items():
        if not images:
            log.warning("class '%s' has no natural images; skipped", cls)
            continue
        train, val = _split_class(cls, images, per_class, val_fraction, seed)
        split.train.extend(train)
        split.val.extend(val)
        split.classes[cls] = len(train)
    log.info("training data under %s: %d train / %d val images, %d class(es)",
             root, len(split.train), len(split.val), len(split.classes))  # fmt: skip
    return split


def _root_hint(setting: str) -> str:
    if setting == "data.train_root":
        return _TRAIN_HINT
    return f"pass {setting}=DIR with natural images"


def _check_train_root(root: Path, hint: str) -> None:
    if not root.exists():
        raise DataError(f"natural-image folder not found: {root} — {hint}")
    if not root.is_dir():
        raise DataError(f"natural-image path is not a folder: {root} — {hint}")
    if FAKE_DIR in root.absolute().parts or FAKE_DIR in root.resolve().parts:
        raise DataError(
            f"natural-image folder {root} is inside a 1_fake folder — only natural images "
            f"are used; {hint}"
        )


def _natural_groups(root: Path) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Natural image paths per class name, for the three layouts; entries left out + why."""
    own_name = root.resolve().name or "images"
    skipped: list[tuple[Path, str]] = []

    def listed(folder: Path) -> list[Path]:
        listing = scan_images(folder)
        skipped.extend(listing.skipped)
        return listing.images

    if (root / REAL_DIR).is_dir():  # (b)
        groups = {own_name: listed(root / REAL_DIR)}
    else:
        classes = [c for c in list_subdirs(root) if c.name != FAKE_DIR and (c / REAL_DIR).is_dir()]
        if classes:  # (a)
            groups = {c.name: listed(c / REAL_DIR) for c in classes}
        else:  # (c)
            images = listed(root)
            under_real = [p for p in images if REAL_DIR in p.relative_to(root).parts]
            groups = {own_name: under_real or images}
    realpaths: dict[Path, str] = {}
    natural = {}
    for cls, images in groups.items():
        natural[cls] = [p for p in images if _is_natural(p, root, realpaths)]
        if len(natural[cls]) < len(images):
            log.info("class '%s': left out %d image(s) under 1_fake",
                        cls, len(images) - len(natural[cls]))  # fmt: skip
        # Under a 1_fake folder by name is the layout's rule; reached there through a
        # symbolic link is a surprise worth a line in skipped_train.txt.
        keep = set(natural[cls])
        skipped += [
            (p, "symbolic link into a 1_fake folder; training uses natural images only")
            for p in images
            if p not in keep and FAKE_DIR not in p.relative_to(root).parts
        ]
    if skipped:
        log.warning("%d entries under %s left out (e.g. %s: %s)", len(skipped), root,
                       *skipped[0])  # fmt: skip
    return natural, skipped


def _is_natural(path: Path, root: Path, realpaths: dict[Path, str]) -> bool:
    """False for anything under a 1_fake folder, by its path or where a symlink leads."""
    if FAKE_DIR in path.relative_to(root).parts:
        return False
    parent = realpaths.get(path.parent)
    if parent is None:  # one realpath per folder, not per file
        parent = realpaths[path.parent] = os.path.realpath(path.parent)
    if FAKE_DIR in Path(parent).parts:
        return False
    return not (path.is_symlink() and FAKE_DIR in Path(os.path.realpath(path)).parts)


def _split_class(
    cls: str, images: list[Path], per_class: int | None, val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Seeded (train, val) pick of one class; both sorted, disjoint."""
    n = len(images)
    shuffled = list(images)
    random.Random(f"{seed}-{cls}").shuffle(shuffled)
    base = n if per_class is None else min(per_class, n)
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * base))
    n_val = min(n_val, n - 1)  # never leave a class with nothing to train on
    n_train = n - n_val if per_class is None else min(per_class, n - n_val)
    if per_class is not None and n_train < per_class:
        log.warning("class '%s' has %d natural images: %d for training (asked %d), %d for "
                    "validation", cls, n, n_train, per_class, n_val)  # fmt: skip
    val = shuffled[:n_val]
    train = shuffled[n_val : n_val + n_train]
    # Sort on parts: Path's own ordering differs across Python versions.
    return sorted(train, key=lambda p: p.parts), sorted(val, key=lambda p: p.parts)
