"""The paper's benchmark: which evaluated sets its headline mean averages, and our mean rows.

The paper's means (mAP, mean accuracy) are over 19 sets (:data:`PAPER_SETS`). A test root may
hold fewer (a partial download, one's own generators) or more (the CNNSpot archive also has
stylegan2 and whichfaceisreal). The rule, shared by clipflow-eval, robustness and the
comparison tables of clipflow-reproduce:

* ``mean`` averages the paper's sets that were evaluated. With all 19 that is the paper's
  mean; with k < 19 it is ours over k of them (labelled so, never the paper's); when none of
  the paper's sets was evaluated it averages every set found.
* ``mean_all`` averages every set evaluated; it is a row of its own in the tables whenever it
  covers a set that ``mean`` leaves out.
* Sets outside the paper's 19 are listed after them and marked ``in_paper = no``.
* Rows carrying a ``benchmark`` other than ``univfd`` (GenImage, Chameleon, Synthbuster,
  WildRF: clipflow.data.benchmarks) get one more row each, ``mean_<benchmark>``, averaging
  that benchmark's sets: ours, under the protocol named in its label, never the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.layouts import PAPER_ORDER
from ..errors import DataError
from .metrics import mean_row

PAPER_SETS: tuple[str, ...] = PAPER_ORDER  # the 19 sets of the paper's means, in its order
_PAPER_INDEX = {name: i for i, name in enumerate(PAPER_SETS)}
MEAN_KEYS = ("mean", "mean_all")  # the ``dataset`` of the mean rows: no set may be named so
BENCHMARK_MEAN_PREFIX = "mean_"  # + a benchmark name: its per-benchmark mean row


def check_set_names(names: list[str]) -> None:
    """Refuse a set folder named like a mean row: results.csv could not tell them apart."""
    clash = sorted(n for n in set(names) if n in MEAN_KEYS or n.startswith(BENCHMARK_MEAN_PREFIX))
    if clash:
        raise DataError(
            f"a test set folder is named {clash[0]!r}, the name of a mean row in the results; "
            "rename the folder"
        )


def in_paper(dataset: str) -> bool:
    """Whether a set (by folder name) is one of the paper's 19."""
    return dataset in _PAPER_INDEX


def paper_first(rows: list[dict]) -> list[dict]:
    """Rows of the paper's sets in the paper's order, then the others in their given order."""
    paper = sorted(
        (r for r in rows if in_paper(r["dataset"])), key=lambda r: _PAPER_INDEX[r["dataset"]]
    )
    return paper + [r for r in rows if not in_paper(r["dataset"])]


@dataclass(frozen=True)
class MeanRow:
    """One mean row: its key (``mean`` / ``mean_all``), label, the sets it averages, values."""

    key: str
    label: str
    sets: tuple[str, ...]
    values: dict[str, float]

    @property
    def n_paper(self) -> int:
        return sum(in_paper(s) for s in self.sets)

    @property
    def is_paper_mean(self) -> bool:
        """True only when the row averages exactly the paper's 19 sets."""
        return set(self.sets) == set(PAPER_SETS)

    def coverage(self) -> str:
        """The ``in_paper`` cell of a mean row: how many of the paper's sets it averages."""
        if self.key.startswith(BENCHMARK_MEAN_PREFIX) and self.key not in MEAN_KEYS:
            return f"no (ours: {len(self.sets)} set" + ("s)" if len(self.sets) > 1 else ")")
        others = len(self.sets) - self.n_paper
        text = f"{self.n_paper} of {len(PAPER_SETS)}"
        return text + (f" + {others} other" + ("s" if others > 1 else "") if others else "")

    def table_row(self) -> dict:
        return {
            "dataset": self.key,
            "display_name": self.label,
            "in_paper": self.coverage(),
            **self.values,
        }

    def describe(self) -> dict:
        """metrics.json's account of the row (the values are stored next to it)."""
        return {
            "label": self.label,
            "sets": list(self.sets),
            "n_sets": len(self.sets),
            "n_paper_sets": self.n_paper,
            "is_paper_mean": self.is_paper_mean,
        }


