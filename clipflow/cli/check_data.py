"""clipflow-check-data data.test_root=DIR [data.train_root=DIR] [data.val_root=DIR] [extra_roots=[DIR]] [strict=true] [data.benchmark=auto|univfd|genimage|chameleon|synthbuster|wildrf]

Prints every test set's real/fake counts next to the counts of the public release (SPEC §8;
today's benchmarks: docs/datasets.md, "count not known" where none could be verified)
and flags what would silently change a result (see clipflow.runs.check_data).

Exit codes: 0 all good (warnings allowed), 1 something is wrong, 2 usage error.
"""  # noqa: E501  (the usage line is printed as is by --help)

from __future__ import annotations

import logging
import sys

from .common import guarded


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    from ..runs.check_data import run_check  # only now: ``--help`` stays instant

    logging.basicConfig(level=logging.ERROR)  # discovery's warnings are reported as findings
    guarded(lambda: sys.exit(run_check(argv)))


if __name__ == "__main__":
    main()
