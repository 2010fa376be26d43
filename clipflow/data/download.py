"""Get the paper's benchmark data (SPEC §8): plan, download, verify, unpack.

The sources and the known facts about each archive live in ``data_manifest.json`` (shipped
in the package). Hugging Face files come through ``huggingface_hub`` (resumable, honours
``HF_HUB_OFFLINE`` and ``HF_TOKEN``); the UnivFD Google Drive archive through ``gdown``
(the ``[download]`` extra, imported only when needed). Every downloaded archive is checked
against the manifest before it is unpacked: a recorded size/sha256 that differs stops the run
(the upstream file changed or moved, or the download is corrupt); an archive with no
recorded checksum is reported with the values computed here, to be recorded, never passed
off as verified.

Layout afterwards (``root`` = the folder given)::

    <root>/downloads/<archive>                         the archives as downloaded
    <root>/benchmark/CNN_synth_testset, diffusion_datasets   data.test_root=<root>/benchmark
    <root>/<training and validation folders>            data.train_root, data.val_root
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..core.fileio import file_sha256
from ..errors import ClipflowError, DataError

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("data_manifest.json")
PARTS = ("test", "val", "train", "diffusion")
DOWNLOADS = "downloads"


@dataclass(frozen=True)
class FileEntry:
    """One archive: where it comes from and what is known about it."""

    name: str
    source: dict
    size: int | None = None
    sha256: str | None = None
    verified: bool = False
    reported_size: int | None = None
    reported_by: str | None = None


@dataclass(frozen=True)
class Part:
    files: tuple[str, ...]
    unpack_into: str  # relative to root


@dataclass(frozen=True)
class Manifest:
    parts: dict[str, Part]
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class Verdict:
    """``status``: ok (matches a verified record), unrecorded (no checksum to compare with),
    changed (differs from the record), missing (not downloaded)."""

    name: str
    status: str
    message: str
    size: int | None = None
    sha256: str | None = None


# ----------------------------------------------------------------------------- manifest


def load_manifest(path: Path = MANIFEST) -> Manifest:
    """The manifest, checked for consistency: a file marked verified has both a size and a
    sha256, every part's files are described, every source is known."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        sources = raw["sources"]
        files = {
            name: FileEntry(name=name, **{**e, "source": sources[e["source"]]})
            for name, e in raw["files"].items()
        }
        parts = {k: Part(tuple(p["files"]), p["unpack_into"]) for k, p in raw["parts"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise ClipflowError(f"data manifest {path} is unusable ({reason})") from None
    for e in files.values():
        if e.verified and not (isinstance(e.size, int) and isinstance(e.sha256, str)):
            raise ClipflowError(f"data manifest {path}: {e.name} is verified without size+sha256")
    unknown = [f for p in parts.values() for f in p.files if f not in files]
    if unknown:
        raise ClipflowError(f"data manifest {path}: no entry for {', '.join(unknown)}")
    return Manifest(parts, files)


def check_parts(parts: Iterable[str]) -> list[str]:
    parts = list(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ClipflowError(f"parts={parts}: choose among {', '.join(PARTS)}")
    return parts


# ----------------------------------------------------------------------------- verify


def verify_file(path: Path, entry: FileEntry) -> Verdict:
    """Compare a downloaded archive with its manifest record (hashing it: minutes per 10 GB)."""
    if not path.is_file():
        return Verdict(entry.name, "missing", f"{entry.name}: not downloaded ({path})")
    size, digest = path.stat().st_size, file_sha256(path)
    if not entry.verified:
        note = ""
        if entry.reported_size is not None and entry.reported_size != size:
            note = (
                f" (note: {entry.reported_by or 'another source'} reports {entry.reported_size}"
                " bytes; a shorter file may be a truncated download)"
            )
        return Verdict(
            entry.name,
            "unrecorded",
            f"no recorded checksum for {entry.name}: computed sha256 {digest}, size {size}; "
            f"record it in the manifest{note}",
            size,
            digest,
        )
    if size == entry.size and digest == entry.sha256:
        return Verdict(entry.name, "ok", f"ok {entry.name} (size and sha256 match)", size, digest)
    return Verdict(
        entry.name,
        "changed",
        f"{entry.name} differs from the manifest (size {size} vs {entry.size}, sha256 "
        f"{digest[:12]} vs {str(entry.sha256)[:12]}): the upstream file changed or moved, or "
        f"the download is corrupt; delete {path} and rerun, and report it if it persists",
        size,
        digest,
    )


def verify(root: Path, parts: Iterable[str], manifest: Manifest, out: TextIO) -> int:
    """Check what is already in ``<root>/downloads``; 1 if any file is missing or changed."""
    verdicts = [
        verify_file(root / DOWNLOADS / name, manifest.files[name])
        for part in check_parts(parts)
        for name in manifest.parts[part].files
    ]
    for v in verdicts:
        print(v.message, file=out)
    return 1 if any(v.status in ("changed", "missing") for v in verdicts) else 0


# ----------------------------------------------------------------------------- plan


def plan_lines(root: Path, parts: Iterable[str], manifest: Manifest) -> list[str]:
    """The equivalent shell commands, in order: what ``run=true`` does (and a user may run)."""
    dl, lines = root / DOWNLOADS, []
    lines.append(_sh("mkdir", "-p", str(dl), str(root / "benchmark")))
    for part in check_parts(parts):
        spec = manifest.parts[part]
        for name in spec.files:
            lines.append(_fetch_command(manifest.files[name], dl))
            e = manifest.files[name]
            check = f"sha256 {e.sha256}" if e.verified else "no recorded sha256: printed, to record"
            lines.append(f"# verify {name}: {check}")
        first, dest = dl / spec.files[0], root / spec.unpack_into
        if first.name.endswith(".7z.001"):
            lines.append(_sh("7z", "x", "-aos", str(first), f"-o{dest}"))
            lines.append(f"# then unzip the .zip it holds into {dest}")
        else:
            lines.append(_sh("unzip", "-q", "-n", str(first), "-d", str(dest)))
    return lines


def _fetch_command(e: FileEntry, dl: Path) -> str:
    if e.source["kind"] == "hf":
        return _sh(
            "hf", "download", e.source["repo_id"], e.name, "--repo-type", e.source["repo_type"],
            "--local-dir", str(dl),
        )  # fmt: skip
    return _sh("gdown", e.source["drive_id"], "-O", str(dl / e.name))


def _sh(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


# ----------------------------------------------------------------------------- run


def require_tools(parts: Iterable[str], manifest: Manifest) -> None:
    """Every tool the parts need, before anything is downloaded (hours may be at stake)."""
    files = [manifest.files[f] for p in parts for f in manifest.parts[p].files]
    if any(e.source["kind"] == "gdrive" for e in files):
        _gdown()
    if any(".7z." in e.name for e in files) and shutil.which("7z") is None:
        raise ClipflowError(
            "the training set is a multi-part 7z archive and `7z` is not on PATH; install "
            "p7zip (apt install p7zip-full / brew install p7zip) or leave out parts=train"
        )


def _gdown():
    try:
        import gdown
    except ImportError:
        raise ClipflowError(
            "the diffusion sets are on Google Drive and need gdown: "
            "pip install 'clipflow[download]' (or pip install gdown), or leave out parts=diffusion"
        ) from None
    return gdown


def fetch(entry: FileEntry, dl: Path) -> Path:
    """Download one archive into ``dl`` (resumes; skips a complete file); its path."""
    target = dl / entry.name
    if entry.source["kind"] == "hf":
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    entry.source["repo_id"],
                    entry.name,
                    repo_type=entry.source["repo_type"],
                    local_dir=dl,
                )
            )
        except Exception as err:  # offline, auth, network, moved file: huggingface_hub's types
            raise DataError(
                f"cannot download {entry.name} from {entry.source['url']} "
                f"({type(err).__name__}: {_first_line(err)}); rerun to resume"
            ) from None
    if target.is_file():  # gdown has no notion of "complete": the verify step decides
        return target
    result = _gdown().download(id=entry.source["drive_id"], output=str(target), resume=True)
    if not result or not target.is_file():
        raise DataError(
            f"cannot download {entry.name} from {entry.source['url']} (gdown failed, see above; "
            "Drive may be rate-limiting: retry later or download it in a browser into "
            f"{dl})"
        )
    return target


def unpack(archive: Path, dest: Path) -> list[str]:
    """Unpack ``archive`` (zip, or the first volume of a 7z set) into ``dest``; the top-level
    names it created. A zip found inside a 7z set is unpacked too, then removed."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".7z.001"):
        before = set(dest.iterdir())
        proc = subprocess.run(["7z", "x", "-aos", str(archive), f"-o{dest}"])
        if proc.returncode != 0:
            raise DataError(f"7z could not unpack {archive} (see its message above)")
        names = []
        for new in sorted(set(dest.iterdir()) - before):
            if new.suffix == ".zip":
                names += unpack(new, dest)
                new.unlink()  # an intermediate copy: the 7z volumes hold it
            else:
                names.append(new.name)
        return names
    try:
        with zipfile.ZipFile(archive) as zf:
            top = sorted({n.split("/")[0] for n in zf.namelist() if n.split("/")[0]})
            zf.extractall(dest)  # refuses absolute and ../ member names
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"cannot unpack {archive}: {_first_line(err)}") from None
    return top


def run_download(root: Path, parts: Iterable[str], manifest: Manifest, out: TextIO) -> int:
    """Download, verify and unpack ``parts`` into ``root``; 1 if an archive differs from its
    record (that part is not unpacked), else 0. Unpacked parts are skipped on a rerun."""
    parts = check_parts(parts)
    require_tools(parts, manifest)
    dl = root / DOWNLOADS
    dl.mkdir(parents=True, exist_ok=True)
    status = 0
    for part in parts:
        spec = manifest.parts[part]
        verdicts = [
            verify_file(fetch(manifest.files[name], dl), manifest.files[name])
            for name in spec.files
        ]
        for v in verdicts:
            print(v.message, file=out, flush=True)
        if any(v.status != "ok" and v.status != "unrecorded" for v in verdicts):
            print(f"part {part}: not unpacked (see above)", file=out)
            status = 1
            continue
        marker = dl / f".{spec.files[0]}.unpacked"
        dest = root / spec.unpack_into
        if marker.is_file():
            print(f"part {part}: already unpacked ({marker.read_text().strip()})", file=out)
            continue
        names = unpack(dl / spec.files[0], dest)
        shown = ", ".join(str(dest / n) for n in names) or str(dest)
        marker.write_text(shown + "\n")
        print(f"part {part}: unpacked into {shown}", file=out, flush=True)
    return status


def next_step(root: Path) -> str:
    return (
        f"clipflow-check-data data.test_root={root / 'benchmark'} "
        f"data.train_root={root / 'progan_train'} data.val_root={root / 'progan_val'}"
        "   (use the folder names printed above if they differ)"
    )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ----------------------------------------------------------------------------- other benchmarks

GUIDE_FIELDS = ("title", "homepage", "urls", "license", "layout", "steps", "files")


def load_benchmark_guides(path: Path = MANIFEST) -> dict[str, dict]:
    """The manifest's ``benchmarks`` block: how to get GenImage, Chameleon, Synthbuster and
    WildRF by hand (their hosts need a browser, an e-mail or a Drive folder)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))["benchmarks"]
        guides = {k: v for k, v in raw.items() if k != "about"}
        for name, g in guides.items():
            missing = [f for f in GUIDE_FIELDS if f not in g]
            if missing:
                raise KeyError(f"{name}: {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ClipflowError(f"data manifest {path}: benchmarks block unusable ({err})") from None
    return guides


def benchmark_lines(names: Iterable[str], root: Path, guides: dict[str, dict]) -> list[str]:
    """The printed instructions for ``names`` (``all`` = every benchmark), ``<root>`` filled in."""
    names = list(names)
    if names == ["all"]:
        names = list(guides)
    bad = [n for n in names if n not in guides]
    if bad or not names:
        raise ClipflowError(f"benchmarks={names}: choose among all, {', '.join(guides)}")
    lines: list[str] = []
    for name in names:
        g = guides[name]
        lines += [f"# {name}: {g['title']}", f"#   home: {g['homepage']}"]
        lines += [f"#   from: {u}" for u in g["urls"]]
        lines += [f"#   license: {g['license']}", f"#   layout: {g['layout']}"]
        lines += [f"#   step: {s.replace('<root>', str(root))}" for s in g["steps"]]
        for f in g["files"]:
            lines.append(
                f"#   {f['name']}: md5 {f['md5']} (published by {f['md5_from']}; not verified "
                "by clipflow)"
            )
    lines.append(
        f"# then: clipflow-check-data data.test_root={root} "
        "(data.benchmark=auto finds every layout above)"
    )
    return lines
