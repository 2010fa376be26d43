"""clipflow-eval perturb=...: one results block per perturbation, a summary, a plot."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import make_full_benchmark

import clipflow.features.extract
from clipflow.cli import evaluate as eval_cli
from clipflow.eval.means import PAPER_SETS
from clipflow.runs.evaluate import run_eval
from clipflow.runs.robustness import robustness_figure, run_robustness, wide_table
from clipflow.settings.config import EvalSettings
from clipflow.transforms.perturb import resolve_perturbations

# In-process Hydra runs must not configure logging for the rest of the test session.
QUIET = ("hydra/job_logging=none", "hydra/hydra_logging=none")
SETS = ["progan", "biggan", "guided", "ldm_200", "mygen"]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _settings(trained_run: Path, mini_bench: Path, seed: int = 0) -> EvalSettings:
    s = EvalSettings(ckpt=str(trained_run), device="cpu", seed=seed)
    s.data.test_root, s.data.num_workers, s.data.batch_size = str(mini_bench / "test"), 0, 16
    return s


PERTURB = (
    "[jpeg95,jpeg30,blur4,down0.5,jpeg50+blur2]"  # every family; `all` is resolved in test_perturb
)
NAMES = ["jpeg95", "jpeg30", "blur4", "down0.5", "jpeg50+blur2"]


@pytest.fixture(scope="module")
def robust(trained_run: Path, mini_bench: Path) -> tuple[Path, list[str]]:
    """clipflow-eval perturb=... in-process (its Hydra main), counting image decodes."""
    out, decoded = mini_bench / "eval_robust", []
    real_load = clipflow.features.extract.load_image
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            clipflow.features.extract,
            "load_image",
            lambda p, *a, **k: decoded.append(str(p)) or real_load(p, *a, **k),
        )
        mp.setattr(
            sys,
            "argv",
            [
                "clipflow-eval",
                f"ckpt={trained_run}",
                f"data.test_root={mini_bench / 'test'}",
                f"perturb={PERTURB}",
                "device=cpu",
                "data.num_workers=0",
                "data.batch_size=16",
                *QUIET,
                f"hydra.run.dir={out}",
            ],
        )
        eval_cli.main()
    return out, decoded


@pytest.fixture(scope="module")
def robust_dir(robust) -> Path:
    return robust[0]


def test_one_results_block_per_perturbation(robust_dir: Path):
    assert sorted(p.name for p in (robust_dir / "perturb").iterdir()) == sorted(NAMES)
    for name in NAMES:
        block = robust_dir / "perturb" / name
        for f in (
            "results.csv",
            "results.md",
            "metrics.json",
            "scores.csv",
            "skipped.txt",
            "ap_per_dataset.png",
        ):
            assert (block / f).is_file(), (name, f)
        assert [r["dataset"] for r in _csv(block / "results.csv")] == [*SETS, "mean", "mean_all"]
        assert "broken.jpg" in (block / "skipped.txt").read_text()  # skipped alike in every block
        assert (block / "results.md").read_text().startswith(f"# Results under `{name}`")
        assert json.loads((block / "metrics.json").read_text())["perturbation"]["name"] == name
        per_set = [r for r in _csv(block / "results.csv") if r["dataset"] in SETS]
        counts = sum(int(r["n_real"]) + int(r["n_fake"]) for r in per_set)
        assert len(_csv(block / "scores.csv")) == counts  # one score per evaluated image
        assert (block / "ap_per_dataset.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clean = _csv(robust_dir / "results.csv")  # the clean evaluation, as without perturb
    assert [r["dataset"] for r in clean] == [*SETS, "mean", "mean_all"]


def test_metadata_records_parameters_and_seed(robust_dir: Path):
    meta = json.loads((robust_dir / "perturb" / "jpeg50+blur2" / "metrics.json").read_text())
    assert meta["perturbation"]["steps"] == [
        {"op": "jpeg", "quality": 50},
        {"op": "blur", "sigma": 2.0},
    ]
    assert meta["seed"] == 0 and [p["name"] for p in meta["perturbations"]] == NAMES
    assert json.loads((robust_dir / "metrics.json").read_text())["perturbation"] is None
    summary = json.loads((robust_dir / "robustness.json").read_text())
    assert (
        summary["checkpoint_sha256"] == meta["checkpoint_sha256"] and len(summary["rows"]) == 6 * 7
    )
    assert "4 of the paper's 19 sets" in summary["mean_note"] and "mygen" in summary["mean_note"]


def test_summary_matches_each_block(robust_dir: Path):
    rows = _csv(robust_dir / "robustness.csv")
    assert [r["perturbation"] for r in rows[::7]] == ["none", *NAMES]
    assert {r["in_paper"] for r in rows if r["dataset"] == "mygen"} == {"no"}
    for r in rows:
        block = (
            robust_dir
            if r["perturbation"] == "none"
            else robust_dir / "perturb" / r["perturbation"]
        )
        ref = next(x for x in _csv(block / "results.csv") if x["dataset"] == r["dataset"])
        assert r["ap"] == ref["ap"] and r["acc@val"] == ref["acc@val"], r
    aps = {r["perturbation"]: r["ap"] for r in rows if r["dataset"] == "mean"}
    assert len(set(aps.values())) > 1  # the perturbations change the scores
    md = (robust_dir / "robustness.md").read_text()
    assert md.count("| jpeg30 |") == 2 and "Δ mean" in md and "Random-weight backbone" in md
    assert "| mean | mean_all | Δ mean |" in md and "not the paper's mean" in md
    # the clean block's calibration warnings, said in the summary too (2 calibration reals)
    assert "are blank: the checkpoint has 2 calibration reals" in md
    summary = json.loads((robust_dir / "robustness.json").read_text())
    assert "needs 99" in summary["warnings"]["calibration_size"]


def test_plot_has_a_panel_per_family(robust_dir: Path):
    png = (robust_dir / "robustness_ap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 3 * height  # four panels side by side (jpeg, blur, resize, combined)


def test_report_shows_the_clean_sets_and_the_robustness_curves(robust_dir: Path):
    page = (robust_dir / "report.html").read_text(encoding="utf-8")
    assert page.count('<section class="set"') == len(SETS)  # the clean images, per set
    assert "Robustness: AP under each perturbation" in page
    assert page.count("<svg") == len(SETS) + 1  # + the AP-vs-strength curves
    table = page[page.index('<table class="robustness">') :]
    assert all(f">{name}<" in table for name in NAMES)  # a row per perturbation
    assert not (robust_dir / "perturb" / "jpeg95" / "report.html").exists()  # one per run


def test_plot_draws_the_summary_numbers(robust_dir: Path):
    """Each panel: the clean AP then its family's perturbations, weakest first, per dataset."""
    summary = json.loads((robust_dir / "robustness.json").read_text())["rows"]
    fig = robustness_figure(summary)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["jpeg", "blur", "resize", "combined"]

    # lines are labelled with the display name; the two mean rows with their short key
    def label(r: dict) -> str:
        return r["dataset"] if r["dataset"] in ("mean", "mean_all") else r["display_name"]

    ap = {(r["perturbation"], label(r)): r["ap"] for r in summary}
    order = {
        "jpeg": ["jpeg95", "jpeg30"],
        "blur": ["blur4"],
        "resize": ["down0.5"],
        "combined": ["jpeg50+blur2"],
    }
    datasets = list(dict.fromkeys(label(r) for r in summary))
    for ax in axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == sorted(datasets)
        for d, line in lines.items():
            want = [ap[("none", d)]] + [ap[(n, d)] for n in order[ax.get_title()]]
            assert list(line.get_ydata()) == pytest.approx(want), (ax.get_title(), d)


