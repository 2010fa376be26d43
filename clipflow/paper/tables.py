"""An experiment's files: every table as CSV + Markdown, results.json and the plots.

Every table names what produced it (backbone, weights, preprocessing, protocol, seeds,
training) in its header (provenance.py). The tables themselves: ours vs the paper per
compared table (comparison.py), one row per arm (arm_summary.py), the backbones
(backbone_table.py); the figures: plots.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.fileio import atomic_write_text, to_jsonable
from ..eval.report import to_csv
from .arm_summary import ARM_SUMMARY_COLUMNS, arm_summary_rows, summary_markdown
from .backbone_table import BACKBONE_COLUMNS, backbone_rows, backbones_markdown
from .comparison import PAPER_METRIC, comparison, comparison_markdown
from .plots import write_plots
from .spec import ExperimentResult


def write_tables(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """All tables, results.json and plots of one experiment into ``folder``."""
    folder = Path(folder)
    paths: dict[str, Path] = {}
    for comp in result.spec.compare:
        table, metric = comp["table"], comp.get("metric", PAPER_METRIC.get(comp["table"], "ap"))
        rows, columns, _ = comparison(result, table, metric)
        paths[f"{table}.csv"] = _write(folder / f"{table}.csv", to_csv(rows, tuple(columns)))
        paths[f"{table}.md"] = _write(
            folder / f"{table}.md", comparison_markdown(result, table, metric)
        )
    if "backbones" in result.spec.tables:
        rows = backbone_rows(result)
        paths["backbones.csv"] = _write(folder / "backbones.csv", to_csv(rows, BACKBONE_COLUMNS))
        paths["backbones.md"] = _write(folder / "backbones.md", backbones_markdown(result, rows))
    paths["summary.csv"] = _write(
        folder / "summary.csv", to_csv(arm_summary_rows(result), ARM_SUMMARY_COLUMNS)
    )
    paths["summary.md"] = _write(folder / "summary.md", summary_markdown(result))
    paths["results.json"] = _write(
        folder / "results.json", json.dumps(to_jsonable(results_json(result)), indent=1)
    )
    paths.update(write_plots(result, folder))
    return paths


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def results_json(result: ExperimentResult) -> dict:
    """Everything behind the tables: per arm, per seed, per set metrics; settings; metadata."""
    return {
        "experiment": result.spec.name,
        "title": result.spec.title,
        "meta": result.meta,
        "compare": result.spec.compare,
        "sets": [s for s, _ in result.sets],
        "arms": [
            {
                "name": a.name,
                "kind": a.kind,
                "paper": a.paper,
                "settings": a.settings,
                "seeds": {
                    str(seed): {
                        "rows": run.rows,
                        "threshold": run.threshold,
                        "n_params": run.n_params,
                        "checkpoint": run.checkpoint,
                        "seconds": run.seconds,
                    }
                    for seed, run in a.runs.items()
                },
                "failed": {str(seed): why for seed, why in a.failed.items()},
            }
            for a in result.arms
        ],
        "summary": arm_summary_rows(result),
        **({"backbones": backbone_rows(result)} if "backbones" in result.spec.tables else {}),
    }
