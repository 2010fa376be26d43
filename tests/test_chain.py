"""perturb=chain: the new ops, the per-image chain sampler, the per-length summary, settings."""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipflow.cli import evaluate as eval_cli
from clipflow.data.synthetic import natural_image
from clipflow.errors import ClipflowError
from clipflow.eval.chain_report import chain_figure, robust_rows
from clipflow.features.extract import ImageFileDataset
from clipflow.runs.robustness import run_robustness
from clipflow.settings.config import EvalSettings, eval_settings
from clipflow.transforms.chains import (
    RANGES,
    apply_chain,
    chain_perturbations,
    draw_chain,
    image_seed,
)
from clipflow.transforms.config import CHAIN_OPS, ChainConfig
from clipflow.transforms.perturb import (
    gaussian_noise,
    parse_perturbation,
    random_crop,
    resolve_perturbations,
    webp,
)

QUIET = ("hydra/job_logging=none", "hydra/hydra_logging=none")
SETS = ["progan", "biggan", "guided", "ldm_200", "mygen"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    arr = natural_image(np.random.default_rng(0), size=64)[:, :48]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ ops
def test_webp_matches_a_pil_round_trip_and_degrades_with_quality(photo):
    buf = io.BytesIO()
    Image.fromarray(photo.permute(1, 2, 0).numpy()).save(buf, format="WEBP", quality=60)
    expected = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)
    out = webp(photo, 60)
    assert out.dtype == torch.uint8 and out.shape == photo.shape and torch.equal(out, expected)
    errors = [float((webp(photo, q).float() - photo.float()).abs().mean()) for q in (95, 60, 10)]
    assert 0 < errors[0] < errors[1] < errors[2]
    with pytest.raises(ValueError, match="at most 16383 px a side"):
        webp(torch.zeros(3, 2, 16384, dtype=torch.uint8), 80)


def test_noise_is_seeded_has_its_sigma_and_stays_uint8():
    gray = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    a, b, c = (gaussian_noise(gray, 5.0, _gen(s)) for s in (1, 1, 2))
    assert a.dtype == torch.uint8 and a.shape == gray.shape
    assert torch.equal(a, b) and not torch.equal(a, c)  # the generator, not global RNG
    assert float((a.float() - 128).std()) == pytest.approx(5.0, rel=0.1)
    white = gaussian_noise(torch.full((3, 8, 8), 255, dtype=torch.uint8), 50.0, _gen(0))
    assert int(white.max()) == 255 and int(white.min()) < 255  # clipped, not wrapped round


def test_crop_keeps_a_seeded_window_of_the_image(photo):
    a, b = random_crop(photo, 0.5, _gen(3)), random_crop(photo, 0.5, _gen(3))
    assert a.shape == (3, 32, 24) and a.dtype == torch.uint8 and torch.equal(a, b)
    windows = {
        (top, left)
        for top in range(33)
        for left in range(25)
        if torch.equal(photo[:, top : top + 32, left : left + 24], a)
    }
    assert windows  # a true sub-window of the input, pixels untouched
    positions = {tuple(random_crop(photo, 0.5, _gen(s))[:, 0, 0].tolist()) for s in range(8)}
    assert len(positions) > 1  # the position is drawn
    assert torch.equal(random_crop(photo, 1.0, _gen(0)), photo)
    assert random_crop(torch.zeros(3, 1, 1, dtype=torch.uint8), 0.6, _gen(0)).shape == (3, 1, 1)


def test_new_names_parse_describe_and_run_as_fixed_perturbations(photo):
    ps = resolve_perturbations(["webp75", "noise5", "crop0.8", "resize1.5", "webp50+noise2"])
    assert [p.family for p in ps] == ["webp", "noise", "crop", "resize", "combined"]
    assert ps[2].describe()["steps"] == [{"op": "crop", "keep": 0.8}]
    assert ps[1].describe()["steps"] == [{"op": "noise", "sigma": 5.0}]
    assert ps[3](photo).shape == (3, 96, 72)
    # seeded through the variant's generator: same generator seed, same pixels
    assert torch.equal(ps[4](photo, _gen(4)), ps[4](photo, _gen(4)))
    assert not torch.equal(ps[4](photo, _gen(4)), ps[4](photo, _gen(5)))
    e = eval_settings({"perturb": ["webp75", "noise5"], "device": "cpu"})
    assert [p.name for p in e.perturb] == ["webp75", "noise5"]


# ------------------------------------------------------------------ sampler
PATHS = [f"/data/set/{i:03d}.png" for i in range(40)] + ["/data/caf\udce9.png"]  # + non-UTF-8


