"""Rows -> results.csv / results.md / metrics.json / scores.csv / skipped.txt / a plot;
a training history -> metrics.csv / loss.png (and TensorBoard events with logger=tensorboard).

Every file is written atomically, and an evaluation's files as one set (all or none); numbers
in the tables are percentages with two decimals, the JSON keeps full precision.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from ..core.fileio import (
    atomic_write_bytes,
    atomic_write_set,
    atomic_write_text,
    display_path,
    encode_text,
)
from ..errors import ClipflowError
from .conformal import RETRAIN, share_warning
from .means import Means, in_paper, paper_first
from .metrics import METRIC_COLUMNS, OURS_COLUMNS
from .transfer import TRANSFER_COLUMNS, blank_levels_warning, transfer_warning

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("dataset", "display_name", *METRIC_COLUMNS)
# results.csv/.md of an evaluation: ``in_paper`` says yes/no per set, and for a mean row how
# many of the paper's 19 sets it averages (see clipflow.eval.means for the rule); last, whether
# each set's reals are like the calibration reals (clipflow.eval.transfer).
RESULTS_COLUMNS = (
    "dataset",
    "display_name",
    "in_paper",
    *METRIC_COLUMNS,
    *OURS_COLUMNS,
    *TRANSFER_COLUMNS,
)
# How a warning line starts in results.md / robustness.md (console_text drops them).
WARNING_MARK = "**Warning:** "
RANDOM_WARNING = (
    "**Random-weight backbone: these numbers show that the pipeline runs, not that it detects "
    "anything.**"
)


def to_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k), csv_mode=True) for k in columns})
    return buf.getvalue()


SCORE_COLUMNS = ("path", "dataset", "label", "score")


def scores_to_csv(scores: list[dict]) -> str:
    """Per-image scores, each to 9 significant digits: float32 scores read back exactly, so
    metrics recomputed from the file equal ours (6 decimals could merge close scores into ties)."""
    rows = [
        {**row, "path": display_path(row["path"]), "score": f"{row['score']:.9g}"} for row in scores
    ]
    return to_csv(rows, SCORE_COLUMNS)


def skipped_text(skipped: Sequence[tuple[str | Path, str]]) -> str:
    """``skipped.txt``: one ``path<TAB>reason`` line per file not scored; names as
    :func:`~clipflow.core.fileio.display_path` writes them (so a tab or newline in a name, or a
    byte that is not UTF-8, cannot break a line)."""
    return "".join(f"{display_path(p)}\t{' '.join(str(r).split())}\n" for p, r in skipped)


def to_markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join(_fmt(row.get(k), p_value=k.endswith("_p")) for k in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value, csv_mode: bool = False, p_value: bool = False) -> str:
    if value is None:
        return ""
    if p_value and isinstance(value, float) and not csv_mode:  # 1e-30 is not "0.00"
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.6f}" if csv_mode else f"{value:.2f}"
    return str(value)


def describe_run(meta: dict) -> str:
    """One header paragraph naming what produced a table."""
    bb = meta.get("backbone", {})
    parts = [
        f"backbone `{bb.get('name')}` (weights `{bb.get('weights_id')}`)",
        f"preprocessing `{meta.get('preprocess')}`",
        f"protocol `{meta.get('protocol')}`",
        f"threshold {meta.get('threshold'):.6g} (calibrated on natural validation images)",
        f"checkpoint sha256 `{str(meta.get('checkpoint_sha256'))[:12]}`",
    ]
    if meta.get("reencode"):  # the format-confound control: say it next to every number
        parts.append(f"every test image re-encoded `{meta['reencode']['name']}` before scoring")
    text = "; ".join(parts) + "."
    if bb.get("random_init"):
        text += "\n\n" + RANDOM_WARNING
    return text


def console_text(md: str) -> str:
    """A results file as a command prints it: without the random-weight banner and the
    ``**Warning:**`` lines, which the run has already logged on this console (the file keeps
    them), so that each is said once."""
    md = md.replace("\n\n" + RANDOM_WARNING, "")
    return re.sub(r"\n" + re.escape(WARNING_MARK) + r"[^\n]*\n", "", md)


def write_results(
    run_dir: Path,
    rows: list[dict],
    means: Means,
    meta: dict,
    scores: list[dict],
    skipped: list[tuple[str, str]],
    log_warnings: bool = True,
) -> dict[str, Path]:
    """Write all result files of one evaluation into ``run_dir``; return their paths.
    The calibration's warnings (:func:`calibration_notes`) are written, and logged unless
    ``log_warnings`` is false (a robustness run logs its clean block's only).

    ``means`` comes from :func:`clipflow.eval.means.summarize` of the same rows. The files are
    written as one set: a full disk leaves none of them (results.md, renamed last, never
    stands without metrics.json and scores.csv).
    """
    run_dir = Path(run_dir)
    rows = [{**r, "in_paper": in_paper(r["dataset"])} for r in paper_first(rows)]
    table = results_table(rows, means)
    paths = {
        name: run_dir / name
        for name in ("results.csv", "results.md", "metrics.json", "scores.csv", "skipped.txt")
    }
    texts = {"results.csv": to_csv(table, RESULTS_COLUMNS)}
    warnings = calibration_notes(rows, meta)
    for text in warnings.values() if log_warnings else ():
        log.warning("%s", text)
    md = results_markdown(rows, table, means, meta, warnings, len(skipped))
    payload = {
        **meta,
        "datasets": rows,
        **means.to_json(),
        "n_skipped": len(skipped),
        "warnings": warnings,
    }
    texts["metrics.json"] = json.dumps(payload, indent=2, sort_keys=True)
    texts["scores.csv"] = scores_to_csv(scores)
    texts["skipped.txt"] = skipped_text(skipped)
    files = {paths[name]: encode_text(text) for name, text in texts.items()}
    if rows:
        paths["ap_per_dataset.png"] = run_dir / "ap_per_dataset.png"
        files[paths["ap_per_dataset.png"]] = png_bytes(ap_figure(rows, means))
    files[paths["results.md"]] = encode_text(md)  # last: the file people open first
    atomic_write_set(files)
    return paths


# Under the results table: what the columns mean, the paper's first, then ours.
COLUMNS_LEGEND = (
    "\n`acc@val`: threshold from the checkpoint; "
    "`acc@oracle`: best threshold on the test labels.\n"
    "\nOurs, not in the paper: `tpr@fprX%(roc)`: TPR at the threshold where this set's own "
    "ROC (its test labels) reaches X% FPR; `fpr@pX%` / `tpr@pX%`: the conformal decision "
    "p <= X% against the checkpoint's calibration reals, its realised FPR on this set's "
    "reals (guaranteed <= X% only if they are exchangeable with the calibration reals) "
    "and TPR on its fakes (docs/calibration.md); `cal_transfer`: `no` when this set's reals "
    "are flagged significantly more often than the level allows (exact test, "
    "`cal_transfer_p` its p-value): they are not like the calibration reals.\n"
)


def results_markdown(
    rows: list[dict],
    table: list[dict],
    means: Means,
    meta: dict,
    warnings: dict[str, str],
    n_skipped: int,
) -> str:
    """results.md: the run, the table, the column legend, the warnings (one line each,
    starting with :data:`WARNING_MARK`), the mean's note, benchmarks and what was skipped."""
    md = f"# Results\n\n{describe_run(meta)}\n\n{to_markdown(table, RESULTS_COLUMNS)}"
    md += COLUMNS_LEGEND
    md += "".join(f"\n{WARNING_MARK}{text}\n" for text in warnings.values())
    md += f"\n{means.note()}\n"
    md += benchmarks_text(rows)
    return md + skipped_note(n_skipped, meta.get("n_not_finite", 0), meta.get("n_left_out", 0))


def results_table(rows: list[dict], means: Means) -> list[dict]:
    """The rows of results.csv/.md (and report.html): the sets, the paper's first, each
    marked ``in_paper`` yes/no, then the mean rows."""
    marked = [
        {**r, "in_paper": "yes" if in_paper(r["dataset"]) else "no"} for r in paper_first(rows)
    ]
    return marked + means.table_rows()


def calibration_notes(rows: list[dict], meta: dict) -> dict[str, str]:
    """The results' warnings about the calibration (written to results.md and metrics.json):
    sets whose reals it does not fit, conformal columns it leaves blank, a checkpoint
    threshold that calls most of its own calibration reals ai-generated (acc@val then says
    little)."""
    n_cal = meta.get("n_calibration")
    if n_cal is None:  # no calibration reals known: no conformal columns to speak of
        return {}
    share = meta.get("threshold_share")  # absent in results written before it was recorded
    found = {
        "calibration_transfer": transfer_warning(rows, n_cal),
        "calibration_size": blank_levels_warning(n_cal),
        "threshold_share": None
        if share is None
        else share_warning(share, n_cal, meta["threshold"], RETRAIN),
    }
    return {k: v for k, v in found.items() if v}


def skipped_note(n_skipped: int, n_not_finite: int = 0, n_left_out: int = 0) -> str:
    """results.md's count of what skipped.txt lists: parts of a benchmark tree missing,
    files not read, and images the flow scored NaN/inf (left out of every metric, so they
    are said apart)."""
    text = ""
    if n_left_out:
        text += (
            f"\n{n_left_out} part(s) of a benchmark tree missing, so not scored (the sets "
            "they belong to are left out); see skipped.txt.\n"
        )
    if n_skipped > n_not_finite + n_left_out:
        n_files = n_skipped - n_not_finite - n_left_out
        text += f"\n{n_files} unreadable file(s) skipped; see skipped.txt.\n"
    if n_not_finite:
        text += (
            f"\n{n_not_finite} image(s) scored NaN or inf by the flow: left out of every metric "
            "(no decision from a score that is not a number); see skipped.txt.\n"
        )
    return text


def benchmarks_text(rows: list[dict]) -> str:
    """results.md's list of the benchmarks scored and their protocols ("" for the paper's only)."""
    protocols = {r.get("benchmark"): r.get("protocol") for r in rows if r.get("benchmark")}
    if set(protocols) <= {"univfd"}:
        return ""
    lines = [f"- `{b}`: {p}" for b, p in protocols.items()]
    return "\nBenchmarks and protocols:\n\n" + "\n".join(lines) + "\n"


def plot_ap(rows: list[dict], means: Means, path: Path) -> Path:
    """Bar chart of AP per dataset (sets outside the paper's 19 in grey) with the mean as a line."""
    return save_png(ap_figure(rows, means), path)


def ap_figure(rows: list[dict], means: Means):
    """The figure of :func:`plot_ap`."""
    names = [r["display_name"] for r in rows]
    fig, ax = new_figure(figsize=(max(4, 0.5 * len(names) + 2), 3.5))
    colors = ["#4C72B0" if in_paper(r["dataset"]) else "#999999" for r in rows]
    ax.bar(names, [r["ap"] for r in rows], color=colors)
    mean = means.mean
    label = f"mean AP {mean.values['ap']:.2f} over {len(mean.sets)} set(s)"
    label += ": the paper's 19" if mean.is_paper_mean else ""
    ax.axhline(mean.values["ap"], color="#C44E52", ls="--", label=label)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=60)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **subplots_kw):
    """``(figure, axes)`` like ``plt.subplots``, without pyplot.

    A library must not switch the process's matplotlib backend (``matplotlib.use``) nor keep
    figures in pyplot's registry: the figure draws on its own Agg canvas and is freed with it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


def save_png(fig, path: Path, dpi: int = 110) -> Path:
    """Render a figure of :func:`new_figure` to ``path`` atomically."""
    atomic_write_bytes(path, png_bytes(fig, dpi))
    return path


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A figure of :func:`new_figure` rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------------------- training

# metrics.csv of a training run: one row per epoch, written after every epoch (watchable).
HISTORY_COLUMNS = ("epoch", "loss", "natural", "proxy", "q_natural", "q_proxy", "lr", "seconds")


def history_to_csv(history: list[dict]) -> str:
    """``metrics.csv``: the known columns first, in order, then any other key of the rows;
    a part the mode has not (``proxy`` in mode N) is an empty cell. Full float precision."""
    extra = [k for row in history for k in row if k not in HISTORY_COLUMNS]
    columns = [*HISTORY_COLUMNS, *dict.fromkeys(extra)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else repr(row[k]) for k in columns})
    return buf.getvalue()


def write_history(run_dir: Path, history: list[dict]) -> Path:
    """Rewrite ``run_dir/metrics.csv`` (atomically: a reader never sees half a file)."""
    path = Path(run_dir) / "metrics.csv"
    atomic_write_text(path, history_to_csv(history))
    return path


def plot_loss(history: list[dict], path: Path) -> Path:
    """``loss.png``: the loss and its parts per epoch (left), the mean scores (right)."""
    fig, (ax_loss, ax_q) = new_figure(1, 2, figsize=(9, 3.5))
    epochs = [row["epoch"] for row in history]
    for key in ("loss", "natural", "proxy"):
        if any(key in row for row in history):
            ax_loss.plot(epochs, [row.get(key) for row in history], marker=".", label=key)
    for key, label in (("q_natural", "natural images"), ("q_proxy", "proxies")):
        if any(key in row for row in history):
            ax_q.plot(epochs, [row.get(key) for row in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss (mean over the epoch)")
    ax_q.set(xlabel="epoch", ylabel="mean score q", title="score q (higher = more anomalous)")
    for ax in (ax_loss, ax_q):
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def tensorboard_writer(log_dir: Path):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``; one line if the optional
    ``tensorboard`` package is missing (imported only when asked for: it is slow to import)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ClipflowError(
            "logger=tensorboard needs the tensorboard package: pip install 'clipflow[tb]' "
            "(or pip install tensorboard), or leave logger=none"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))
