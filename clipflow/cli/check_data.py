"""clipflow-check-data data.test_root=DIR [data.train_root=DIR] [data.val_root=DIR] [extra_roots=[DIR]] [strict=true]

Prints every test set's real/fake counts next to the counts of the public release (SPEC §8),
and flags what would silently change a result: one of the paper's 19 sets missing, empty
``0_real``/``1_fake`` folders, images lying directly in a set folder instead of its
``0_real``/``1_fake``, generator folders whose reals cannot be found. Counts that differ from
the release are warnings (``strict=true`` makes them errors too).

Exit codes: 0 all good (warnings allowed), 1 something is wrong, 2 usage error.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from ..data import (
    _POOL_OF,
    FAKE_DIR,
    PAPER_ORDER,
    REAL_DIR,
    SHARED_REAL_POOLS,
    TestSet,
    discover_test_sets,
    display_name,
)
from ..errors import ClipflowError, DataError
from ..imageio import is_image_file, list_images, list_subdirs
from .common import guarded

# (real, fake) of the public releases (SPEC §8); UnivFD's diffusion sets: 1,000 fakes each,
# with 1,000 reals in the shared pool.
KNOWN_COUNTS: dict[str, tuple[int, int]] = {
    "biggan": (2000, 2000), "crn": (6382, 6382), "deepfake": (2707, 2698), "gaugan": (5000, 5000),
    "imle": (6382, 6382), "seeingdark": (180, 180),
    **{gen: (1000, 1000) for gens in SHARED_REAL_POOLS.values() for gen in gens},
}  # fmt: skip
PAPER_PER_CLASS = 360  # natural training images the paper samples per class
_SPLITS = (REAL_DIR, FAKE_DIR)
_MAX_DEPTH = 5


@dataclass
class Finding:
    level: str  # error | warning
    message: str


@dataclass
class SetRow:
    name: str
    layout: str
    n_real: int | None
    n_fake: int | None
    expected: tuple[int, int] | None
    status: str


def _layout(ts: TestSet) -> str:
    if ts.note:
        return ts.note.replace("real images from the ", "reals: ")
    classes = {p.parent.parent for p in ts.fake}
    return f"class level ({len(classes)} classes)" if len(classes) > 1 else "own 0_real/1_fake"


def check_test_root(root: Path, extra: bool = False) -> tuple[list[SetRow], list[Finding]]:
    """Per-set rows and findings for a benchmark root (``extra``: user folders, no 19-set check)."""
    findings = structural_findings(root)
    try:
        sets = discover_test_sets(root)
    except DataError as err:
        return [], findings + [Finding("error", str(err))]
    found = {ts.name: ts for ts in sets}
    rows = [_set_row(ts, findings) for ts in sets]
    if not extra:
        for name in PAPER_ORDER:
            if name not in found:
                rows.append(SetRow(name, "—", None, None, KNOWN_COUNTS.get(name), "MISSING"))
                findings.append(
                    Finding("error", f"{name} ({display_name(name)}): not found under {root}")
                )
        order = {n: i for i, n in enumerate(PAPER_ORDER)}
        rows.sort(key=lambda r: order.get(r.name, len(order)))
    return rows, findings


def _set_row(ts: TestSet, findings: list[Finding]) -> SetRow:
    expected = KNOWN_COUNTS.get(ts.name)
    status = "ok" if expected else "present"  # present: no published count to compare with
    if expected and (ts.n_real, ts.n_fake) != expected:
        status = "counts differ"
        findings.append(
            Finding(
                "warning",
                f"{ts.name}: {ts.n_real} real / {ts.n_fake} fake, the release has "
                f"{expected[0]} / {expected[1]} (partial download or unpacking?)",
            )
        )
    return SetRow(ts.name, _layout(ts), ts.n_real, ts.n_fake, expected, status)


def structural_findings(root: Path) -> list[Finding]:
    """Empty split folders, images lying outside 0_real/1_fake, unpaired generator folders."""
    findings: list[Finding] = []
    for folder, _ in _walk(root):
        subdirs = {d.name for d in list_subdirs(folder)}
        if folder.name in _SPLITS:
            if not list_images(folder):
                findings.append(Finding("error", f"empty folder: {folder}"))
            continue
        loose = [e for e in os.scandir(folder) if e.is_file() and is_image_file(e.name)]
        if loose:
            findings.append(
                Finding(
                    "error",
                    f"mis-laid: {len(loose)} image(s) directly in {folder} — "
                    f"put them in {folder}/{REAL_DIR} or {folder}/{FAKE_DIR}",
                )
            )
        if FAKE_DIR in subdirs and REAL_DIR not in subdirs and folder.name not in _POOL_OF:
            findings.append(
                Finding(
                    "warning",
                    f"{folder} has {FAKE_DIR} but no {REAL_DIR}: its reals must come "
                    f"from a shared pool ({', '.join(sorted(SHARED_REAL_POOLS))})",
                )
            )
    return findings


def _walk(root: Path):
    """(folder, depth) for every folder under root, not descending into 0_real/1_fake."""
    stack = [(Path(root), 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder, depth
        if folder.name in _SPLITS or depth >= _MAX_DEPTH:
            continue
        stack += [(d, depth + 1) for d in reversed(list_subdirs(folder))]


def check_train_root(root: Path, what: str) -> tuple[list[tuple[str, int, int]], list[Finding]]:
    """Per-class (class, n_real, n_fake) of a ``<class>/{0_real,1_fake}`` training/validation root."""
    if not root.is_dir():
        return [], [Finding("error", f"{what}: folder not found: {root}")]
    classes = [c for c in list_subdirs(root) if (c / REAL_DIR).is_dir() or (c / FAKE_DIR).is_dir()]
    if (root / REAL_DIR).is_dir():
        classes = [root]
    rows = [(c.name, _count(c / REAL_DIR), _count(c / FAKE_DIR)) for c in classes]
    findings = (
        [] if rows else [Finding("error", f"{what}: no <class>/{REAL_DIR} folders under {root}")]
    )
    for name, n_real, _ in rows:
        if n_real == 0:
            findings.append(
                Finding("error", f"{what}: class {name} has no natural images in {REAL_DIR}")
            )
        elif what == "train_root" and n_real < PAPER_PER_CLASS:
            findings.append(
                Finding(
                    "warning",
                    f"train_root: class {name} has {n_real} natural images; the paper "
                    f"samples {PAPER_PER_CLASS} per class",
                )
            )
    if what == "train_root" and rows and len(rows) != 20:
        findings.append(
            Finding("warning", f"train_root: {len(rows)} classes; the paper's ProGAN set has 20")
        )
    return rows, findings


def _count(folder: Path) -> int:
    return len(list_images(folder)) if folder.is_dir() else 0


def format_sets(root: Path, rows: list[SetRow]) -> str:
    def cell(n: int | None, k: int | None) -> str:
        return f"{'—' if n is None else n} ({'—' if k is None else k})"

    lines = [
        f"test sets under {root}:",
        f"  {'set':14s} {'real (release)':>16s} {'fake (release)':>16s}  {'status':14s} layout",
    ]
    for r in rows:
        exp = r.expected or (None, None)
        lines.append(
            f"  {r.name:14s} {cell(r.n_real, exp[0]):>16s} {cell(r.n_fake, exp[1]):>16s}  "
            f"{r.status:14s} {r.layout}"
        )
    return "\n".join(lines)


def run_check(argv: list[str], out=sys.stdout) -> int:
    """Check the roots named in ``argv``; print the report; return the exit code."""
    args = _parse(argv)
    if not any(
        args.get(k) for k in ("data.test_root", "data.train_root", "data.val_root", "extra_roots")
    ):
        raise ClipflowError(
            "nothing to check — pass data.test_root=DIR (and/or data.train_root, data.val_root)"
        )
    findings: list[Finding] = []
    if args.get("data.test_root"):
        rows, f = check_test_root(Path(args["data.test_root"]))
        print(format_sets(Path(args["data.test_root"]), rows), file=out)
        findings += f
    for root in args.get("extra_roots") or []:
        rows, f = check_test_root(Path(root), extra=True)
        print(format_sets(Path(root), rows), file=out)
        findings += f
    for key in ("data.train_root", "data.val_root"):
        if args.get(key):
            classes, f = check_train_root(Path(args[key]), key.split(".")[1])
            total = (sum(c[1] for c in classes), sum(c[2] for c in classes))
            print(
                f"{key.split('.')[1]} {args[key]}: {len(classes)} classes, {total[0]} real, {total[1]} fake "
                f"(1_fake is read only by the UnivFD linear-probe baseline)",
                file=out,
            )
            findings += f
    return _report(findings, bool(args.get("strict")), out)


def _report(findings: list[Finding], strict: bool, out) -> int:
    for f in findings:
        print(f"{f.level.upper()}: {f.message}", file=out)
    errors = [f for f in findings if f.level == "error" or (strict and f.level == "warning")]
    print(
        f"{len(errors)} problem(s), {len(findings) - len(errors)} warning(s)"
        if findings
        else "all good",
        file=out,
    )
    return 1 if errors else 0


def _parse(argv: list[str]) -> dict:
    parser, known = (
        OverridesParser.create(),
        {
            "data.test_root",
            "data.train_root",
            "data.val_root",
            "extra_roots",
            "data.extra_roots",
            "strict",
        },
    )
    args: dict = {}
    for arg in argv:
        try:
            o = parser.parse_override(arg)
        except Exception as err:
            raise ClipflowError(
                f"cannot parse argument {arg!r}: {str(err).splitlines()[0]}"
            ) from None
        if o.key_or_group not in known:
            raise ClipflowError(f"unknown key {o.key_or_group!r}; use {', '.join(sorted(known))}")
        value = o.value()
        key = "extra_roots" if o.key_or_group == "data.extra_roots" else o.key_or_group
        args[key] = (
            [str(v) for v in value]
            if key == "extra_roots" and isinstance(value, list)
            else ([str(value)] if key == "extra_roots" else value)
        )
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    logging.basicConfig(
        level=logging.ERROR
    )  # discovery's warnings are reported as findings instead
    guarded(lambda: sys.exit(run_check(argv)))


if __name__ == "__main__":
    main()
