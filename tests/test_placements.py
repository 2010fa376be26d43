"""Every benchmark in every documented placement, and every incomplete tree named (#24).

Trees come from clipflow.data.synthetic (tiny images); the placements from each benchmark's
Layout record, which docs/datasets.md lists."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clipflow.cli import evaluate as eval_cli
from clipflow.data import synthetic as syn
from clipflow.data.benchmarks import LAYOUTS, BenchmarkNotFound, find_benchmark
from clipflow.data.layouts import PAPER_ORDER
from clipflow.runs.check_data import CheckRequest, run_check

REPO = Path(__file__).resolve().parents[1]
HOME = "data/benchmarks"
EXPECTED = {
    "univfd": set(PAPER_ORDER),
    "genimage": {"genimage/sdv14", "genimage/midjourney", "genimage/adm"},
    "chameleon": {"chameleon"},
    "synthbuster": {"synthbuster/dalle2", "synthbuster/glide"},
    "wildrf": {"wildrf/reddit", "wildrf/twitter", "wildrf/facebook"},
}
CASES = [
    (bench, form, placement)
    for bench, layout in LAYOUTS.items()
    for form in syn.FORMS[bench]
    for placement in layout.placements
]


def _test_root(tmp_path: Path, bench: str, form: str, placement: str) -> Path:
    if bench == "chameleon" and form == "nested" and placement.endswith("Chameleon/test"):
        placement = placement.replace("Chameleon/test", "Chameleon/Chameleon/test")
    return tmp_path / placement


def _check(root: Path, benchmark: str = "auto") -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(CheckRequest(test_root=str(root), benchmark=benchmark), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize(("bench", "form", "placement"), CASES, ids=["-".join(c) for c in CASES])
def test_every_documented_placement_is_found(tmp_path: Path, bench: str, form: str, placement: str):
    layout = LAYOUTS[bench]
    syn.make_placed(tmp_path, bench, form, layout.home, layout.folder)
    root = _test_root(tmp_path, bench, form, placement)
    for asked in ("auto", bench):
        found = find_benchmark(root, asked)
        assert {s.name for s in found.sets} == EXPECTED[bench], (asked, root)
        assert {s.benchmark for s in found.sets} == {bench}
        assert {s.protocol for s in found.sets} == {layout.protocol}
        assert found.skipped == []
    if bench == "genimage":  # the val split only: train's images are never a test image
        assert all("/val/" in str(p) for s in found.sets for p in (*s.real, *s.fake))
    if bench == "wildrf":
        assert all("/test/" in str(p) for s in found.sets for p in (*s.real, *s.fake))
    for asked in ("auto", bench):  # clipflow-check-data data.test_root=... data.benchmark=...
        code, text = _check(root, asked)
        assert code == 0 and "ERROR" not in text and "mis-laid" not in text, text


def test_all_four_side_by_side_in_the_download_placement(tmp_path: Path):
    for bench in ("genimage", "chameleon", "synthbuster", "wildrf"):
        syn.make_placed(tmp_path, bench, syn.FORMS[bench][0], HOME, LAYOUTS[bench].folder)
    sets = find_benchmark(tmp_path / HOME, "auto").sets
    want = set().union(*(EXPECTED[b] for b in ("genimage", "chameleon", "synthbuster", "wildrf")))
    assert {s.name for s in sets} == want


def test_no_set_found_names_every_layout_tried(tmp_path: Path):
    (tmp_path / HOME / "notes" / "drafts").mkdir(parents=True)
    with pytest.raises(BenchmarkNotFound) as info:
        find_benchmark(tmp_path / HOME, "auto")
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    for layout in LAYOUTS.values():
        assert layout.tried() in msg, layout.name
    assert "[genimage/]<Generator>/[imagenet_*/]val/{ai,nature}" in msg
    # one benchmark asked for: only its layout is named
    syn.make_chameleon(tmp_path / HOME / "Chameleon")
    with pytest.raises(BenchmarkNotFound) as info:
        find_benchmark(tmp_path / HOME, "genimage")
    assert LAYOUTS["genimage"].tried() in str(info.value) and "Chameleon" not in str(info.value)


def test_docs_and_downloader_name_the_placements_the_tests_generate(capsys):
    from clipflow.cli import download_data
    from clipflow.data.download import load_benchmark_guides

    text = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    for layout in LAYOUTS.values():
        for placement in layout.placements:
            assert f"`data.test_root={placement}`" in text, placement
    guides = load_benchmark_guides()
    for name, guide in guides.items():  # the downloader unpacks into the Layout's folder
        assert f"<root>/{LAYOUTS[name].folder}/" in guide["layout"], name
    with pytest.raises(SystemExit):
        download_data.main(["root=data", "benchmarks=all"])
        raise SystemExit(0)
    assert f"data.test_root={HOME} " in capsys.readouterr().out


# ----------------------------------------------------------------------------- incomplete trees


def _genimage(parts: tuple[str, ...]) -> Callable[[Path], object]:
    def make(home: Path) -> None:
        syn.make_genimage(home / "genimage", gens=("Midjourney",))  # one complete generator
        syn.make_genimage(home / "genimage", parts=parts, gens=("ADM",))

    return make


ADM = "genimage/ADM/imagenet_ai_0508_adm/val"
TWO = {"reddit": syn.PAIR, "twitter": syn.PAIR}  # WildRF platforms, facebook left out
# id -> (builder under data/benchmarks, benchmark, missing part, words of its reason, sets left)
INCOMPLETE: dict[str, tuple[Callable[[Path], object], str, str, str, set[str]]] = {
    "synthbuster-without-raise-reals": (
        lambda h: syn.make_synthbuster(h / "synthbuster", gens=("dalle2", "dalle3"), reals=False),
        "synthbuster",
        "synthbuster/real_RAISE_1k",
        "reals (real_RAISE_1k/) are missing, so its 2 generator folder(s) (dalle2, dalle3)",
        set(),
    ),
    "genimage-only-ai": (_genimage(("val/ai",)), "genimage", f"{ADM}/nature",
                         "GenImage ADM: val/nature/ (real images) is missing",
                         {"genimage/midjourney"}),
    "genimage-only-nature": (_genimage(("val/nature",)), "genimage", f"{ADM}/ai",
                             "GenImage ADM: val/ai/ (fake images) is missing",
                             {"genimage/midjourney"}),
    "genimage-only-train": (_genimage(("train/ai", "train/nature")), "genimage", ADM,
                            "GenImage ADM: val/ is missing (only train/", {"genimage/midjourney"}),
    "wildrf-without-test": (
        lambda h: syn.make_wildrf(h / "WildRF", platforms={}),
        "wildrf",
        "WildRF/test",
        "train/ and val/ are never scored",
        set(),
    ),
    "wildrf-platform-without-1_fake": (
        lambda h: syn.make_wildrf(h / "WildRF", platforms={**TWO, "facebook": ("0_real",)}),
        "wildrf",
        "WildRF/test/facebook/1_fake",
        "WildRF Facebook: facebook/1_fake/ (fake images) is missing",
        {"wildrf/reddit", "wildrf/twitter"},
    ),
    "wildrf-platform-missing": (
        lambda h: syn.make_wildrf(h / "WildRF", platforms=TWO),
        "wildrf",
        "WildRF/test/facebook",
        "WildRF Facebook: test/facebook/ is missing",
        {"wildrf/reddit", "wildrf/twitter"},
    ),
    "chameleon-only-fakes": (
        lambda h: syn.make_chameleon(h / "Chameleon", parts=("1_fake",)),
        "chameleon",
        "Chameleon/test/0_real",
        "Chameleon: test/0_real/ (real images) is missing",
        set(),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INCOMPLETE))
@pytest.mark.parametrize("asked", ["auto", "own"])
def test_incomplete_tree_names_the_missing_part_with_its_layouts_advice(
    tmp_path: Path, case: str, asked: str, caplog
):
    make, bench, part, reason, left = INCOMPLETE[case]
    home = tmp_path / HOME
    make(home)
    benchmark = bench if asked == "own" else "auto"
    missing = home / part
    if left:
        found = find_benchmark(home, benchmark)
        assert {s.name for s in found.sets} == left
        assert [p for p, _ in found.skipped] == [missing]
        assert reason in found.skipped[0][1]
    else:  # nothing left to score: the one-line error names the part
        with pytest.raises(BenchmarkNotFound) as info:
            find_benchmark(home, benchmark)
        msg = str(info.value)
        assert len(msg.splitlines()) == 1 and f"{missing}: " in msg and reason in msg
    assert str(missing) in caplog.text  # the warning of eval and extract
    code, text = _check(home, benchmark)
    assert code == 1, text
    assert f"ERROR: incomplete: {missing} — " in text and reason in text
    # never CNNSpot's advice on another benchmark's tree, never "all good"
    for cnnspot in ("mis-laid", "put them in", "shared pool", "all good"):
        assert cnnspot not in text, cnnspot


def test_wildrf_train_is_never_a_test_set_at_any_placement(tmp_path: Path):
    """A WildRF tree without test/ once had its train/ and val/ pooled into a CNNSpot set
    named 'WildRF' (rc 0)."""
    wild = syn.make_wildrf(tmp_path / HOME / "WildRF", platforms={})
    for root in (tmp_path / HOME, wild):
        for asked in ("auto", "wildrf"):
            with pytest.raises(BenchmarkNotFound, match="train/ and val/ are never scored"):
                find_benchmark(root, asked)


@pytest.mark.slow
def test_eval_lists_a_platform_without_fakes_in_skipped_txt(
    trained_run: Path, tmp_path: Path, monkeypatch
):
    home = tmp_path / HOME
    INCOMPLETE["wildrf-platform-without-1_fake"][0](home)
    out = tmp_path / "eval"
    argv = [
        "clipflow-eval", f"ckpt={trained_run}", f"data.test_root={home}", "device=cpu",
        "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}",
        "hydra/job_logging=none", "hydra/hydra_logging=none",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    eval_cli.main()
    with open(out / "results.csv", newline="") as fh:
        rows = {r["dataset"] for r in csv.DictReader(fh)}
    assert {"wildrf/reddit", "wildrf/twitter"} <= rows and "wildrf/facebook" not in rows
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert skipped == [
        f"{home / 'WildRF/test/facebook/1_fake'}\tWildRF Facebook: facebook/1_fake/ (fake images) "
        "is missing — put them there; until then WildRF Facebook is not scored"
    ]
    meta = json.loads((out / "metrics.json").read_text())
    assert (meta["n_skipped"], meta["n_left_out"]) == (1, 1)
    md = (out / "results.md").read_text()
    assert "1 part(s) of a benchmark tree missing" in md and "unreadable" not in md


def test_extract_records_the_missing_parts_it_left_out(tmp_path: Path):
    """clipflow-extract on the same incomplete WildRF tree: extract.json names the part."""
    from clipflow.runs.extract import run_extract
    from clipflow.settings.config import train_settings

    home = tmp_path / HOME
    INCOMPLETE["wildrf-platform-without-1_fake"][0](home)
    s = train_settings(
        {
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {
                "test_root": str(home),
                "num_workers": 0,
                "cache_dir": str(tmp_path / "cache"),
            },
        }
    )
    summary = run_extract(s, ["test"], tmp_path / "x")
    assert {"wildrf/reddit", "wildrf/twitter"} <= set(summary["test"]["sets"])
    [(path, why)] = summary["test"]["left_out"]
    assert path == str(home / "WildRF/test/facebook/1_fake") and "is missing" in why
    saved = json.loads((tmp_path / "x" / "extract.json").read_text())
    assert saved["test"]["left_out"] == [[path, why]]
