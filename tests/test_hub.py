"""Checkpoints on the Hugging Face Hub, offline: hf:// refs read from a hub-format cache laid
out here, the model card, and clipflow-push against a patched HfApi (never the network)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import yaml
from fixtures_images import make_cnnspot_tree
from huggingface_hub import ModelCard, constants

from clipflow.checkpoints.checkpoint import load_checkpoint, resolve_checkpoint_path
from clipflow.checkpoints.hub import HubRef, fetch_checkpoint, parse_hub_ref
from clipflow.checkpoints.push import describe_plan, model_card, plan_push, read_results
from clipflow.cli import detect as detect_cli
from clipflow.cli import evaluate as eval_cli
from clipflow.cli import push as push_cli
from clipflow.detect import Detector
from clipflow.errors import CheckpointError, ClipflowError

MAIN = "a" * 40  # commit that refs/main points at
V1 = "b" * 40  # commit of tag v1


@pytest.fixture
def hub_cache(tmp_path: Path, trained_run: Path, monkeypatch) -> Path:
    """``models--owner--name`` in huggingface_hub's cache layout (snapshots/<commit>/, refs/),
    two commits (main, tag v1) holding the trained checkpoint, offline."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--owner--name"
    for commit, ref in ((MAIN, "main"), (V1, "v1")):
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        for name in ("model.safetensors", "model.json"):
            shutil.copyfile(trained_run / name, snap / name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    # huggingface_hub reads both at import; the environment is set for child processes too
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def bench_root(tmp_path: Path) -> Path:
    make_cnnspot_tree(tmp_path / "test", sets={"biggan": (3, 3)})
    return tmp_path / "test"


def _eval(call_main, ckpt: str, bench_root: Path, out: Path) -> dict[str, str]:
    code, _, err = call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={ckpt}",
        f"data.test_root={bench_root}",
        "device=cpu",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
    )
    assert code == 0, err[-2000:]
    with open(out / "scores.csv", newline="") as f:
        return {r["path"]: r["score"] for r in csv.DictReader(f)}


def test_eval_hf_ref_scores_equal_the_local_checkpoint(
    hub_cache: Path, trained_run: Path, bench_root: Path, tmp_path: Path, call_main
):
    local = _eval(call_main, str(trained_run), bench_root, tmp_path / "local")
    hub = _eval(call_main, "hf://owner/name", bench_root, tmp_path / "hub")
    assert len(local) >= 6 and hub == local
    meta = json.loads((tmp_path / "hub" / "metrics.json").read_text())
    assert f"snapshots/{MAIN}" in meta["checkpoint"]  # the exact commit is on record


def test_detector_from_pretrained_equals_local(hub_cache: Path, trained_run: Path, bench_root):
    images = sorted(str(p) for p in bench_root.rglob("*.png"))
    local = Detector.from_checkpoint(trained_run, device="cpu").score(images)
    hub = Detector.from_pretrained("owner/name", device="cpu")
    assert hub.ckpt.path.parent.name == MAIN
    np.testing.assert_array_equal(hub.score(images), local)
    pinned = Detector.from_pretrained("owner/name", revision="v1", device="cpu")
    assert pinned.ckpt.path.parent.name == V1


@pytest.mark.parametrize("rev", ["v1", V1])
def test_revision_resolves_to_its_snapshot(hub_cache: Path, rev: str):
    weights, meta = resolve_checkpoint_path(f"hf://owner/name@{rev}")
    assert weights.parent == hub_cache / "models--owner--name" / "snapshots" / V1
    assert meta.name == "model.json"
    assert load_checkpoint(f"hf://owner/name@{rev}").path == weights


def _one_line_error(result: tuple[int, str, str]) -> str:
    code, _, err = result
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_missing_offline_is_one_line_naming_repo(hub_cache: Path, bench_root, tmp_path, call_main):
    line = _one_line_error(
        call_main(
            eval_cli.main,
            "clipflow-eval",
            "ckpt=hf://owner/missing",
            f"data.test_root={bench_root}",
            "device=cpu",
            f"hydra.run.dir={tmp_path / 'ev'}",
        )
    )
    assert "hf://owner/missing" in line and "HF_HUB_OFFLINE" in line and "hf download" in line
    line = _one_line_error(
        call_main(detect_cli.main, "clipflow-detect", "ckpt=hf://owner/name@v9", "inputs=[x.png]")
    )
    assert "hf://owner/name@v9" in line and "--revision v9" in line


def test_snapshot_without_checkpoint_files_is_refused(hub_cache: Path):
    (hub_cache / "models--owner--name" / "snapshots" / V1 / "model.json").unlink()
    with pytest.raises(CheckpointError, match="has no model.json"):
        load_checkpoint("hf://owner/name@v1")


@pytest.mark.parametrize("bad", ["hf://name", "hf://a/b/c", "hf://a--b/c", "hf://a/b@", "hf://"])
def test_bad_hub_names_are_refused(bad: str):
    with pytest.raises(CheckpointError, match="hf://OWNER/NAME"):
        parse_hub_ref(bad)