def test_clean_block_equals_a_plain_evaluation(
    robust_dir: Path, trained_run: Path, mini_bench: Path, tmp_path
):
    plain = run_eval(_settings(trained_run, mini_bench), tmp_path / "plain")
    ours, ref = _csv(robust_dir / "results.csv"), _csv(plain["results.csv"])
    assert [r["dataset"] for r in ours] == [r["dataset"] for r in ref]
    for a, b in zip(ours, ref):
        assert a["in_paper"] == b["in_paper"] and a["display_name"] == b["display_name"]
        text = ("dataset", "display_name", "in_paper")

        # empty: a conformal column (ours) whose level the 2 calibration reals cannot reach
        def num(v: str):
            return round(float(v), 3) if v != "" else v

        assert {k: num(a[k]) for k in a if k not in text} == {
            k: num(b[k]) for k in b if k not in text
        }


def test_each_image_is_decoded_once_and_runs_are_deterministic(
    robust, trained_run, mini_bench, tmp_path
):
    out, decoded = robust
    n_files = len({r["path"] for r in _csv(out / "scores.csv")}) + 1  # + the unreadable broken.jpg
    assert len(decoded) == len(set(decoded)) == n_files  # one decode feeds all six variants
    # a perturbation's scores depend neither on the run nor on the other variants in the pass
    again = run_robustness(
        _settings(trained_run, mini_bench), resolve_perturbations("blur4"), tmp_path
    )
    # Same files, labels and scores; scores to float32 precision, not bit for bit: the other
    # variants change the backbone's batch shapes, and CPU kernels may then sum in another order.
    _assert_same_scores(again["scores.csv"], out / "scores.csv")
    _assert_same_scores(again["perturb/blur4/scores.csv"], out / "perturb" / "blur4" / "scores.csv")


