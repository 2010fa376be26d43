"""The ``perturb=chain`` summary: AP/AUC per chain length, robust AUC, the plot, chains.jsonl.

Written next to robustness.csv/.md/.json by :func:`clipflow.runs.robustness.run_robustness`:
``robustness_chain.csv`` (long: one row per length per set and mean row, length 0 = clean),
``robustness_chain.md`` (wide tables), ``robustness_chain.json`` (rows, robust summary and
the plotted series), ``robustness_chain.png`` (AP and AUC vs length, clean at 0) and
``chains.jsonl`` (every image's drawn chain per length, with its score).

robust AUC of a set (or mean row) = mean of its AUC over lengths 1..max_len (the area under
the AUC-vs-length step curve over [0, max_len], divided by max_len); robust AP likewise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write_text, display_path
from ..transforms.chains import ChainLength
from .html_report import Section, figure_section, table_html
from .means import in_paper, paper_first, summarize
from .report import describe_run, new_figure, save_png, to_csv, to_markdown

CHAIN_COLUMNS = (
    "length",
    "dataset",
    "display_name",
    "in_paper",
    "n_real",
    "n_fake",
    "ap",
    "auc",
    "acc@val",
)
ROBUST_COLUMNS = (
    "dataset",
    "display_name",
    "clean_ap",
    "robust_ap",
    "clean_auc",
    "robust_auc",
    "Δ auc",
)
MEAN_KEYS = ("mean", "mean_all")


def length_rows(length: int, rows: list[dict]) -> list[dict]:
    """One length's rows (0 = clean): the sets, paper's first, then the mean row(s)."""
    marked = [{**r, "in_paper": "yes" if in_paper(r["dataset"]) else "no"} for r in rows]
    return [
        {"length": length, **{k: r.get(k) for k in CHAIN_COLUMNS[1:]}}
        for r in [*paper_first(marked), *summarize(rows).table_rows()]
    ]


def robust_rows(table: list[dict]) -> list[dict]:
    """Per dataset: clean and robust (mean over lengths ≥ 1) AP and AUC.

    A dataset missing at some length (dropped there) gets no robust value rather than a mean
    over fewer lengths, which would not be comparable."""
    lengths = sorted({r["length"] for r in table if r["length"] > 0})
    value = {(r["length"], r["dataset"], m): r[m] for r in table for m in ("ap", "auc")}
    out = []
    for d, name in dict.fromkeys((r["dataset"], r["display_name"]) for r in table):
        row = {"dataset": d, "display_name": name}
        for m in ("ap", "auc"):
            per = [value.get((n, d, m)) for n in lengths]
            row[f"clean_{m}"] = value.get((0, d, m))
            row[f"robust_{m}"] = (
                None if not per or None in per else float(np.mean(np.array(per, float)))
            )
        row["Δ auc"] = (
            None
            if row["robust_auc"] is None or row["clean_auc"] is None
            else row["robust_auc"] - row["clean_auc"]
        )
        out.append(row)
    return out


def plot_series(table: list[dict]) -> dict:
    """What the plot draws: x = lengths (0 = clean), and per metric one y list per dataset
    label (the display name; the mean rows by their key)."""
    lengths = sorted({r["length"] for r in table})
    value = {(r["length"], r["dataset"]): r for r in table}
    labels = {
        r["dataset"]: r["dataset"] if r["dataset"] in MEAN_KEYS else r["display_name"]
        for r in table
    }
    return {
        "x": lengths,
        **{
            m: {
                labels[d]: [value[(n, d)][m] if (n, d) in value else None for n in lengths]
                for d in labels
            }
            for m in ("ap", "auc")
        },
    }


def chain_figure(series: dict):
    """AP and AUC (%) vs chain length, one line per set, the mean in black (not yet saved)."""
    from matplotlib import colormaps

    colors = colormaps["tab20"]
    fig, axes = new_figure(1, 2, figsize=(9.5, 3.6), squeeze=False, sharey=True)
    for ax, metric, title in zip(axes[0], ("ap", "auc"), ("AP (%)", "AUC (%)")):
        for j, (label, ys) in enumerate(series[metric].items()):
            mean = label == "mean"
            ax.plot(
                series["x"],
                [np.nan if y is None else y for y in ys],
                marker="o",
                ms=3,
                lw=2.2 if mean else 1.0,
                color="black" if mean else colors(j % 20),
                label=label,
                zorder=3 if mean else 2,
            )
        ax.set_title(title)
        ax.set_xlabel("chain length (0 = clean)")
        ax.set_xticks(series["x"])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("%")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def chain_markdown(table: list[dict], robust: list[dict], meta: dict) -> str:
    chain = meta.get("chain", {})
    text = f"# Robustness to random degradation chains\n\n{describe_run(meta)}\n\n"
    text += (
        f"For each length L = 1..{chain.get('max_len')} every image gets one random chain of L "
        f"distinct ops from {', '.join(chain.get('ops', []))} (strengths drawn per image from "
        f"seed {meta.get('seed')} and the file name; chains nested across L; every chain in "
        "chains.jsonl). Length 0 = the clean images. robust AUC = mean AUC over lengths "
        f"1..{chain.get('max_len')}; robust AP likewise.\n"
    )
    text += f"\n{meta['mean_note']}\n" if meta.get("mean_note") else ""
    text += f"\n## Robust AP / AUC (%)\n\n{to_markdown(robust, ROBUST_COLUMNS)}"
    for metric, title in (("auc", "AUC (%)"), ("ap", "AP (%)")):
        rows, columns = _wide(table, metric)
        text += f"\n## {title} per chain length\n\n{to_markdown(rows, columns)}"
    return text


def _wide(table: list[dict], metric: str) -> tuple[list[dict], tuple[str, ...]]:
    """Rows = lengths, columns = datasets (display names; the mean rows by key)."""
    header = {
        r["dataset"]: r["dataset"] if r["dataset"] in MEAN_KEYS else r["display_name"]
        for r in table
    }
    value = {(r["length"], r["dataset"]): r[metric] for r in table}
    rows = [
        {"length": n, **{header[d]: value.get((n, d)) for d in header}}
        for n in sorted({r["length"] for r in table})
    ]
    return rows, ("length", *header.values())


def chain_records(
    chains: Sequence[ChainLength], score_maps: Sequence[dict[str, float]]
) -> list[dict]:
    """chains.jsonl rows: per length, every scored file with its chain and score."""
    return [
        {"length": p.length, "path": display_path(path), "chain": p.chain_for(path), "score": s}
        for p, score_of in zip(chains, score_maps)
        for path, s in score_of.items()
    ]


def write_chain_summary(
    run_dir: Path, table: list[dict], records: list[dict], meta: dict
) -> dict[str, Path]:
    """robustness_chain.csv/.md/.json/.png and chains.jsonl; returns their paths."""
    run_dir = Path(run_dir)
    robust = robust_rows(table)
    series = plot_series(table)
    paths = {
        n: run_dir / n
        for n in (
            "robustness_chain.csv",
            "robustness_chain.md",
            "robustness_chain.json",
            "chains.jsonl",
        )
    }
    atomic_write_text(paths["robustness_chain.csv"], to_csv(table, CHAIN_COLUMNS))
    atomic_write_text(paths["robustness_chain.md"], chain_markdown(table, robust, meta))
    payload = {**meta, "rows": table, "robust": robust, "plot": series}
    atomic_write_text(paths["robustness_chain.json"], json.dumps(payload, indent=2, sort_keys=True))
    atomic_write_text(
        paths["chains.jsonl"], "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    )
    paths["robustness_chain.png"] = save_png(chain_figure(series), run_dir / "robustness_chain.png")
    return paths


def chain_section(table: list[dict]) -> Section:
    """report.html's part for ``perturb=chain``: robust AP/AUC per set and the curves."""
    note = (
        "<p>AP and AUC (%) per chain length (0 = the clean images); robust AUC = mean AUC "
        "over lengths 1..max_len, robust AP likewise (robustness_chain.md says how the chains "
        "are drawn).</p>" + table_html(robust_rows(table), ROBUST_COLUMNS, css="chain")
    )
    fig = chain_figure(plot_series(table))
    return figure_section("Random degradation chains", fig, note, salt="chain")
