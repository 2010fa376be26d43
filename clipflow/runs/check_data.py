"""Check benchmark folders before a run: counts per set vs the public release, layout problems.

Every test set's real/fake counts are set next to the counts of the public release (SPEC §8;
for GenImage, Chameleon, Synthbuster and WildRF: clipflow.data.benchmarks.KNOWN_COUNTS, with
their sources; a count we could not verify is shown as "count not known", never compared),
and what would silently change a result is flagged: one of the paper's 19 sets missing, empty
``0_real``/``1_fake`` folders, images lying directly in a set folder instead of its
``0_real``/``1_fake``, generator folders whose reals cannot be found. Counts that differ from
the release are warnings (``strict`` makes them errors too). clipflow-check-data
(clipflow.cli.check_data) builds a :class:`CheckRequest` from its arguments and calls
:func:`run_check`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..data.benchmarks import KNOWN_COUNTS as MODERN_COUNTS
from ..data.benchmarks import UNIVFD, BenchmarkNotFound, find_benchmark
from ..data.finders import Found
from ..data.imageio import is_image_file, list_images, list_subdirs
from ..data.layouts import (
    FAKE_DIR,
    PAPER_ORDER,
    POOL_OF,
    REAL_DIR,
    SHARED_REAL_POOLS,
    TestSet,
    display_name,
)
from ..errors import ClipflowError, DataError

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
    if ts.benchmark and ts.benchmark != UNIVFD:
        return ts.protocol.split(":")[0] + (f"; {ts.note}" if ts.note else "")
    if ts.note:
        return ts.note.replace("real images from the ", "reals: ")
    classes = {p.parent.parent for p in ts.fake}
    return f"class level ({len(classes)} classes)" if len(classes) > 1 else "own 0_real/1_fake"


def check_test_root(
    root: Path, extra: bool = False, benchmark: str = "auto"
) -> tuple[list[SetRow], list[Finding]]:
    """Per-set rows and findings for a benchmark root (``extra``: user folders, no 19-set check;
    ``benchmark``: ``data.benchmark``). The paper's 19 sets are required only when the root
    holds CNNSpot/UnivFD sets or ``benchmark=univfd``: a GenImage root misses none of them."""
    if not root.is_dir():  # scanning a missing root would end in a traceback
        return [], [Finding("error", f"folder not found: {root}")]
    try:
        bench = find_benchmark(root, benchmark)
    except BenchmarkNotFound as err:  # the layout recognised still decides the advice
        missing = incomplete_findings(root, err.found, benchmark)  # each part, once
        return [], missing + [Finding("error", err.tried)]
    except DataError as err:
        return [], structural_findings(root) + [Finding("error", str(err))]
    findings = incomplete_findings(root, bench, benchmark)
    sets = bench.sets
    found = {ts.name: ts for ts in sets}
    rows = [_set_row(ts, findings) for ts in sets]
    paper_root = benchmark == UNIVFD or any(ts.benchmark in ("", UNIVFD) for ts in sets)
    if not extra and paper_root:
        for name in PAPER_ORDER:
            if name not in found:
                rows.append(SetRow(name, "—", None, None, KNOWN_COUNTS.get(name), "MISSING"))
                findings.append(
                    Finding("error", f"{name} ({display_name(name)}): not found under {root}")
                )
        order = {n: i for i, n in enumerate(PAPER_ORDER)}
        rows.sort(key=lambda r: order.get(r.name, len(order)))
    return rows, findings


def incomplete_findings(root: Path, found: Found, benchmark: str = "auto") -> list[Finding]:
    """CNNSpot's rules outside the folders a benchmark's finder claimed (not at all when one
    modern benchmark is asked for: its tree is not CNNSpot's), and, from the layout the finder
    recognised, every part of its tree that is missing (each an error)."""
    cnnspot = benchmark in ("auto", UNIVFD)
    findings = structural_findings(root, skip=found.claimed) if cnnspot else []
    for folder, reason in found.skipped:
        findings.append(Finding("error", f"incomplete: {folder} — {reason}"))
    return findings


def _set_row(ts: TestSet, findings: list[Finding]) -> SetRow:
    modern = MODERN_COUNTS.get(ts.name)
    expected = modern.expected() if modern else KNOWN_COUNTS.get(ts.name)
    status = "ok" if expected else "present"  # present: no published count to compare with
    if modern and not expected:
        status = "count not known"  # unverified: see benchmarks_modern.KNOWN_COUNTS' source
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


def structural_findings(root: Path, skip: list[Path] | None = None) -> list[Finding]:
    """Empty split folders, images lying outside 0_real/1_fake, unpaired generator folders
    (not inside ``skip``: folders of a benchmark with its own layout, e.g. GenImage's val/ai)."""
    findings: list[Finding] = []
    for folder, _ in _walk(root, skip):
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
        if FAKE_DIR in subdirs and REAL_DIR not in subdirs and folder.name not in POOL_OF:
            findings.append(
                Finding(
                    "warning",
                    f"{folder} has {FAKE_DIR} but no {REAL_DIR}: its reals must come "
                    f"from a shared pool ({', '.join(sorted(SHARED_REAL_POOLS))})",
                )
            )
    return findings


def _walk(root: Path, skip: list[Path] | None = None):
    """(folder, depth) for every folder under root, not descending into 0_real/1_fake nor
    into ``skip``."""
    skipped = {p.resolve() for p in skip or []}
    stack = [(Path(root), 0)]
    while stack:
        folder, depth = stack.pop()
        if skipped and folder.resolve() in skipped:
            continue
        yield folder, depth
        if folder.name in _SPLITS or depth >= _MAX_DEPTH:
            continue
        stack += [(d, depth + 1) for d in reversed(list_subdirs(folder))]


def check_train_root(root: Path, what: str) -> tuple[list[tuple[str, int, int]], list[Finding]]:
    """(class, n_real, n_fake) per class of a ``<class>/{0_real,1_fake}`` train or val root."""
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

    w = max([14, *(len(r.name) for r in rows)])
    lines = [
        f"test sets under {root}:",
        f"  {'set':{w}s} {'real (release)':>16s} {'fake (release)':>16s}  {'status':15s} layout",
    ]
    for r in rows:
        exp = r.expected or (None, None)
        lines.append(
            f"  {r.name:{w}s} {cell(r.n_real, exp[0]):>16s} {cell(r.n_fake, exp[1]):>16s}  "
            f"{r.status:15s} {r.layout}"
        )
    return "\n".join(lines)


@dataclass
class CheckRequest:
    """What to check: any of the roots of a run; ``strict`` turns count warnings into errors."""

    test_root: str | None = None
    train_root: str | None = None
    val_root: str | None = None
    extra_roots: list[str] | None = None
    strict: bool = False
    benchmark: str = "auto"


def run_check(req: CheckRequest, out: TextIO | None = None) -> int:
    """Print the report of ``req`` to ``out`` (default: stdout at call time); 0 all good
    (warnings allowed), 1 a problem."""
    out = out or sys.stdout
    if not any((req.test_root, req.train_root, req.val_root, req.extra_roots)):
        raise ClipflowError(
            "nothing to check — pass data.test_root=DIR (and/or data.train_root, data.val_root)"
        )
    findings: list[Finding] = []
    if req.test_root:
        rows, f = check_test_root(Path(req.test_root), benchmark=req.benchmark)
        print(format_sets(Path(req.test_root), rows), file=out)
        findings += f
    for extra_root in req.extra_roots or []:
        rows, f = check_test_root(Path(extra_root), extra=True)
        print(format_sets(Path(extra_root), rows), file=out)
        findings += f
    for what, root in (("train_root", req.train_root), ("val_root", req.val_root)):
        if root:
            classes, f = check_train_root(Path(root), what)
            n_real, n_fake = sum(c[1] for c in classes), sum(c[2] for c in classes)
            print(
                f"{what} {root}: {len(classes)} classes, {n_real} real, {n_fake} fake "
                f"(1_fake is read only by the UnivFD linear-probe baseline)",
                file=out,
            )
            findings += f
    return _report(findings, bool(req.strict), out)


def _report(findings: list[Finding], strict: bool, out: TextIO) -> int:
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
