"""clipflow-check-data on generated benchmark trees, and the download script's dry run."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_images import write_image

from clipflow.cli.check_data import main as check_data_main
from clipflow.cli.check_data import parse_request
from clipflow.data.layouts import PAPER_ORDER
from clipflow.data.synthetic import make_benchmark
from clipflow.errors import ClipflowError
from clipflow.runs.check_data import CheckRequest, run_check

REPO = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path, layout: str) -> dict[str, Path]:
    return make_benchmark(tmp_path / layout, layout=layout, n=2, size=16, n_train=3, n_val=2)


def _check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(parse_request(args), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize("layout", ["release", "mirror"])
def test_both_layouts_pass_with_every_set_counted(tmp_path: Path, layout: str):
    roots = _tree(tmp_path, layout)
    code, text = _check(
        f"data.test_root={roots['test_root']}",
        f"data.train_root={roots['train_root']}",
        f"data.val_root={roots['val_root']}",
        f"extra_roots=[{roots['extra_root']}]",
    )
    assert code == 0, text
    for name in PAPER_ORDER:
        assert f"\n  {name} " in text
    assert "MISSING" not in text and "ERROR" not in text
    # counts next to the release's: seeingdark has 180/180 there, 2/2 here -> a warning only
    assert (
        "2 (180)" in text
        and "WARNING: seeingdark: 2 real / 2 fake, the release has 180 / 180" in text
    )
    if layout == "release":
        assert "reals: shared pool laion/0_real" in text and "class level (2 classes)" in text
    assert "train_root" in text and "2 classes, 6 real, 6 fake" in text


def test_missing_empty_and_mislaid_folders_fail(tmp_path: Path):
    roots = _tree(tmp_path, "release")
    test = roots["test_root"] / "CNN_synth_testset"
    shutil.rmtree(test / "san")
    for f in (test / "crn" / "1_fake").iterdir():
        f.unlink()
    write_image(test / "mygen" / "a.png", size=(8, 8))  # images directly in the set folder
    code, text = _check(f"data.test_root={roots['test_root']}")
    assert code == 1
    assert "san " in text and "MISSING" in text and "ERROR: san (SAN): not found" in text
    assert f"ERROR: empty folder: {test / 'crn' / '1_fake'}" in text
    assert f"ERROR: mis-laid: 1 image(s) directly in {test / 'mygen'}" in text


def test_strict_turns_count_differences_into_failure(tmp_path: Path):
    roots = _tree(tmp_path, "mirror")
    assert _check(f"data.test_root={roots['test_root']}")[0] == 0
    code, text = _check(f"data.test_root={roots['test_root']}", "strict=true")
    assert code == 1 and "counts differ" in text


def test_train_root_without_natural_images_fails(tmp_path: Path):
    write_image(tmp_path / "train" / "cat" / "1_fake" / "x.png", size=(8, 8))
    (tmp_path / "train" / "cat" / "0_real").mkdir()
    code, text = _check(f"data.train_root={tmp_path / 'train'}")
    assert code == 1 and "class cat has no natural images" in text


def test_usage_errors_are_one_line(tmp_path: Path, capsys):
    with pytest.raises(ClipflowError, match="nothing to check"):
        run_check(parse_request([]))
    with pytest.raises(ClipflowError, match="unknown key 'data.tset_root'"):
        run_check(parse_request([f"data.tset_root={tmp_path}"]))
    with pytest.raises(SystemExit) as exit_:
        check_data_main([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: nothing to check")


def test_command_on_a_good_tree(tmp_path: Path, capsys):
    roots = _tree(tmp_path, "release")
    with pytest.raises(SystemExit) as exit_:
        check_data_main([f"data.test_root={roots['test_root']}"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert "test sets under" in out and "glide_100_10" in out


def test_missing_root_is_a_finding_not_a_traceback(tmp_path: Path):
    code, text = _check(f"data.test_root={tmp_path / 'nope'}", f"extra_roots=[{tmp_path / 'x'}]")
    assert code == 1 and f"ERROR: folder not found: {tmp_path / 'nope'}" in text
    assert f"folder not found: {tmp_path / 'x'}" in text


def test_request_from_arguments():
    req = parse_request(["data.test_root=/t", "data.extra_roots=/e", "strict=true"])
    assert req == CheckRequest(test_root="/t", extra_roots=["/e"], strict=True)
    assert parse_request(["extra_roots=[/a,/b]"]).extra_roots == ["/a", "/b"]
    with pytest.raises(ClipflowError, match="cannot parse argument"):
        parse_request(["data.test_root"])


def test_download_script_dry_run_prints_the_documented_commands(tmp_path: Path):
    root = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "download_data.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    hf = "hf download sywang/CNNDetection CNN_synth_testset.zip --repo-type dataset"
    assert f"{hf} --local-dir {root}" in out
    assert "progan_train.7z.001" in out and "progan_train.7z.007" in out and "7z x" in out
    assert "gdown 1FXlGIRh_Ud3cScMgSVDbEWmPDmjcrm1t" in out and "progan_val.zip" in out
    assert "clipflow-check-data" in out and "dry run" in proc.stderr
    assert not root.exists()  # nothing ran