def _assert_same_scores(a: Path, b: Path) -> None:
    rows_a, rows_b = _csv(a), _csv(b)
    ids = ("path", "dataset", "label")
    assert [[r[k] for k in ids] for r in rows_a] == [[r[k] for k in ids] for r in rows_b]
    scores_a = np.array([float(r["score"]) for r in rows_a])
    scores_b = np.array([float(r["score"]) for r in rows_b])
    np.testing.assert_allclose(scores_a, scores_b, rtol=1e-5, atol=1e-6)


def test_full_archive_summary_means_the_papers_19(trained_run: Path, tmp_path: Path):
    s = _settings(trained_run, tmp_path)
    s.data.test_root = str(make_full_benchmark(tmp_path / "test"))
    files = run_robustness(s, resolve_perturbations("blur4"), tmp_path / "out")
    rows = _csv(files["robustness.csv"])
    extras = ["stylegan2", "whichfaceisreal"]
    for pert in ("none", "blur4"):
        mine = {r["dataset"]: r for r in rows if r["perturbation"] == pert}
        assert list(mine) == [*PAPER_SETS, *extras, "mean", "mean_all"]
        assert [mine[x]["in_paper"] for x in extras] == ["no", "no"]
        for key, sets in (("mean", PAPER_SETS), ("mean_all", [*PAPER_SETS, *extras])):
            want = np.mean([float(mine[x]["ap"]) for x in sets])
            assert float(mine[key]["ap"]) == pytest.approx(want, abs=1e-5), (pert, key)
    block = json.loads((tmp_path / "out" / "perturb" / "blur4" / "metrics.json").read_text())
    assert block["mean_info"]["is_paper_mean"] and block["mean_all_info"]["n_sets"] == 21
    assert "the paper's 19 sets" in json.loads(files["robustness.json"].read_text())["mean_note"]


def test_wide_table_reports_change_from_clean():
    summary = [
        {"perturbation": p, "dataset": k, "display_name": d, "ap": v}
        for p, k, d, v in [
            ("none", "a", "A", 90.0),
            ("none", "mean", "Mean (1 of the paper's 19 sets; ...)", 80.0),
            ("none", "mean_all", "Mean of all 2 sets found", 85.0),
            ("blur2", "a", "A", 70.0),
            ("blur2", "mean", "Mean (1 of the paper's 19 sets; ...)", 60.0),
            ("blur2", "mean_all", "Mean of all 2 sets found", 50.0),
        ]
    ]
    rows, columns = wide_table(summary, "ap")
    assert columns == ("perturbation", "A", "mean", "mean_all", "Δ mean")
    assert rows == [  # Δ follows `mean`, not `mean_all`
        {"perturbation": "none", "A": 90.0, "mean": 80.0, "mean_all": 85.0, "Δ mean": 0.0},
        {"perturbation": "blur2", "A": 70.0, "mean": 60.0, "mean_all": 50.0, "Δ mean": -20.0},
    ]


def test_without_perturb_the_cli_runs_the_plain_evaluation(monkeypatch, tmp_path: Path, capsys):
    seen = {}

    def fake_run_eval(settings, run_dir):
        seen["ckpt"] = settings.ckpt
        (tmp_path / "results.md").write_text("plain\n")
        return {name: tmp_path / name for name in ("results.md", "results.csv", "report.html")}

    # clipflow-eval imports run_eval when it runs: patched where it is defined
    monkeypatch.setattr("clipflow.runs.evaluate.run_eval", fake_run_eval)
    monkeypatch.setattr(
        sys, "argv", ["clipflow-eval", "ckpt=x", *QUIET, f"hydra.run.dir={tmp_path}"]
    )
    eval_cli.main()
    assert seen == {"ckpt": "x"} and "plain" in capsys.readouterr().out
    assert not (tmp_path / "perturb").exists()


def test_unknown_perturbation_is_a_usage_error(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setattr(
        sys,
        "argv",
        ["clipflow-eval", "ckpt=x", "perturb=sharpen2", *QUIET, f"hydra.run.dir={tmp_path}"],
    )
    with pytest.raises(SystemExit) as info:
        eval_cli.main()
    err = capsys.readouterr().err.strip()
    assert (
        info.value.code == 2
        and err.startswith("error: perturb=sharpen2: unknown perturbation 'sharpen2'")
        and "\n" not in err
    )


def test_reencode_with_perturbations_is_refused_before_any_work(tmp_path: Path):
    """The robustness pass builds its own variants: data.reencode would be recorded in the
    results but not applied. The Python API refuses it like the CLI (nothing is read)."""
    from clipflow.settings.config import DataConfig, SettingsError

    s = EvalSettings(
        ckpt=str(tmp_path / "missing"), data=DataConfig(test_root=str(tmp_path), reencode="jpeg96")
    )
    with pytest.raises(SettingsError, match="data.reencode cannot be combined with perturb="):
        run_robustness(s, resolve_perturbations(["jpeg50"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
