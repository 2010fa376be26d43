"""Test-set discovery and sampling: which image files form which test set.

Pure path logic: files are listed (:func:`clipflow.data.imageio.scan_images`), never opened.
Labels everywhere: 0 = real, 1 = fake. Layouts understood (SPEC §6, §8):

* CNNSpot: ``<gen>/0_real``, ``<gen>/1_fake``, or with a class level
  ``<gen>/<class>/{0_real,1_fake}`` (all classes pooled into one set named ``<gen>``);
* UnivFD diffusion sets: shared reals ``imagenet/0_real`` and ``laion/0_real``, generator
  folders with only ``1_fake`` (guided takes imagenet's reals, ldm_*/glide_*/dalle laion's);
* any user generator ``<name>/{0_real,1_fake}``; container folders holding the above.

:func:`univfd_sample` is UnivFD's evaluation sampling of a found set.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from clipflow.errors import DataError

from .imageio import Listing, list_subdirs, scan_images
from .layouts import (
    FAKE_DIR,
    KNOWN_SETS,
    POOL_OF,
    REAL_DIR,
    SHARED_REAL_POOLS,
    TestSet,
    display_name,
)

log = logging.getLogger(__name__)

_KNOWN_NAMES = frozenset(KNOWN_SETS) | frozenset(SHARED_REAL_POOLS)
_ORDER = {name: i for i, name in enumerate(KNOWN_SETS)}
_MAX_CONTAINER_DEPTH = 2  # root/<container>/<container>/<set> at most
_NO_SETS_HINT = (
    "expected <name>/0_real and <name>/1_fake (CNNSpot/UnivFD layout); see README 'Data layout'"
)


class NoTestSetError(DataError):
    """No 0_real/1_fake folder at all under a root (not: folders found but empty)."""


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
