"""clipflow-download-data: the packaged manifest, the dry-run plan, verification against the
manifest, and a full run with the downloaders patched (never the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import huggingface_hub
import pytest

from clipflow.cli import download_data as cli
from clipflow.data import download as dl

README = Path(__file__).resolve().parents[1] / "README.md"


def _main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_packaged_manifest_names_the_documented_sources_and_claims_nothing_unverified():
    m = dl.load_manifest()
    assert set(m.parts) == set(dl.PARTS)
    names = [f for p in m.parts.values() for f in p.files]
    assert names == [
        "CNN_synth_testset.zip",
        "progan_val.zip",
        *[f"progan_train.7z.{i:03d}" for i in range(1, 8)],
        "diffusion_datasets.zip",
    ]
    readme = README.read_text()
    for e in m.files.values():
        assert e.verified is False and e.size is None and e.sha256 is None  # nothing made up
        where = e.source.get("repo_id") or e.source["drive_id"]
        assert where in readme  # the same sources as the README's table
    assert m.files["progan_val.zip"].source["repo_id"] == "sywang/CNNDetection"
    assert dl.MANIFEST.name == "data_manifest.json" and dl.MANIFEST.parent.name == "data"


def test_manifest_marking_a_file_verified_without_its_hash_is_refused(tmp_path: Path):
    raw = json.loads(dl.MANIFEST.read_text())
    raw["files"]["progan_val.zip"]["verified"] = True
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(dl.ClipflowError, match="verified without size"):
        dl.load_manifest(bad)


def test_dry_run_prints_every_command_and_downloads_nothing(tmp_path: Path, capsys):
    code, out, err = _main(capsys, f"root={tmp_path}")
    assert code == 0 and "nothing was downloaded" in err
    assert not (tmp_path / "downloads").exists()
    assert out.count("hf download sywang/CNNDetection") == 9
    assert "gdown 1FXlGIRh_Ud3cScMgSVDbEWmPDmjcrm1t" in out
    assert f"7z x -aos {tmp_path}/downloads/progan_train.7z.001" in out
    assert "clipflow-check-data" in out
    code, out, _ = _main(capsys, f"root={tmp_path}", "parts=[test]")
    assert code == 0 and "CNN_synth_testset.zip" in out and "progan_val" not in out.split("#")[0]


@pytest.mark.parametrize("arg", ["parts=[tests]", "run=maybe", "dest=/x"])
def test_bad_arguments_are_one_line(arg: str, capsys):
    code, _, err = _main(capsys, arg)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def _entry(name: str, data: bytes | None = None, **kw) -> dl.FileEntry:
    if data is not None:
        kw.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), verified=True)
    return dl.FileEntry(name=name, source={"kind": "hf"}, **kw)


def test_verify_reports_ok_changed_unrecorded_missing(tmp_path: Path):
    f = tmp_path / "a.zip"
    f.write_bytes(b"archive bytes")
    digest = hashlib.sha256(b"archive bytes").hexdigest()
    assert dl.verify_file(f, _entry("a.zip", b"archive bytes")).status == "ok"
    changed = dl.verify_file(f, _entry("a.zip", b"other bytes"))
    assert changed.status == "changed"
    assert "a.zip differs from the manifest" in changed.message
    assert "changed or moved" in changed.message
    unrecorded = dl.verify_file(f, _entry("a.zip", reported_size=999, reported_by="someone"))
    assert unrecorded.status == "unrecorded"
    assert unrecorded.message.startswith(
        f"no recorded checksum for a.zip: computed sha256 {digest}, size 13; record it"
    )
    assert "someone reports 999 bytes" in unrecorded.message
    assert dl.verify_file(tmp_path / "b.zip", _entry("b.zip")).status == "missing"


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def fake_sources(monkeypatch) -> dict[str, bytes]:
    """hf_hub_download and gdown write small zips instead of reaching the network."""
    archives = {
        "CNN_synth_testset.zip": _zip_bytes({"CNN_synth_testset/biggan/0_real/a.png": b"x"}),
        "diffusion_datasets.zip": _zip_bytes({"diffusion_datasets/laion/0_real/b.png": b"y"}),
    }
    calls = []

    def hf_hub_download(repo_id, filename, repo_type=None, local_dir=None, **kw):
        calls.append((repo_id, filename, repo_type))
        path = Path(local_dir) / filename
        path.write_bytes(archives[filename])
        return str(path)

    def gdown_download(id=None, output=None, resume=False, **kw):
        calls.append(("gdrive", id, output))
        Path(output).write_bytes(archives[Path(output).name])
        return output

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=gdown_download))
    archives["calls"] = calls  # type: ignore[assignment]
    return archives


def test_run_downloads_verifies_and_unpacks(tmp_path: Path, fake_sources, capsys):
    code, out, err = _main(capsys, f"root={tmp_path}", "parts=[test,diffusion]", "run=true")
    assert code == 0, err
    assert (tmp_path / "benchmark/CNN_synth_testset/biggan/0_real/a.png").read_bytes() == b"x"
    assert (tmp_path / "benchmark/diffusion_datasets/laion/0_real/b.png").is_file()
    assert fake_sources["calls"][0] == ("sywang/CNNDetection", "CNN_synth_testset.zip", "dataset")
    assert fake_sources["calls"][1][:2] == ("gdrive", "1FXlGIRh_Ud3cScMgSVDbEWmPDmjcrm1t")
    digest = hashlib.sha256(fake_sources["CNN_synth_testset.zip"]).hexdigest()
    assert f"no recorded checksum for CNN_synth_testset.zip: computed sha256 {digest}" in out
    assert f"unpacked into {tmp_path / 'benchmark' / 'CNN_synth_testset'}" in out
    code, out, _ = _main(capsys, f"root={tmp_path}", "parts=[test]", "run=true")
    assert code == 0 and "already unpacked" in out  # a rerun does not unpack again
    code, out, _ = _main(capsys, f"root={tmp_path}", "parts=[test,val]", "verify=true")
    assert code == 1 and "progan_val.zip: not downloaded" in out


def test_a_changed_archive_is_not_unpacked(tmp_path: Path, fake_sources, monkeypatch, capsys):
    m = dl.load_manifest()
    name = "CNN_synth_testset.zip"
    recorded = b"what the manifest recorded"
    m.files[name] = dataclasses.replace(
        m.files[name],
        size=len(recorded),
        sha256=hashlib.sha256(recorded).hexdigest(),
        verified=True,
    )
    monkeypatch.setattr(dl, "load_manifest", lambda: m)
    code, out, _ = _main(capsys, f"root={tmp_path}", "parts=[test]", "run=true")
    assert code == 1
    assert f"{name} differs from the manifest" in out and "part test: not unpacked" in out
    assert not (tmp_path / "benchmark" / "CNN_synth_testset").exists()


def test_missing_gdown_is_one_line_before_any_download(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    called = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: called.append(a))
    code, _, err = _main(capsys, f"root={tmp_path}", "parts=[test,diffusion]", "run=true")
    assert code == 2 and "clipflow[download]" in err and len(err.strip().splitlines()) == 1
    assert called == []


def test_missing_7z_is_one_line_before_any_download(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(dl.shutil, "which", lambda name: None)
    code, _, err = _main(capsys, f"root={tmp_path}", "parts=[train]", "run=true")
    assert code == 2 and "7z" in err and not (tmp_path / "downloads").exists()


def test_offline_hub_download_is_one_line(tmp_path: Path, monkeypatch, capsys):
    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    code, _, err = _main(capsys, f"root={tmp_path}", "parts=[val]", "run=true")
    assert code == 2 and "cannot download progan_val.zip" in err
    assert len(err.strip().splitlines()) == 1


def test_old_script_is_a_shim(tmp_path: Path, capsys):
    sys.path.insert(0, str(README.parent / "scripts"))
    try:
        import download_data as shim
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as info:
        shim.main(["--root", str(tmp_path), "--parts", "val"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "hf download sywang/CNNDetection progan_val.zip" in out and "7z" not in out


def test_console_scripts_and_manifest_ship_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["clipflow-download-data"] == "clipflow.cli.download_data:main"
    assert scripts["clipflow-push"] == "clipflow.cli.push:main"
    assert "data_manifest.json" in project["tool"]["setuptools"]["package-data"]["clipflow.data"]
    assert project["project"]["optional-dependencies"]["download"] == ["gdown>=5"]


def test_the_dry_run_needs_no_torch(tmp_path: Path):
    """Printing the plan is instant: the settings check it uses (clipflow.settings.coerce)
    imports no model code. A fresh interpreter, since this test process imported torch long ago."""
    code = (
        "import sys\n"
        "from clipflow.cli.download_data import main\n"
        "try:\n"
        f"    main(['root={tmp_path / 'data'}'])\n"
        "except SystemExit as end:\n"
        "    assert end.code == 0, end.code\n"
        "print('heavy:', ','.join(m for m in ('torch', 'open_clip') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "hf download sywang/CNNDetection" in out.stdout
    assert out.stdout.strip().endswith("heavy:")