PATH_LIKE = [
    ("hf://a/b@../../x", "'..'"),
    ("hf://a/b@/etc/passwd", "path-like"),
    ("hf://a/b@v1/", "path-like"),
    ("hf://a/b@refs//main", "path-like"),
    ("hf://a/b@..\\x", "'\\\\'"),
    ("hf://a/b@v1\x00", "control character"),
    ("hf://a/b@v1\nmain", "control character"),
    ("hf://a/b@v 1", "a space"),
    ("hf://a/b@.git", "starting with '.'"),
    ("hf://a/b@x" + "y" * 300, "longer than 256"),
]


@pytest.mark.parametrize(("ref", "reason"), PATH_LIKE)
def test_path_like_revisions_are_refused_with_the_reason(ref: str, reason: str):
    """A revision is a path in the Hub cache (refs/<revision>): hf://a/b@../../x passed."""
    with pytest.raises(CheckpointError) as info:
        parse_hub_ref(ref)
    message = str(info.value)
    assert reason in message and "revision" in message and "\n" not in message, message


def test_a_hand_built_ref_is_checked_before_the_cache_is_read(monkeypatch):
    def never(*a, **k):
        raise AssertionError("snapshot_download was reached with a path-like revision")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", never)
    with pytest.raises(CheckpointError, match="'..'"):
        fetch_checkpoint(HubRef("owner/name", "../../../etc"))


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/1", "release/2025-01", V1])
def test_branch_tag_and_commit_revisions_pass(rev: str):
    assert parse_hub_ref(f"hf://owner/name@{rev}").revision == rev


# ----------------------------------------------------------------------------- card + push


@pytest.fixture
def eval_of_run(trained_run: Path, bench_root: Path, tmp_path: Path, call_main) -> Path:
    _eval(call_main, str(trained_run), bench_root, tmp_path / "eval")
    return tmp_path / "eval"


def test_card_has_metadata_choices_score_and_eval_table(trained_run: Path, eval_of_run: Path):
    plan = plan_push(trained_run, "me/detector", results=eval_of_run)
    card_text = model_card(plan.ckpt, plan.repo_id, plan.results)
    card = ModelCard(card_text)
    assert card.data.library_name == "clipflow" and card.data.license == "mit"
    assert "clipflow" in card.data.tags and card.data.pipeline_tag == "image-classification"
    assert card.data.base_model is None  # a random tower has no Hub repo
    assert card.data.datasets is None  # a synthetic training folder is no known dataset
    # model-index: the eval's metrics.json, per set, as the Hub reads it
    metrics = json.loads((eval_of_run / "metrics.json").read_text())
    index = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    for row in metrics["datasets"]:
        assert index[(row["dataset"], "ap")] == row["ap"]
        assert index[(row["dataset"], "accuracy")] == row["acc@val"]
    assert card.data.model_name == "me/detector"
    front = yaml.safe_load(card_text.split("---")[1])
    assert front["library_name"] == "clipflow"
    meta = json.loads((trained_run / "model.json").read_text())
    for needle in (
        "`clipflow-tiny`",
        meta["backbone"]["weights_id"],
        "`N+P`",
        f"`{meta['config']['train']['loss']}`",
        "name=freq_mask",
        "−log p(z)/C − ½ log 2π",
        f"{meta['threshold']:.6g}",
        meta["validation"]["proxy"],
        "Random-weight backbone",
        "hf://me/detector",
        meta["sha256"],
    ):
        assert needle in card_text, needle
    table_row = next(
        line for line in (eval_of_run / "results.md").read_text().splitlines() if "| biggan" in line
    )
    assert table_row in card_text  # the eval table, verbatim


def test_card_names_the_outputs_as_they_are_and_no_local_path(trained_run: Path):
    """Detector.predict returns decision / fpr_val (the card said label / fpr); the training
    folder is published by its name only (an absolute path names the trainer's home)."""
    card = describe_plan(plan_push(trained_run, "me/detector"))
    assert "# score, decision, fpr_val, p_value" in card and "`fpr_val`" in card
    assert "`p_value` is the conformal p-value" in card and "`decision`" in card
    assert "model-index" not in card  # no eval given: no numbers invented
    assert "label, fpr" not in card and "`fpr`" not in card
    train_root = json.loads((trained_run / "model.json").read_text())["config"]["data"]
    train_root = Path(train_root["train_root"])
    assert train_root.is_absolute() and str(train_root) not in card
    assert f"`{train_root.name}` (natural images)" in card
    assert str(trained_run.parent) not in card  # no other local path either
    # what training found too small is said on the card too (this short run: steps, reals)
    warnings = json.loads((trained_run / "model.json").read_text())["warnings"]
    assert warnings and all(f"- Recorded when it was made: {w}" in card for w in warnings.values())