def test_chains_are_reproducible_nested_and_within_the_ranges():
    for path in PATHS:
        chains = [draw_chain(0, path, n) for n in range(1, 6)]
        assert chains == [draw_chain(0, path, n) for n in range(1, 6)]  # same seed, same chain
        for n, chain in enumerate(chains, 1):
            steps = parse_perturbation(chain).steps  # the string is a valid perturbation name
            assert len(steps) == n and len({op for op, _ in steps}) == n  # distinct ops
            for op, value in steps:
                lo, hi = RANGES[op]
                assert op in CHAIN_OPS and lo <= value <= hi, chain
            if n > 1:
                assert chain.startswith(chains[n - 2] + "+")  # nested across lengths
    other = [draw_chain(1, p, 5) for p in PATHS]
    assert sum(a != b for a, b in zip(other, [draw_chain(0, p, 5) for p in PATHS])) > 35
    assert image_seed(0, PATHS[0]) != image_seed(0, PATHS[1])
    # every op and both ends of the length range are drawn somewhere
    firsts = {parse_perturbation(draw_chain(0, p, 1)).steps[0][0] for p in PATHS}
    assert firsts == set(CHAIN_OPS)


def test_chain_ops_setting_limits_what_is_drawn():
    for path in PATHS:
        steps = parse_perturbation(draw_chain(0, path, 2, ("jpeg", "noise"))).steps
        assert sorted(op for op, _ in steps) == ["jpeg", "noise"]


def test_chain_application_is_deterministic_and_nested(photo):
    path = PATHS[3]
    long = draw_chain(7, path, 5)
    a, b = apply_chain(photo, long, 7, path), apply_chain(photo, long, 7, path)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape[0] == 3
    assert 0 <= int(a.min()) and int(a.max()) <= 255


def test_chain_variant_is_applied_per_file_and_keyed_by_seed_and_spec(photo):
    chains = chain_perturbations(ChainConfig(max_len=3), seed=5)
    assert [p.name for p in chains] == ["chain_L1", "chain_L2", "chain_L3"]
    v = chains[2].variant()
    assert "len=3" in v.key and "seed=5" in v.key and "ops=jpeg,webp" in v.key
    assert v.key != chain_perturbations(ChainConfig(max_len=3), seed=6)[2].variant().key
    assert (
        v.key
        != chain_perturbations(ChainConfig(max_len=3, ops=["jpeg", "blur", "noise"]), 5)[2]
        .variant()
        .key
    )
    ds = ImageFileDataset([], lambda im, g: im.float()[:, :8, :8], [v], seed=5, view=0)
    out = ds.apply_batch([photo, photo], [PATHS[0], PATHS[1]])
    want = [apply_chain(photo, draw_chain(5, p, 3), 5, p).float()[:, :8, :8] for p in PATHS[:2]]
    assert torch.equal(out[0, 0], want[0]) and torch.equal(out[1, 0], want[1])


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("chain", "needle"),
    [
        ({"max_len": 0}, "chain.max_len=0"),
        ({"max_len": 7}, "chain.max_len=7"),
        ({"max_len": "x"}, "chain.max_len=x"),
        ({"ops": ["jpeg", "sharpen"]}, "chain.ops=sharpen"),
        ({"ops": []}, "chain.ops"),
        ({"ops": ["jpeg", "jpeg"], "max_len": 1}, "twice"),
        ({"ops": ["jpeg", "blur"], "max_len": 3}, "chain.max_len=3"),
        ({"depth": 3}, "chain.depth"),
    ],
)
def test_bad_chain_settings_are_one_line_errors(chain, needle):
    with pytest.raises(ClipflowError) as info:
        eval_settings({"perturb": "chain", "chain": chain, "device": "cpu"})
    assert needle in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_chain_settings_build_one_variant_per_length():
    e = eval_settings(
        {"perturb": ["jpeg50", "chain"], "seed": 3, "chain": {"max_len": 2}, "device": "cpu"}
    )
    assert [p.name for p in e.perturb] == ["jpeg50", "chain_L1", "chain_L2"]
    assert e.perturb[2].seed == 3 and e.chain.max_len == 2


def test_bad_chain_setting_exits_2_from_the_cli(call_main, tmp_path: Path):
    code, _, err = call_main(
        eval_cli.main,
        "clipflow-eval",
        "ckpt=x",
        "perturb=chain",
        "chain.max_len=9",
        f"hydra.run.dir={tmp_path}",
    )
    assert code == 2 and err.startswith("error: chain.max_len=9") and len(err.splitlines()) == 1


