"""`make reproduce-mini` end to end: every experiment on a 19-set miniature, tiny backbone, CPU.

One in-process run of scripts/reproduce_mini.py (seed 0, to stay within the suite's time
budget) is shared by every test of this module; a second seed is added for one experiment.
"""

from __future__ import annotations

import csv
import json
import runpy
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from clipflow.cli.reproduce import parse_request
from clipflow.data.layouts import PAPER_FAMILIES, PAPER_ORDER
from clipflow.eval.report import RANDOM_WARNING
from clipflow.paper.mini import mini_arguments
from clipflow.paper.reproduce import run_reproduce
from clipflow.paper.results import find_row, paper_row, paper_sets

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["table1", "table3", "table4", "fig4", "normalization", "fig3", "table5", "choices"]
EXPERIMENTS += ["realonly"]  # ours, run by name: the miniature asks for experiment=[all,realonly]


SCRIPT = REPO / "scripts" / "reproduce_mini.py"


def _script():
    """scripts/reproduce_mini.py as a module namespace (it is a script, not a package)."""
    return runpy.run_path(str(SCRIPT))


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reproduce-mini")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TQDM_DISABLE", "1")
        _script()["main"](["--out", str(out), "--images", "2", "--seeds", "0"])
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _f(cell: str) -> float | None:
    return float(cell) if cell else None


COMPARED = {
    "table1": ["table1_ap", "table2_acc"],
    "table3": ["table3_ap"],
    "table4": ["table4_ap"],
    "fig4": ["fig4_ap"],
    "normalization": ["normalization_ap"],
    "fig3": ["table1_ap"],
    "table5": ["table5_ap"],
    "choices": ["table1_ap", "table2_acc"],
    "realonly": ["table1_ap", "table2_acc"],
}


def _arm_names(rows: list[dict]) -> list[str]:
    return [c[: -len(":ours")] for c in rows[0] if c.endswith(":ours")]


def test_every_table_mean_is_the_mean_of_its_rows_next_to_the_paper(mini: Path):
    """Each mean row averages its per-set rows (the paper's sets); the paper's numbers sit by."""
    for exp, tables in COMPARED.items():
        results = json.loads((mini / exp / "results.json").read_text())
        papers = {a["name"]: a["paper"] for a in results["arms"]}
        for table in tables:
            rows = _csv(mini / exp / f"{table}.csv")
            sets, mean = rows[:-1], rows[-1]
            assert mean["dataset"] == "mean"
            averaged = (  # the paper's sets; Fig. 4 has none stored: the 19 of the benchmark
                [r for r in sets if r["dataset"] in paper_sets(table)]
                or [r for r in sets if r["dataset"] in PAPER_ORDER]
                or sets
            )
            for arm in _arm_names(rows):
                ours = [_f(r[f"{arm}:ours"]) for r in averaged]
                assert None not in ours, f"{exp}/{table}/{arm}: a set is missing"
                assert _f(mean[f"{arm}:ours"]) == pytest.approx(np.mean(ours), abs=1e-4)
                try:
                    prow = find_row(table, papers[arm])
                except KeyError:  # e.g. Mahalanobis in Table II: the paper has no number
                    prow = None
                if prow is None:  # ...or no paper row at all (kNN, reconstruction distance)
                    assert mean[f"{arm}:paper"] == ""
                    continue
                for r in sets:
                    assert _f(r[f"{arm}:paper"]) == prow.value(r["dataset"]), (exp, arm, r)
            md = (mini / exp / f"{table}.md").read_text()
            mean_line = next(line for line in md.splitlines() if line.startswith("| **Mean"))
            for arm in _arm_names(rows):  # ours, the paper's and Δ side by side, as in the CSV
                cells = [f"{_f(mean[f'{arm}:ours']):.2f}"]
                if mean[f"{arm}:paper"]:
                    cells += [f"{_f(mean[f'{arm}:paper']):.2f}", f"{_f(mean[f'{arm}:diff']):+.2f}"]
                assert " | ".join(cells) in mean_line, (exp, table, arm, mean_line)


