"""An experiment's figures as PNG (no pyplot): AP bars, Fig. 3 histograms, Fig. 4 DR curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..eval.report import new_figure, save_png
from .comparison import PAPER_METRIC, comparison, mean_over, table_sets
from .spec import ExperimentResult


def write_plots(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """The PNGs the experiment asks for: bars, histograms (Fig. 3), dr_curve (Fig. 4)."""
    out: dict[str, Path] = {}
    if "bars" in result.spec.plots:
        out["ap_per_set.png"] = plot_bars(result, folder / "ap_per_set.png")
    if "histograms" in result.spec.plots:
        out["histograms.png"] = plot_histograms(result, folder / "histograms.png")
    if "dr_curve" in result.spec.plots:
        out["dr_width.png"] = plot_dr_curve(result, folder / "dr_width.png")
    return out


def plot_bars(result: ExperimentResult, path: Path) -> Path:
    """AP per set for every arm (bars, ± std) with the paper's number as a black tick."""
    table = next(
        (c["table"] for c in result.spec.compare if PAPER_METRIC.get(c["table"]) == "ap"),
        "table1_ap",
    )
    rows, _, _ = comparison(result, table, "ap")
    x, arms = np.arange(len(rows)), result.arms
    width = 0.8 / max(1, len(arms))
    fig, ax = new_figure(figsize=(min(16.0, max(6.0, 0.6 * len(rows) + 3)), 4.2))
    for i, arm in enumerate(arms):
        pos = x - 0.4 + width * (i + 0.5)
        ours = np.array(
            [np.nan if r[f"{arm.name}:ours"] is None else r[f"{arm.name}:ours"] for r in rows]
        )
        std = np.array(
            [0.0 if r[f"{arm.name}:std"] is None else r[f"{arm.name}:std"] for r in rows]
        )
        ax.bar(pos, np.nan_to_num(ours), width, yerr=std, label=arm.name, capsize=1.5)
        paper = np.array(
            [np.nan if r[f"{arm.name}:paper"] is None else r[f"{arm.name}:paper"] for r in rows]
        )
        ax.hlines(paper, pos - width / 2, pos + width / 2, colors="black", linewidth=1.5)
    ax.plot([], [], color="black", label="paper")
    ax.set_xticks(
        x, [r["display_name"].split(" (")[0] for r in rows], rotation=60, ha="right", fontsize=8
    )
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"{result.spec.title}: AP per set (bars: ours; black ticks: the paper)", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


def plot_histograms(result: ExperimentResult, path: Path) -> Path:
    """Fig. 3: real vs fake score histograms, one row per arm, one column per chosen set."""
    arms = [a for a in result.arms if a.kind != "baseline"]
    sets = result.spec.histogram_sets or [s for s, _ in result.sets[:4]]
    names = dict(result.sets)
    fig, axes = new_figure(
        len(arms), len(sets), figsize=(2.8 * len(sets), 2.3 * len(arms)), squeeze=False
    )
    for i, arm in enumerate(arms):
        if not arm.runs:
            continue  # every seed diverged (summary.md says so)
        run = arm.runs[min(arm.runs)]  # the first seed
        for j, ds in enumerate(sets):
            ax = axes[i][j]
            if ds not in run.scores:
                ax.text(
                    0.5,
                    0.5,
                    f"{ds}\nnot evaluated",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                continue
            real, fake = run.scores[ds]
            bins = np.histogram_bin_edges(np.concatenate([real, fake]), bins=30)
            ax.hist(real, bins=bins, alpha=0.6, color="#4C72B0", label="real")
            ax.hist(fake, bins=bins, alpha=0.6, color="#C44E52", label="fake")
            ax.axvline(run.threshold, color="black", ls="--", lw=0.8)
            ax.set_title(f"{names.get(ds, ds)} — {arm.name}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.locator_params(axis="x", nbins=4)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Anomaly scores q (higher = more likely fake); dashed: validation threshold", fontsize=9
    )
    fig.tight_layout()
    return save_png(fig, path)


def plot_dr_curve(result: ExperimentResult, path: Path) -> Path:
    """Fig. 4: mAP and trainable parameters against the DR output width; no DR as lines."""
    _, averaged = table_sets(result, "table1_ap")
    points = []
    for arm in result.arms:
        if arm.kind == "baseline" or "flow" not in arm.settings or not arm.runs:
            continue
        ap, std = mean_over(arm, "ap", averaged)
        points.append(
            (
                int(arm.settings["flow"]["dr_dim"]),
                ap,
                std or 0.0,
                next(iter(arm.runs.values())).n_params,
            )
        )
    widths = sorted(p for p in points if p[0] > 0)
    fig, ax = new_figure(figsize=(5.5, 3.6))
    twin = ax.twinx()
    if widths:
        ax.errorbar(
            [p[0] for p in widths],
            [p[1] for p in widths],
            yerr=[p[2] for p in widths],
            marker="o",
            color="#4C72B0",
            label="mAP",
        )
        twin.plot(
            [p[0] for p in widths],
            [p[3] for p in widths],
            marker="s",
            color="#C44E52",
            label="parameters",
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks([p[0] for p in widths], [str(p[0]) for p in widths])
    for _dim, ap, _, n in (p for p in points if p[0] == 0):
        ax.axhline(ap, color="#4C72B0", ls="--", lw=1, label="mAP, no DR")
        twin.axhline(n, color="#C44E52", ls="--", lw=1, label="parameters, no DR")
    ax.set_xlabel("DR output width C")
    ax.set_ylabel("mAP (%)")
    twin.set_ylabel("trainable parameters")
    twin.set_yscale("log")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
    ax.set_title("DR width ablation (Fig. 4)", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