# ------------------------------------------------------------------ end to end
def _settings(trained_run: Path, mini_bench: Path, seed: int) -> EvalSettings:
    s = EvalSettings(ckpt=str(trained_run), device="cpu", seed=seed)
    s.data.test_root, s.data.num_workers, s.data.batch_size = str(mini_bench / "test"), 0, 16
    return s


@pytest.fixture(scope="module")
def chain_dir(trained_run: Path, mini_bench: Path) -> Path:
    """clipflow-eval perturb=chain in-process (its Hydra main), default max_len 5."""
    out = mini_bench / "eval_chain"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            sys,
            "argv",
            [
                "clipflow-eval",
                f"ckpt={trained_run}",
                f"data.test_root={mini_bench / 'test'}",
                "perturb=chain",
                "device=cpu",
                "data.num_workers=0",
                "data.batch_size=16",
                *QUIET,
                f"hydra.run.dir={out}",
            ],
        )
        eval_cli.main()
    return out


def test_per_length_table_has_one_row_per_length_per_set(chain_dir: Path):
    rows = _csv(chain_dir / "robustness_chain.csv")
    for n in range(6):  # 0 = clean, then lengths 1..5
        assert [r["dataset"] for r in rows if int(r["length"]) == n] == [*SETS, "mean", "mean_all"]
    for n in range(1, 6):  # each length is a full evaluation, written as its own block
        block = _csv(chain_dir / "perturb" / f"chain_L{n}" / "results.csv")
        mine = {r["dataset"]: r for r in rows if int(r["length"]) == n}
        for r in block:
            assert r["ap"] == mine[r["dataset"]]["ap"] and r["auc"] == mine[r["dataset"]]["auc"]
    clean = {r["dataset"]: r["auc"] for r in _csv(chain_dir / "results.csv")}
    assert {r["dataset"]: r["auc"] for r in rows if r["length"] == "0"} == clean
    aucs = {r["length"]: r["auc"] for r in rows if r["dataset"] == "mean"}
    assert len(set(aucs.values())) > 1  # the chains change the scores


def test_every_image_has_its_recorded_chain_per_length(chain_dir: Path):
    records = _jsonl(chain_dir / "chains.jsonl")
    scored = {r["path"] for r in _csv(chain_dir / "scores.csv")}
    for n in range(1, 6):
        mine = [r for r in records if r["length"] == n]
        assert {r["path"] for r in mine} == scored and len(mine) == len(scored)
        scores = {
            r["path"]: float(r["score"])
            for r in _csv(chain_dir / "perturb" / f"chain_L{n}" / "scores.csv")
        }
        for r in mine:
            assert r["chain"] == draw_chain(0, r["path"], n)  # the chain that ran
            assert r["score"] == pytest.approx(scores[r["path"]], rel=1e-5)
    assert "broken.jpg" not in "".join(r["path"] for r in records)


def test_robust_auc_is_the_mean_over_lengths(chain_dir: Path):
    rows = _csv(chain_dir / "robustness_chain.csv")
    summary = json.loads((chain_dir / "robustness_chain.json").read_text())
    robust = {r["dataset"]: r for r in summary["robust"]}
    assert set(robust) == {*SETS, "mean", "mean_all"}
    for d, r in robust.items():
        by_len = {int(x["length"]): x for x in rows if x["dataset"] == d}
        hand_auc = sum(float(by_len[n]["auc"]) for n in range(1, 6)) / 5
        hand_ap = sum(float(by_len[n]["ap"]) for n in range(1, 6)) / 5
        assert r["robust_auc"] == pytest.approx(hand_auc, abs=1e-5), d
        assert r["robust_ap"] == pytest.approx(hand_ap, abs=1e-5), d
        assert r["clean_auc"] == pytest.approx(float(by_len[0]["auc"]), abs=1e-5)
        assert r["Δ auc"] == pytest.approx(hand_auc - float(by_len[0]["auc"]), abs=1e-5)
    assert summary["chain"]["max_len"] == 5 and summary["chain"]["seed"] == 0
    md = (chain_dir / "robustness_chain.md").read_text()
    assert "robust AUC = mean AUC over lengths 1..5" in md and "| length |" in md


def test_robust_rows_refuse_a_partial_mean():
    table = [
        {"length": n, "dataset": "a", "display_name": "A", "ap": 50.0 + n, "auc": 60.0 + n}
        for n in (0, 1, 2)
    ] + [{"length": 1, "dataset": "b", "display_name": "B", "ap": 1.0, "auc": 2.0}]
    rows = {r["dataset"]: r for r in robust_rows(table)}
    assert rows["a"]["robust_auc"] == pytest.approx(61.5) and rows["a"]["Δ auc"] == 1.5
    assert rows["b"]["robust_auc"] is None and rows["b"]["clean_auc"] is None