def test_plots_and_index_agree_with_the_tables(mini: Path):
    plots = {"fig3": ["histograms.png"], "fig4": ["dr_width.png", "ap_per_set.png"]}
    index = (mini / "index.md").read_text()
    for exp in EXPERIMENTS:
        for name in plots.get(exp, ["ap_per_set.png"]):
            data = (mini / exp / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{exp}/{name}"
        for row in _csv(mini / exp / "summary.csv"):  # every arm's mAP and the paper's, indexed
            cells = [row["arm"], f"{float(row['mAP']):.2f}"]
            cells += [f"{float(row['paper_mAP']):.2f}"] if row["paper_mAP"] else ["—"]
            assert "| " + " | ".join(cells) + " |" in index, (exp, row["arm"])


def test_every_experiment_has_a_report_page_and_the_index_links_them(mini: Path):
    index = (mini / "report.html").read_text(encoding="utf-8")
    for exp in EXPERIMENTS:
        assert f'<a href="{exp}/report.html">' in index
        page = (mini / exp / "report.html").read_text(encoding="utf-8")
        sets = {r["dataset"] for r in _csv(mini / exp / f"{COMPARED[exp][0]}.csv")} - {"mean"}
        assert page.count('<section class="set"') == len(sets), exp  # a figure per set
        assert page.count('<table class="comparison">') == len(COMPARED[exp])
        assert "data:image/png;base64," in page  # the experiment's plots, embedded
    assert "data:image/jpeg;base64," in (mini / "table1" / "report.html").read_text()


@pytest.mark.slow
def test_an_experiment_report_reads_in_a_browser(mini: Path, tmp_path: Path):
    from browser import what_a_reader_sees

    seen = what_a_reader_sees(mini / "table1" / "report.html", tmp_path)
    assert len(seen["sets"]) == len(PAPER_ORDER)
    assert all(s["svgs"] == 1 and s["decoded"] == s["images"] for s in seen["sets"])
    assert sum(s["images"] for s in seen["sets"]) > 0 and not seen["scripts_loaded"]


def test_table1_has_19_sets_plus_mean_with_paper_numbers_and_differences(mini: Path):
    rows = _csv(mini / "table1" / "table1_ap.csv")
    assert [r["dataset"] for r in rows] == [*PAPER_ORDER, "mean"]
    for arm, (method, variant) in {
        "N": ("Ours", "N"),
        "P": ("Ours", "P"),
        "N+P": ("Ours", "N+P"),
        "UnivFD linear probe": ("UnivFD", "LC"),
    }.items():
        paper = paper_row("table1_ap", method, variant)
        for r in rows:
            stored = paper.mean if r["dataset"] == "mean" else paper.values[r["dataset"]]
            assert _f(r[f"{arm}:paper"]) == pytest.approx(stored)
            assert _f(r[f"{arm}:diff"]) == pytest.approx(_f(r[f"{arm}:ours"]) - stored, abs=1e-5)
            assert r[f"{arm}:std"] == ""  # one seed: no standard deviation
    acc = _csv(mini / "table1" / "table2_acc.csv")
    assert _f(acc[-1]["N+P:paper"]) == 87.30 and acc[-1]["Mahalanobis (natural only):paper"] == ""
    md = (mini / "table1" / "table1_ap.md").read_text()
    assert "backbone `clipflow-tiny`" in md and "seeds [0]" in md and "protocol `all`" in md
    assert RANDOM_WARNING in md


def test_arms_vary_what_the_paper_varies(mini: Path):
    arms = {
        a["name"]: a for a in json.loads((mini / "table3" / "results.json").read_text())["arms"]
    }
    assert arms["smoothing"]["settings"]["proxy"]["name"] == "smoothing"
    assert arms["fm_phase_only"]["settings"]["proxy"]["name"] == "freq_phase"
    fig4 = json.loads((mini / "fig4" / "results.json").read_text())
    widths = [a["settings"]["flow"]["dr_dim"] for a in fig4["arms"]]
    params = [a["seeds"]["0"]["n_params"] for a in fig4["arms"]]
    assert widths == [0, 16, 32, 64, 128, 256, 512] and params[1:] == sorted(params[1:])
    norm = json.loads((mini / "normalization" / "results.json").read_text())
    assert [a["settings"]["flow"]["normalize"] for a in norm["arms"]] == [True, False]


def _mini_args(mini: Path, *extra: str) -> list[str]:
    data = mini / "data"
    return [
        f"data.train_root={data / 'progan_train'}",
        f"data.val_root={data / 'progan_val'}",
        f"data.test_root={data / 'test'}",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "data.per_class=null",
        f"data.cache_dir={mini / 'cache'}",
        "train.epochs=2",
        "flow.n_blocks=2",
        *extra,
    ]


def test_seeds_give_mean_and_std_and_seed0_reproduces(mini: Path):
    argv = ["experiment=normalization", "seeds=[0,1]", f"out={mini / 'two_seeds'}"]
    run_reproduce(parse_request([*argv, *_mini_args(mini)]))
    two = _csv(mini / "two_seeds" / "normalization" / "normalization_ap.csv")
    one = _csv(mini / "normalization" / "normalization_ap.csv")
    seed0 = _csv(mini / "two_seeds" / "normalization" / "arms" / "l2_on" / "seed0" / "results.csv")
    seed1 = _csv(mini / "two_seeds" / "normalization" / "arms" / "l2_on" / "seed1" / "results.csv")
    for r, r1, a, b in zip(two, one, seed0, seed1):
        assert _f(r["l2_on:ours"]) == pytest.approx((float(a["ap"]) + float(b["ap"])) / 2, abs=1e-5)
        assert _f(r["l2_on:std"]) == pytest.approx(
            np.std([float(a["ap"]), float(b["ap"])], ddof=1), abs=1e-5
        )
        assert float(a["ap"]) == pytest.approx(
            _f(r1["l2_on:ours"]), abs=1e-5
        )  # seed 0 is seed 0 again
    assert _f(two[-1]["l2_on:paper"]) == 95.56 and _f(two[-1]["l2_off:paper"]) == 93.41
    assert " ± " in (mini / "two_seeds" / "normalization" / "normalization_ap.md").read_text()


def test_identical_arms_are_trained_once_and_agree(mini: Path):
    def scores(exp, arm):
        return [float(r["score"]) for r in _csv(mini / exp / "arms" / arm / "seed0" / "scores.csv")]

    # Table I's N+P, Table III's FM and Table IV's low band are one model...
    assert scores("table1", "NplusP") == scores("table3", "fm") == scores("table4", "low")
    assert not (
        mini / "table4" / "arms" / "low" / "seed0" / "model.safetensors"
    ).exists()  # saved once
    # ...while masking another band trains another one (AP on 2 + 2 images can tie; scores do not).
    assert scores("table1", "NplusP") != scores("table4", "mid")


def test_per_set_numbers_recompute_from_scores(mini: Path):
    folder = mini / "table1" / "arms" / "NplusP" / "seed0"
    scores = _csv(folder / "scores.csv")
    for row in _csv(folder / "results.csv"):
        mine = [s for s in scores if s["dataset"] == row["dataset"]]
        y, s = (
            np.array([int(m["label"]) for m in mine]),
            np.array([float(m["score"]) for m in mine]),
        )
        assert float(row["ap"]) == pytest.approx(100 * average_precision_score(y, s), abs=1e-4)
    assert (mini / "table1" / "arms" / "P" / "seed0" / "model.safetensors").is_file()


def test_table5_new_generators_and_the_same_checkpoint(mini: Path):
    rows = _csv(mini / "table5" / "table5_ap.csv")
    assert [r["dataset"] for r in rows] == ["dalle3", "deepfloyd", "realvisxl", "sd15", "mean"]
    assert [_f(r["P:paper"]) for r in rows] == [90.48, 97.17, 90.70, 94.93, 93.32]
    assert _f(rows[0]["UnivFD linear probe:paper"]) == 61.78
    # ckpt=: table1's P model (seed 0) scores the new generators exactly as table5's P arm did
    data = mini / "data"
    run_reproduce(
        parse_request(
            [
                "experiment=table5",
                f"ckpt={mini / 'table1' / 'arms' / 'P' / 'seed0'}",
                f"extra_roots=[{data / 'new_generators'}]",
                f"out={mini / 'from_ckpt'}",
                "device=cpu",
                "data.num_workers=0",
                f"data.cache_dir={mini / 'cache'}",
                "baselines=[]",
            ]
        )
    )
    again = _csv(mini / "from_ckpt" / "table5" / "table5_ap.csv")
    seed0 = _csv(mini / "table5" / "arms" / "P" / "seed0" / "results.csv")
    assert [_f(r["checkpoint:ours"]) for r in again[:-1]] == pytest.approx(
        [_f(r["ap"]) for r in seed0]
    )


def test_make_target_runs_the_script_with_arguments_it_accepts():
    """`make reproduce-mini` runs this very script, with arguments its parser takes."""
    proc = subprocess.run(
        # --no-print-directory: under a parent make (CI runs `make test`) make -n would add
        # "Entering/Leaving directory" lines around the recipe
        ["make", "-n", "--no-print-directory", "-W", "pyproject.toml", "reproduce-mini"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    recipe = [line for line in proc.stdout.splitlines() if "reproduce_mini.py" in line]
    argv = shlex.split(recipe[-1])
    assert Path(REPO / argv[1]).resolve() == SCRIPT
    args = _script()["parse_args"](argv[2:])
    assert args.out == Path("outputs/reproduce-mini") and args.seeds == "0,1"
    assert args.fast is False  # the paper's fresh draws; --fast is the shortcut
    assert _script()["parse_args"](["--fast"]).fast is True
    data = {k: Path(k) for k in ("train_root", "val_root", "test_root", "extra_root")}
    assert "fast=true" in mini_arguments(data, Path("o"), [0], fast=True)
    assert "fast=true" not in mini_arguments(data, Path("o"), [0])


def test_paper_experiments_draw_fresh_per_epoch_by_default(mini: Path):
    """No fast=true: every table says fresh draws; choices' cached arm is the one exception."""
    for exp in EXPERIMENTS:
        results = json.loads((mini / exp / "results.json").read_text())
        assert results["meta"]["fast"] is False and results["meta"]["train"]["views"] == 0, exp
        assert results["meta"]["train"]["augmentation"] == "fresh per epoch", exp
        assert "training draws **fresh per epoch**" in (mini / exp / "summary.md").read_text()
    arms = json.loads((mini / "choices" / "results.json").read_text())["arms"]
    views = {a["name"]: a["settings"]["data"]["views"] for a in arms}
    assert views.pop("cached_view") == 1 and views and set(views.values()) == {0}


def test_choices_table_mean_and_std_per_arm_next_to_the_paper(mini: Path):
    """experiment=choices at two seeds: mAP / acc@val / acc@oracle ± std per arm, paper N+P."""
    out = mini / "choices_two_seeds"
    run_reproduce(
        parse_request(["experiment=choices", "seeds=[0,1]", f"out={out}", *_mini_args(mini)])
    )
    summary = _csv(out / "choices" / "summary.csv")
    assert [r["arm"] for r in summary] == [
        "default",
        "loss_paper",
        "loss_hinge",
        "mask_clean",
        "cached_view",
        "pair_crop",
        "allinone",
        "allinone_capacity",
        "depth_4",
        "depth_16",
        "width_1",
        "width_4",
        "clamp_1",
        "clamp_4",
        "val_closed",
        "val_pixels",
        "val_square",
    ]
    md = (out / "choices" / "summary.md").read_text()
    assert "one-at-a-time from the default" in md.lower()
    assert "acc@oracle (tuned on test labels)" in md and "over the 2 seeds [0, 1]" in md
    for row in summary:
        assert _f(row["paper_mAP"]) == 95.56 and _f(row["paper_acc"]) == 87.30
        for key in ("mAP", "mean_acc", "mean_acc@oracle"):
            assert row[f"{key}_std"] != "", (row["arm"], key)
        seeds = [
            _csv(out / "choices" / "arms" / row["arm"] / f"seed{k}" / "results.csv") for k in (0, 1)
        ]
        per_seed = [
            np.mean([float(r["ap"]) for r in s if r["dataset"] in PAPER_ORDER]) for s in seeds
        ]
        assert _f(row["mAP"]) == pytest.approx(np.mean(per_seed), abs=1e-4)
        assert _f(row["mAP_std"]) == pytest.approx(np.std(per_seed, ddof=1), abs=1e-4)
        for family, members in PAPER_FAMILIES.items():  # the paper's groups of sets
            found = [[float(r["ap"]) for r in x if r["dataset"] in members] for x in seeds]
            if all(found):
                want = np.mean([np.mean(f) for f in found])
                assert _f(row[f"mAP_{family}"]) == pytest.approx(want, abs=1e-4), family
        assert row["n_diverged"] == str(len(row["failed_seeds"].split()))
        cells = [
            row["arm"],
            f"{_f(row['mAP']):.2f} ± {_f(row['mAP_std']):.2f}",
            "95.56",
        ]
        assert any(
            line.startswith(f"| {row['arm']} |") and all(c in line for c in cells)
            for line in md.splitlines()
        ), row["arm"]

    # arms whose results are identical at both seeds are named under the table, with a reason
    first: dict[tuple, str] = {}
    for row in summary:
        arm_dir = out / "choices" / "arms" / row["arm"]
        key = tuple((arm_dir / f"seed{k}" / "results.csv").read_text() for k in (0, 1))
        if key in first:
            assert f"**{first[key]}** and **{row['arm']}** gave bit-identical" in md, row["arm"]
        else:
            first.setdefault(key, row["arm"])
    assert ("Identical rows" in md) == (len(first) < len(summary))

    # the arms train different models: the block, the loss and the draws change the scores
    def scores(arm):
        return _csv(out / "choices" / "arms" / arm / "seed0" / "scores.csv")

    default = [r["score"] for r in scores("default")]
    for arm in ("loss_hinge", "mask_clean", "cached_view", "pair_crop", "allinone"):
        assert [r["score"] for r in scores(arm)] != default, arm
    assert (out / "choices" / "ap_per_set.png").read_bytes()[:4] == b"\x89PNG"


def test_realonly_table_compares_every_real_only_row_on_one_cache(mini: Path):
    """experiment=realonly: the flow with freq-mask, reconstruction and both proxies, kNN,
    Gaussian and reconstruction distance, same columns, the paper's N+P as a reference row;
    the reconstructions sit in the cache next to the features."""
    rows = {r["arm"]: r for r in _csv(mini / "realonly" / "realonly.csv")}
    summary = {r["arm"]: r for r in _csv(mini / "realonly" / "summary.csv")}
    assert list(rows) == list(summary) and len(rows) == 6
    assert {"freq_mask", "recon", "both", "kNN cosine (natural only)"} <= set(rows)
    for arm, r in rows.items():  # same mAP and acc@val as the summary; every column filled
        assert _f(r["mAP"]) == pytest.approx(_f(summary[arm]["mAP"]), abs=1e-6)
        assert _f(r["mean_acc@val"]) == pytest.approx(_f(summary[arm]["mean_acc"]), abs=1e-6)
        assert all(r[c] != "" for c in ("tpr@fpr1%", "tpr@fpr5%", "mAP_gan", "mAP_all")), arm
    md = (mini / "realonly" / "realonly.md").read_text()
    assert "| *paper N+P (Tables I, II; reference)* | paper | *95.56* | *87.30* |" in md
    png = (mini / "realonly" / "realonly.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the freq-mask arm is Table I's N+P, trained once; the recon arm another model
    results = json.loads((mini / "realonly" / "results.json").read_text())
    settings = {a["name"]: a["settings"] for a in results["arms"]}
    assert settings["recon"]["proxy"]["autoencoder"] == "tiny"  # tiny_arms under backbone=tiny
    assert settings["both"]["proxy"]["freq_share"] == 0.5
    assert len(list((mini / "cache").glob("recon1-*/*.png"))) > 0