@dataclass(frozen=True)
class Means:
    """The ``mean`` and ``mean_all`` rows of one evaluation, and one per modern benchmark."""

    mean: MeanRow
    mean_all: MeanRow
    per_benchmark: tuple[MeanRow, ...] = ()

    def table_rows(self) -> list[dict]:
        """``mean``, then ``mean_all`` when it averages a set that ``mean`` leaves out, then
        the per-benchmark means."""
        rows = [self.mean.table_row()]
        if set(self.mean_all.sets) != set(self.mean.sets):
            rows.append(self.mean_all.table_row())
        return rows + [m.table_row() for m in self.per_benchmark]

    def note(self) -> str:
        """One paragraph saying what each mean averages (results.md, robustness.md)."""
        n, k = len(PAPER_SETS), self.mean.n_paper
        if self.mean.is_paper_mean:
            text = f"`mean` averages the paper's {n} sets: it is comparable to the paper's mean."
        elif k:
            text = (
                f"`mean` averages the {k} of the paper's {n} sets found here; it is ours, "
                f"not the paper's mean (that needs all {n})."
            )
        else:
            text = (
                f"None of the paper's {n} sets was found; `mean` averages the "
                f"{len(self.mean.sets)} set(s) found and is not comparable to the paper."
            )
        extra = [s for s in self.mean_all.sets if s not in self.mean.sets]
        if extra:
            text += (
                f" `mean_all` averages all {len(self.mean_all.sets)} sets found, including "
                f"{', '.join(extra)} (not in the paper's mean)."
            )
        for m in self.per_benchmark:
            text += f" `{m.key}`: {m.label}."
        return text

    def to_json(self) -> dict:
        """The metrics.json entries: values under ``mean`` / ``mean_all``, their accounts."""
        return {
            "mean": self.mean.values,
            "mean_all": self.mean_all.values,
            "mean_info": self.mean.describe(),
            "mean_all_info": self.mean_all.describe(),
            "mean_note": self.note(),
            "benchmark_means": {
                m.key: {"values": m.values, **m.describe()} for m in self.per_benchmark
            },
        }


def summarize(rows: list[dict]) -> Means:
    """The mean rows of per-set rows (``dataset`` + metric columns) by the rule above."""
    if not rows:
        raise ValueError("no per-set rows to average")
    check_set_names([r["dataset"] for r in rows])
    rows = paper_first(rows)
    n = len(PAPER_SETS)
    found = [r["dataset"] for r in rows]
    paper = [r for r in rows if in_paper(r["dataset"])]
    averaged = paper or rows
    k = len(paper)
    if k == n:
        label = f"Mean (the paper's {n} sets)"
    elif k:
        label = f"Mean ({k} of the paper's {n} sets; not the paper's mean)"
    else:
        label = f"Mean ({len(rows)} sets found; none in the paper)"
    mean = MeanRow("mean", label, tuple(r["dataset"] for r in averaged), mean_row(averaged))
    others = len(rows) - k
    all_label = f"Mean of all {len(rows)} sets found" + (
        f" ({others} not in the paper)" if others and k else ""
    )
    mean_all = MeanRow("mean_all", all_label, tuple(found), mean_row(rows))
    return Means(mean, mean_all, benchmark_means(rows))


def benchmark_means(rows: list[dict]) -> tuple[MeanRow, ...]:
    """One ``mean_<benchmark>`` row per modern benchmark among ``rows`` (in order of first
    appearance); rows without a ``benchmark`` key, or with ``univfd``, get none."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        bench = r.get("benchmark") or "univfd"
        if bench != "univfd":
            groups.setdefault(bench, []).append(r)
    out = []
    for bench, members in groups.items():
        protocol = members[0].get("protocol") or "its own protocol"
        label = (
            f"Mean of {len(members)} {bench} set{'s' if len(members) > 1 else ''} "
            f"(ours, per benchmark; protocol {protocol.split(':')[0]})"
        )
        sets = tuple(r["dataset"] for r in members)
        out.append(MeanRow(BENCHMARK_MEAN_PREFIX + bench, label, sets, mean_row(members)))
    return tuple(out)
