"""``experiment=realonly``: detectors that learn from real images only, in one table and plot.

Rows (configs/experiment/realonly.yaml): the flow with frequency-mask proxies (the paper's
N+P), with reconstruction proxies, with both; the kNN, Gaussian (Mahalanobis) and
reconstruction-distance baselines. Every row is scored on the same cached features and test
sets, thresholded by the same rule (natural validation images vs their band-stop proxies) and
given the same conformal p-values (its validation naturals as calibration). Columns:

* ``mAP`` and ``mean_acc@val`` over the paper's sets evaluated here; ``mAP_all`` over every
  evaluated set (modern benchmarks given as extra sets of the test root included);
* ``tpr@fpr1%`` / ``tpr@fpr5%``: TPR at 1 % / 5 % FPR read off each set's ROC (test labels),
  mean over sets; ``fpr@p5%`` / ``tpr@p5%``: the rates of "p-value < 5 %" (no test labels);
* ``mAP_gan`` / ``mAP_diffusion`` / ``mAP_other``: the paper's generator families.

The paper's N+P row (Tables I and II) is printed beside ours for reference only: it is not
a row we produced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write_text
from ..data.layouts import PAPER_FAMILIES
from ..eval.report import new_figure, save_png, to_csv
from .comparison import table_sets
from .formatting import fmt_number
from .provenance import provenance
from .results import find_row
from .spec import ArmResult, ExperimentResult

REALONLY_COLUMNS = (
    "arm",
    "kind",
    "mAP",
    "mAP_std",
    "mean_acc@val",
    "tpr@fpr1%",
    "tpr@fpr5%",
    "fpr@p5%",
    "tpr@p5%",
    "mAP_gan",
    "mAP_diffusion",
    "mAP_other",
    "mAP_all",
    "n_sets",
)
# the row's metric key in evaluate_sets' rows (clipflow.eval.metrics OURS_COLUMNS)
_METRICS = {
    "mean_acc@val": "acc@val",
    "tpr@fpr1%": "tpr@fpr1%(roc)",
    "tpr@fpr5%": "tpr@fpr5%(roc)",
    "fpr@p5%": "fpr@p5%",
    "tpr@p5%": "tpr@p5%",
}
PAPER_REFERENCE = {"method": "Ours", "variant": "N+P"}


def _mean(arm: ArmResult, metric: str, sets: list[str]) -> tuple[float | None, float | None]:
    """Mean over ``sets`` per seed (a missing or None value left out), then mean ± std over
    seeds; (None, None) when no seed has it."""
    per_seed = []
    for run in arm.runs.values():
        got = [r.get(metric) for r in run.rows if r["dataset"] in sets]
        vals = [float(v) for v in got if v is not None]
        if vals:
            per_seed.append(float(np.mean(vals)))
    if not per_seed:
        return None, None
    std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return float(np.mean(per_seed)), std


def realonly_rows(result: ExperimentResult) -> list[dict]:
    """One row per arm with :data:`REALONLY_COLUMNS`."""
    _, paper_sets = table_sets(result, "table1_ap")
    every = [s for s, _ in result.sets]
    rows = []
    for arm in result.arms:
        ap, ap_std = _mean(arm, "ap", paper_sets)
        row: dict = {"arm": arm.name, "kind": arm.kind, "mAP": ap, "mAP_std": ap_std}
        row |= {col: _mean(arm, key, paper_sets)[0] for col, key in _METRICS.items()}
        row |= {
            f"mAP_{family}": _mean(arm, "ap", [s for s in paper_sets if s in sets])[0]
            for family, sets in PAPER_FAMILIES.items()
        }
        rows.append(row | {"mAP_all": _mean(arm, "ap", every)[0], "n_sets": len(paper_sets)})
    return rows


def paper_reference() -> dict:
    """The paper's N+P: mAP (Table I) and mean accuracy (Table II), its printed means."""
    ap, acc = find_row("table1_ap", PAPER_REFERENCE), find_row("table2_acc", PAPER_REFERENCE)
    return {
        "arm": "paper N+P (Tables I, II; reference)",
        "mAP": ap.mean if ap else None,
        "mean_acc@val": acc.mean if acc else None,
    }


def realonly_markdown(result: ExperimentResult, rows: list[dict]) -> str:
    head = (
        "| arm | kind | mAP | mean acc@val | TPR@1%FPR | TPR@5%FPR | FPR p<5% | TPR p<5% "
        "| mAP GANs | mAP diffusion | mAP others | mAP all sets |"
    )
    lines = [head, "|---|---|" + "---:|" * 10]
    for r in rows:
        cells = [r["arm"], f"ours ({r['kind']})", fmt_number(r["mAP"], r["mAP_std"])]
        cells += [fmt_number(r[c]) for c in REALONLY_COLUMNS[4:13]]
        lines.append("| " + " | ".join(cells) + " |")
    ref = paper_reference()
    lines.append(
        f"| *{ref['arm']}* | paper | *{fmt_number(ref['mAP'])}* | "
        f"*{fmt_number(ref['mean_acc@val'])}* |" + " — |" * 8
    )
    n = rows[0]["n_sets"] if rows else 0
    return (
        f"# {result.spec.title}\n\n{result.spec.description.strip()}\n\n"
        f"{provenance(result.meta)}\n\n"
        + "\n".join(lines)
        + f"\n\nAll rows but the last are ours, on the same cached features and test sets; means "
        f"over the paper's {n} sets found here (mAP all sets: every evaluated set). "
        "acc@val: at the threshold calibrated on natural validation images vs their band-stop "
        "proxies (no fakes), for every row. TPR@x%FPR: read off each set's ROC (uses the test "
        "labels, an analysis number). FPR / TPR p<5%: share of reals / fakes whose conformal "
        "p-value (against the row's own validation naturals) is below 5%. The last row is the "
        "paper's N+P, for reference (its means over its 19 sets).\n"
    )


def plot_realonly(rows: list[dict], title: str, path: Path) -> Path:
    """Grouped bars per row: mAP, mean acc@val, TPR at 5% FPR; the paper's N+P as lines."""
    metrics = [("mAP", "mAP"), ("mean_acc@val", "acc@val"), ("tpr@fpr5%", "TPR@5%FPR")]
    fig, ax = new_figure(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.2))
    x, width = np.arange(len(rows)), 0.8 / len(metrics)
    for i, (key, label) in enumerate(metrics):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals), width, label=label)
    ref = paper_reference()
    ax.axhline(ref["mAP"], color="black", linewidth=1.2, label="paper N+P mAP")
    ax.axhline(
        ref["mean_acc@val"], color="black", linestyle="--", linewidth=1.2, label="paper N+P acc"
    )
    ax.set_xticks(x, [r["arm"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(f"{title} (bars: ours; lines: the paper's N+P)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


def write_realonly(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """realonly.csv, realonly.md and realonly.png in ``folder`` (written atomically)."""
    rows = realonly_rows(result)
    atomic_write_text(folder / "realonly.csv", to_csv(rows, REALONLY_COLUMNS))
    atomic_write_text(folder / "realonly.md", realonly_markdown(result, rows))
    return {
        "realonly.csv": folder / "realonly.csv",
        "realonly.md": folder / "realonly.md",
        "realonly.png": plot_realonly(rows, result.spec.title, folder / "realonly.png"),
    }
