"""`make reproduce-mini`: every experiment of the paper, end to end, on a generated miniature.

1. :func:`prepare_mini` writes a miniature of the whole benchmark under <out>/data
   (progan_train, progan_val, all 19 test sets in the release layout, four Table V generator
   folders), unless it is there, and checks it as clipflow-check-data does;
2. scripts/reproduce_mini.py then runs clipflow-reproduce with :func:`mini_arguments`
   (``experiment=[all,realonly]``: the paper's experiments and our real-only bench, the
   random-weight ``tiny`` backbone and autoencoder on the CPU), writing every table
   (with the paper column), plot and index.md under <out>.

``experiment=all`` includes ``choices`` (the one-at-a-time arms of what the paper leaves open),
here at the miniature's seeds (default 0 and 1) instead of its own three. Training draws are
fresh per epoch as in the paper unless ``fast=True`` (one cached draw for the paper's
experiments; choices draws fresh per epoch either way, its ``cached_view`` arm is the shortcut).

The numbers mean nothing (random backbone, a handful of 48-pixel images); the commands, files
and columns are those of a real run. Everything runs in this process.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..data.synthetic import make_benchmark
from ..errors import DataError
from ..runs.check_data import CheckRequest, run_check


def mini_data(root: Path, images: int = 4, size: int = 48) -> dict[str, Path]:
    """The miniature's roots under ``root``; generated unless a previous run left them there."""
    data = {
        "train_root": root / "progan_train",
        "val_root": root / "progan_val",
        "test_root": root / "test",
        "extra_root": root / "new_generators",
    }
    if data["test_root"].exists():
        return data
    return make_benchmark(root, n=images, size=size, n_train=2 * images, n_val=images)


def mini_arguments(
    data: dict[str, Path],
    out: Path,
    seeds: Sequence[int],
    extra: Sequence[str] = (),
    fast: bool = False,
) -> list[str]:
    """The clipflow-reproduce arguments of the miniature (tiny backbone, CPU, short training)."""
    return [
        "experiment=[all,realonly]",
        f"seeds=[{','.join(str(s) for s in seeds)}]",
        f"out={out}",
        f"data.train_root={data['train_root']}",
        f"data.val_root={data['val_root']}",
        f"data.test_root={data['test_root']}",
        f"extra_roots=[{data['extra_root']}]",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "data.per_class=null",
        f"data.cache_dir={out / 'cache'}",
        "train.epochs=2",
        "flow.n_blocks=2",
        *(["fast=true"] if fast else []),
        *extra,
    ]


def prepare_mini(
    out: Path,
    images: int = 4,
    size: int = 48,
    seeds: Sequence[int] = (0, 1),
    log: TextIO | None = None,
    fast: bool = False,
) -> dict[str, Path]:
    """Generate (or reuse) and check the miniature under ``out/data``; returns its roots (for
    :func:`mini_arguments`). ``seeds`` and ``fast``: what the notes printed to ``log`` say of
    the run that follows."""
    out, log = Path(out), log or sys.stdout
    data = mini_data(out / "data", images, size)
    print(
        "NOTE: random-weight `tiny` backbone (and `tiny` autoencoder for realonly) and a "
        "generated miniature: the numbers mean nothing.",
        file=log,
        flush=True,
    )
    print(
        f"NOTE: seeds {list(seeds)} for every experiment, choices included (a real "
        "`experiment=choices` run defaults to seeds [0, 1, 2]); training draws: "
        + (
            "one cached crop + mask per image (fast=true) except in choices, which draws fresh "
            "per epoch."
            if fast
            else "fresh per epoch (the paper's)."
        ),
        file=log,
        flush=True,
    )
    # Counts differ from the release by design (warnings); a structural problem stops here.
    request = CheckRequest(
        test_root=str(data["test_root"]),
        train_root=str(data["train_root"]),
        val_root=str(data["val_root"]),
        extra_roots=[str(data["extra_root"])],
    )
    if run_check(request, out=log) != 0:
        raise DataError(f"the miniature under {out / 'data'} failed its check; see above")
    return data