def test_report_has_the_chain_curves_and_robust_auc(chain_dir: Path):
    page = (chain_dir / "report.html").read_text(encoding="utf-8")
    assert "Random degradation chains" in page and "Robustness: AP under each" in page
    chain = page[page.rindex("Random degradation chains") :]  # its section, not the contents
    assert '<table class="chain">' in chain and ">robust_auc<" in chain
    assert chain.count("<svg") == 1  # the AP/AUC-vs-length curves
    robust = json.loads((chain_dir / "robustness_chain.json").read_text())["robust"]
    mean = next(r for r in robust if r["dataset"] == "mean")
    assert f">{mean['robust_auc']:.2f}<" in chain


@pytest.mark.slow
def test_chain_report_reads_in_a_browser(chain_dir: Path, tmp_path: Path):
    from browser import what_a_reader_sees

    seen = what_a_reader_sees(chain_dir / "report.html", tmp_path)
    assert [r[0] for r in seen["rows"]] == SETS  # the results table: a row per set
    assert all(s["svgs"] == 1 for s in seen["sets"])
    assert seen["svgs"] == len(SETS) + 2  # + the robustness and the chain curves
    assert seen["figures"][-1] == "Random degradation chains" and not seen["scripts_loaded"]


def test_plot_is_a_png_of_the_json_numbers(chain_dir: Path):
    png = (chain_dir / "robustness_chain.png").read_bytes()
    assert png[:8] == PNG and len(png) > 1000
    width, height = struct.unpack(">II", png[16:24])
    assert width > height > 0
    summary = json.loads((chain_dir / "robustness_chain.json").read_text())
    plot, rows = summary["plot"], summary["rows"]
    assert plot["x"] == [0, 1, 2, 3, 4, 5]
    for r in rows:  # the plotted series are the table's numbers
        label = r["dataset"] if r["dataset"] in ("mean", "mean_all") else r["display_name"]
        assert plot["auc"][label][r["length"]] == r["auc"]
        assert plot["ap"][label][r["length"]] == r["ap"]
    fig = chain_figure(plot)
    for ax, metric in zip(fig.get_axes(), ("ap", "auc")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == sorted(plot[metric])
        for label, line in lines.items():
            assert list(line.get_xdata()) == plot["x"]
            assert list(line.get_ydata()) == pytest.approx(plot[metric][label])


def test_same_seed_reproduces_chains_and_scores_other_seed_does_not(
    chain_dir: Path, trained_run: Path, mini_bench: Path, tmp_path: Path
):
    s = _settings(trained_run, mini_bench, seed=0)
    again = run_robustness(s, chain_perturbations(ChainConfig(max_len=2), 0), tmp_path / "a")
    first = [r for r in _jsonl(chain_dir / "chains.jsonl") if r["length"] <= 2]
    rerun = _jsonl(again["chains.jsonl"])
    assert [(r["path"], r["length"], r["chain"]) for r in rerun] == [
        (r["path"], r["length"], r["chain"]) for r in first
    ]
    np.testing.assert_allclose(
        [r["score"] for r in rerun], [r["score"] for r in first], rtol=1e-5, atol=1e-6
    )
    s1 = _settings(trained_run, mini_bench, seed=1)
    other = run_robustness(s1, chain_perturbations(ChainConfig(max_len=2), 1), tmp_path / "b")
    changed = [a["chain"] != b["chain"] for a, b in zip(_jsonl(other["chains.jsonl"]), rerun)]
    assert len(changed) == len(rerun) and sum(changed) > 0.8 * len(changed)


def test_random_ops_depend_on_the_file_not_on_the_batch(photo):
    """noise/crop and chains draw per file: the same file gives the same pixels whatever
    else is in its batch, and two files get different draws."""
    fixed = parse_perturbation("noise5+crop0.7").variant()
    chain = chain_perturbations(ChainConfig(max_len=4), seed=2)[3].variant()
    ds = ImageFileDataset([], lambda im, g: im.float()[:, :20, :20], [fixed, chain], 2, 0)
    both = ds.apply_batch([photo, photo], [PATHS[0], PATHS[1]])
    alone = ds.apply_batch([photo], [PATHS[1]])
    reversed_ = ds.apply_batch([photo, photo], [PATHS[1], PATHS[0]])
    assert torch.equal(both[1], alone[0]) and torch.equal(both[0], reversed_[1])
    assert not torch.equal(both[0, 0], both[1, 0])  # per-file noise, not one shared draw
