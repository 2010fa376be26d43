"""The natural training images: which files train the flow and which set its threshold.

Pure path logic, as for the test sets: files are listed, never opened, and nothing under a
``1_fake`` folder (by its path or where a symlink leads) is ever used. Layouts, and the
seeded per-class split into train and validation: :func:`discover_train_images`.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from clipflow.errors import DataError

from .imageio import list_subdirs, scan_images
from .layouts import FAKE_DIR, REAL_DIR

log = logging.getLogger(__name__)

_TRAIN_HINT = "pass data.train_root=DIR (or data.val_root=DIR) with natural images"

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
