"""clipflow-serve without a browser: the function the page calls per batch of uploads gives
clipflow-detect's records, refuses what it must, and the page's HTML escapes what users type.
The page itself, driven in chromium, is tests/test_serve_browser.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import png_with_declared_size
from PIL import Image

from clipflow.cli import serve as serve_cli
from clipflow.data.synthetic import fake_image, natural_image
from clipflow.detect import Detector
from clipflow.serve.render import RANDOM_WARNING, card_html, verdicts_html
from clipflow.serve.uploads import Upload, card_facts, forget_upload, keep_upload, score_uploads
from clipflow.settings.coerce import SettingsError
from clipflow.settings.serve import serve_settings


@pytest.fixture(scope="module")
def det(trained_run: Path) -> Detector:
    return Detector.from_checkpoint(trained_run, device="cpu", batch_size=4)


def uploaded(folder: Path, name: str, data: bytes | np.ndarray) -> Upload:
    """A file as Gradio holds an upload: ``<cache>/<hash>/<name>``."""
    path = folder / f"hash-{name}" / name
    path.parent.mkdir(parents=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        Image.fromarray(data).save(path)
    return Upload.of(path)


@pytest.fixture
def pair(tmp_path: Path) -> list[Upload]:
    rng = np.random.default_rng(0)
    return [
        uploaded(tmp_path, "real.png", natural_image(rng, 64)),
        uploaded(tmp_path, "fake.png", fake_image(rng, 64)),
    ]


@pytest.mark.parametrize("fpr,unsure_k", [(None, 0), (0.5, 2)])
def test_upload_records_are_detects_records_named_by_upload(det, pair, fpr, unsure_k):
    got = score_uploads(det, pair, fpr, unsure_k)
    want = det.score_files([u.path for u in pair], fpr=fpr, unsure_k=unsure_k)
    assert [r.path for r in got] == ["real.png", "fake.png"]  # never the server's temp path
    for g, w in zip(got, want):
        assert {**g.to_dict(), "path": None} == {**w.to_dict(), "path": None}
        assert g.decision in ("real", "ai-generated", "unsure") and g.p_value is not None
    assert got[1].level == fpr and (got[1].score_min is not None) == bool(unsure_k)


def test_hostile_upload_gives_detects_error_record(det, tmp_path):
    uploads = [
        uploaded(tmp_path, "evil.png", b"<?php system($_GET['c']); ?>"),
        uploaded(tmp_path, "empty.jpg", b""),
        uploaded(tmp_path, "bomb.png", png_with_declared_size(3000, 3000)),
    ]
    det.max_pixels = 1_000_000  # data.max_megapixels=1
    try:
        got = score_uploads(det, uploads)
        want = det.score_files([u.path for u in uploads])
    finally:
        det.max_pixels = 100_000_000
    assert [g.error for g in got] == [w.error for w in want]
    assert "not an image" in got[0].error and "zero-byte" in got[1].error
    assert "data.max_megapixels" in got[2].error and got[2].score is None


def test_oversize_upload_is_refused_unread(det, pair, monkeypatch):
    read, score_files = [], det.score_files
    monkeypatch.setattr(
        det, "score_files", lambda paths, **kw: score_files(read.extend(paths) or paths, **kw)
    )
    sizes = [Path(u.path).stat().st_size for u in pair]
    big = int(np.argmax(sizes))
    got = score_uploads(det, pair, max_bytes=max(sizes) - 1)
    assert read == [pair[1 - big].path]  # the other one alone was read and scored
    assert got[big].decision is None and "exceeds the upload limit" in got[big].error
    assert got[big].path == pair[big].name and got[1 - big].score is not None


def test_verdict_html_escapes_names_and_marks_each_row(det, tmp_path):
    rng = np.random.default_rng(1)
    name = "<img src=x onerror=alert(1)>.png"
    uploads = [uploaded(tmp_path, name, natural_image(rng, 64)), uploaded(tmp_path, "x.png", b"")]
    page = verdicts_html(det, score_uploads(det, uploads), None, 0)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert page.count("<tr data-file=") == 2 and 'data-decision="error"' in page
    assert "calibration reals" in page  # detect's footer explains the numbers
    card = card_html(det, card_facts(det))
    assert RANDOM_WARNING in card and "tiny" in card and "calibration reals" in card


def test_keep_copies_and_forget_deletes(pair, tmp_path):
    kept = [keep_upload(pair[0], tmp_path / "kept"), keep_upload(pair[0], tmp_path / "kept")]
    assert [p.name for p in kept] == ["real.png", "real-1.png"]
    forget_upload(pair[0])
    assert not Path(pair[0].path).parent.exists() and kept[1].read_bytes()


def test_settings_are_checked_and_safe_by_default():
    s = serve_settings({"ckpt": "x"})
    assert (s.host, s.keep, s.data.max_megapixels) == ("127.0.0.1", None, 100.0)
    with pytest.raises(SettingsError, match="port=70000"):
        serve_settings({"ckpt": "x", "port": 70000})
    with pytest.raises(SettingsError, match="max_upload_mb=0"):
        serve_settings({"ckpt": "x", "max_upload_mb": 0})


def test_without_gradio_the_command_says_how_to_install_it(call_main, monkeypatch, trained_run):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    code, out, err = call_main(serve_cli.main, "clipflow-serve", f"ckpt={trained_run}")
    assert code == 2 and err.count("\n") == 1, err
    assert "pip install 'clipflow[serve]'" in err


def test_help_lists_the_serve_keys(call_main):
    code, out, err = call_main(serve_cli.main, "clipflow-serve", "--help")
    assert code == 0 and "max_upload_mb" in out and "data.max_megapixels" in out


# ----------------------------------------------------------------------------- the Space app


@pytest.fixture
def hub_calls(monkeypatch) -> list[tuple[str, dict]]:
    """HfApi's two writes, recorded (with the uploaded files' text) instead of sent."""
    import huggingface_hub

    calls: list[tuple[str, dict]] = []
    commit = "https://huggingface.co/me/detector/commit/" + "a" * 40

    def upload_folder(self, **kw):
        texts = {p.name: p.read_bytes() for p in Path(kw["folder_path"]).iterdir()}
        calls.append(("upload_folder", {**kw, "files": texts}))
        return huggingface_hub.CommitInfo(
            commit_url=commit, commit_message="m", commit_description="", oid="a" * 40
        )

    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("create_repo", {"repo_id": repo_id, **kw})),
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_space_uploads_the_same_page_pinned_to_the_pushed_commit(
    trained_run, hub_calls, capsys, monkeypatch
):
    from clipflow.cli import push as push_cli
    from clipflow.serve import page

    with pytest.raises(SystemExit) as info:
        push_cli.main([f"ckpt={trained_run}", "repo=me/detector", "space=me/detector-demo"])
        raise SystemExit(0)
    assert info.value.code == 0, capsys.readouterr().err
    space = [kw for name, kw in hub_calls if kw.get("repo_type") == "space"]
    assert space[0]["space_sdk"] == "gradio" and space[0]["repo_id"] == "me/detector-demo"
    files = space[1]["files"]
    assert sorted(files) == ["README.md", "app.py", "requirements.txt"]
    assert files["requirements.txt"].decode().startswith("clipflow[serve]==")
    assert b"sdk: gradio" in files["README.md"] and b"app_file: app.py" in files["README.md"]
    served = []  # app.py, run as a Space runs it, serves clipflow-serve's page
    monkeypatch.setattr(page, "run_page", served.append)
    exec(compile(files["app.py"], "app.py", "exec"), {"__name__": "__main__"})
    assert served[0].ckpt == "hf://me/detector@" + "a" * 40
    assert (served[0].host, served[0].port, served[0].keep) == ("0.0.0.0", 7860, None)
    assert "spaces/me/detector-demo" in capsys.readouterr().out


def test_push_refuses_a_bad_space_name_before_uploading(trained_run, hub_calls, capsys):
    from clipflow.cli import push as push_cli

    with pytest.raises(SystemExit) as info:
        push_cli.main([f"ckpt={trained_run}", "repo=me/detector", "space=not a repo"])
    assert info.value.code == 2 and hub_calls == []
    assert "not a Hub checkpoint name" in capsys.readouterr().err


def test_the_documented_serve_commands_take_only_known_keys():
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "detect.md").read_text() + (root / "README.md").read_text()
    lines = [
        line.split(" #")[0].split()
        for line in text.splitlines()
        if line.startswith("clipflow-serve ")
    ]
    assert len(lines) >= 4, lines
    for argv in lines:
        tree: dict = {}
        for arg in argv[1:]:
            key, value = arg.split("=", 1)
            *parents, last = key.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        s = serve_settings(tree)  # an unknown key or a bad value raises, naming it
        assert s.ckpt, argv


def test_an_unusable_keep_folder_is_refused_before_serving(trained_run, tmp_path):
    from clipflow.errors import ClipflowError
    from clipflow.serve.page import detector_for

    (tmp_path / "file").write_text("x")
    settings = serve_settings({"ckpt": str(trained_run), "keep": str(tmp_path / "file" / "in")})
    with pytest.raises(ClipflowError, match="cannot keep uploads in keep=.*choose another"):
        detector_for(settings)