@pytest.mark.parametrize(
    ("metrics", "needle"),
    [
        (None, "no metrics.json there"),
        ("{not json", "metrics.json is not valid JSON"),
        ('{"datasets": []}', "metrics.json records no checkpoint_sha256"),
        ("[1, 2]", "metrics.json records no checkpoint_sha256"),
    ],
)
def test_results_without_a_checkpoint_record_say_what_is_missing(
    trained_run: Path, tmp_path: Path, metrics: str | None, needle: str
):
    """clipflow-push results=DIR said "metrics.json records sha256 None" for a missing file."""
    (tmp_path / "results.md").write_text("# Results\n")
    if metrics is not None:
        (tmp_path / "metrics.json").write_text(metrics)
    with pytest.raises(ClipflowError) as info:
        read_results(tmp_path, load_checkpoint(trained_run))
    message = str(info.value)
    assert needle in message and "None" not in message and "\n" not in message, message
    assert "clipflow-eval" in message  # what to do


def test_results_of_another_checkpoint_are_refused(trained_run: Path, eval_of_run: Path):
    metrics = eval_of_run / "metrics.json"
    record = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**record, "checkpoint_sha256": "0" * 64}))
    with pytest.raises(ClipflowError, match="not an evaluation of this checkpoint"):
        plan_push(trained_run, "me/detector", results=eval_of_run)


@pytest.fixture
def fake_api(monkeypatch) -> list[tuple[str, dict]]:
    """HfApi.create_repo / upload_folder record their calls (and the staged files) instead of
    reaching the network."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        calls.append(("upload_folder", {**kw, "files": files}))
        return huggingface_hub.CommitInfo(
            commit_url="https://huggingface.co/me/detector/commit/" + "c" * 40,
            commit_message="m",
            commit_description="",
            oid="c" * 40,
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _push(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        push_cli.main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_push_uploads_checkpoint_and_card(trained_run: Path, fake_api, capsys):
    code, out, err = _push(capsys, f"ckpt={trained_run}", "repo=me/detector", "private=true")
    assert code == 0, err
    (create, kw), (upload, up) = fake_api
    assert create == "create_repo" and kw["repo_id"] == "me/detector" and kw["private"] is True
    assert upload == "upload_folder" and up["repo_id"] == "me/detector"
    assert sorted(up["files"]) == ["README.md", "model.json", "model.safetensors"]
    assert up["files"]["model.safetensors"] == (trained_run / "model.safetensors").read_bytes()
    assert b"library_name: clipflow" in up["files"]["README.md"]
    # the published model.json names the training folder without the local path to it
    train_root = json.loads((trained_run / "model.json").read_text())["config"]["data"]
    published = json.loads(up["files"]["model.json"])["config"]["data"]["train_root"]
    assert published == "<local>/" + Path(train_root["train_root"]).name
    assert "commit/" + "c" * 40 in out


def test_push_dry_run_prints_and_uploads_nothing(trained_run: Path, fake_api, capsys):
    code, out, err = _push(capsys, f"ckpt={trained_run}", "repo=me/detector", "dry_run=true")
    assert code == 0, err
    assert fake_api == []
    size = (trained_run / "model.safetensors").stat().st_size
    assert f"model.safetensors  {size} bytes" in out
    assert "README.md" in out and "# CLIP-Flow detector `me/detector`" in out
    assert "nothing was uploaded" in err


def test_push_refuses_a_broken_checkpoint_before_uploading(
    trained_run: Path, tmp_path: Path, fake_api, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    meta = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**meta, "threshold": 5.0}))
    code, _, err = _push(capsys, f"ckpt={broken}", "repo=me/detector")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert fake_api == []
    code, _, err = _push(capsys, f"ckpt={trained_run}", "repo=me/detector@v1")
    assert code == 2 and "revision" in err and fake_api == []


def _hub_error(cls: type) -> Exception:
    """An instance of one of huggingface_hub's HTTP errors without an HTTP response."""
    err = cls.__new__(cls)
    Exception.__init__(err, "404 Client Error")
    return err


@pytest.mark.parametrize(
    "cls, needle",
    [
        ("RepositoryNotFoundError", "no such model repo on the Hub, or it is private"),
        ("RevisionNotFoundError", "revision 'v2' not found in owner/name"),
        ("LocalEntryNotFoundError", "the Hub cannot be reached and no copy is cached"),
    ],
)
def test_online_hub_failures_are_one_line(monkeypatch, cls: str, needle: str):
    from huggingface_hub import errors

    def fail(*a, **k):
        raise _hub_error(getattr(errors, cls))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_checkpoint("hf://owner/name@v2")
    assert "\n" not in str(info.value) and "hf://owner/name@v2" in str(info.value)


def test_reproduce_takes_a_hub_checkpoint():
    from clipflow.cli.reproduce import parse_request

    req = parse_request(["experiment=table5", "ckpt=hf://owner/name@v1", "extra_roots=[/x]"])
    assert req.opts.ckpt == "hf://owner/name@v1"


def test_failed_upload_is_one_line(trained_run: Path, monkeypatch, capsys):
    def refuse(self, repo_id, **kw):
        raise _hub_error(huggingface_hub.errors.HfHubHTTPError)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    code, _, err = _push(capsys, f"ckpt={trained_run}", "repo=me/detector")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "upload to me/detector failed" in err and "hf auth login" in err
