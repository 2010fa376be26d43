"""clipflow-check-data data.test_root=DIR [data.train_root=DIR] [data.val_root=DIR] [extra_roots=[DIR]] [strict=true] [data.benchmark=auto|univfd|genimage|chameleon|synthbuster|wildrf]

Prints every test set's real/fake counts next to the counts of the public release (SPEC §8;
today's benchmarks: docs/datasets.md, "count not known" where none could be verified)
and flags what would silently change a result (see clipflow.runs.check_data).

Exit codes: 0 all good (warnings allowed), 1 something is wrong, 2 usage error.
"""  # noqa: E501  (the usage line is printed as is by --help)

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ClipflowError
from .common import guarded

if TYPE_CHECKING:
    from ..runs.check_data import CheckRequest

_KEYS = {  # argument -> CheckRequest field
    "data.test_root": "test_root",
    "data.train_root": "train_root",
    "data.val_root": "val_root",
    "extra_roots": "extra_roots",
    "data.extra_roots": "extra_roots",
    "strict": "strict",
    "data.benchmark": "benchmark",
}


def parse_request(argv: Iterable[str]) -> CheckRequest:
    """``data.test_root=DIR extra_roots=[DIR,...] strict=true ...`` -> a request."""
    from ..runs.check_data import CheckRequest
    from ..settings.overrides import as_list, parse_overrides
    from ..settings.rules import check

    req = CheckRequest()
    for o in parse_overrides(argv):
        if o.key not in _KEYS:
            raise ClipflowError(f"unknown key {o.key!r}; use {', '.join(sorted(_KEYS))}")
        if _KEYS[o.key] == "extra_roots":
            req.extra_roots = [str(v) for v in as_list(o.value)]
        elif o.key == "strict":  # strict=maybe: the settings layer's one-line error
            req.strict = check("strict", o.value, bool)
        elif o.key == "data.benchmark":
            req.benchmark = check("data.benchmark", o.value, str)
        else:
            setattr(req, _KEYS[o.key], o.value)
    return req


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    from ..runs.check_data import run_check

    logging.basicConfig(level=logging.ERROR)  # discovery's warnings are reported as findings
    guarded(lambda: sys.exit(run_check(parse_request(argv))))


if __name__ == "__main__":
    main()
