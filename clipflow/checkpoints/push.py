"""clipflow-push: a checkpoint published on the Hugging Face Hub with a generated model card.

:func:`plan_push` validates the checkpoint with ``load_checkpoint`` first;
:func:`save_pretrained` writes the folder a Hub model repo holds (model.safetensors,
model.json with local paths redacted: :mod:`clipflow.checkpoints.pretrained`, and the model
card ``README.md``, :func:`model_card`); :func:`push_to_hub` uploads that folder in one
commit. ``Detector.save_pretrained`` / ``push_to_hub`` and ``clipflow-push`` all go through
these. Reading ``hf://`` checkpoints (or such a folder) is :mod:`clipflow.checkpoints.hub`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.fileio import atomic_write_text, file_sha256
from ..errors import ClipflowError, first_line
from .card_data import card_data, folder_name
from .checkpoint import Checkpoint, load_checkpoint
from .hub import parse_hub_ref
from .pretrained import LOCAL, redacted_fields, save_published, upload_folder
from .schema import META_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
PLACEHOLDER_REPO = "OWNER/NAME"  # in the card of a folder saved without a repo id


@dataclass(frozen=True)
class Results:
    """A clipflow-eval run of a checkpoint: its results.md (+ robustness.md) and metrics.json."""

    md: str
    metrics: dict


# ----------------------------------------------------------------------------- model card


def model_card(
    ckpt: Checkpoint,
    repo_id: str | None,
    results: Results | None = None,
    source_sha256: str | None = None,
) -> str:
    """The README.md of a published checkpoint: YAML metadata (card_data: base_model,
    pipeline_tag, datasets, model-index from ``results``) + what the detector is, how it was
    trained, what its outputs mean, its evaluation (if given) and its limits. ``repo_id``
    None: a folder saved before its repo is known (the card says OWNER/NAME).
    ``source_sha256``: the checkpoint it was exported from, when its weights differ."""
    meta, name = ckpt.meta, repo_id or PLACEHOLDER_REPO
    data = card_data(meta, name, results.metrics if results else None)
    sections = [
        _card_intro(meta, name),
        _card_usage(name),
        _card_model(meta),
        _card_training(meta),
        _card_score(ckpt),
        _card_results(results.md if results else None),
        _card_limitations(meta),
        _card_files(ckpt, source_sha256),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def _card_intro(meta: dict, repo_id: str) -> str:
    mode = meta.get("train", {}).get("mode") or meta["config"].get("train", {}).get("mode", "?")
    return (
        f"# CLIP-Flow detector `{repo_id}`\n\n"
        "A CLIP-Flow detector (Yuan et al., DFF 2025). "
        "It detects AI-generated images as anomalies: a normalizing flow models the frozen CLIP "
        "image features of natural photographs, and an image whose features are unlikely "
        "under it scores high. It was trained without any AI-generated image "
        f"(mode `{mode}`: {_MODES.get(mode, 'see model.json')}). "
        f"Made with clipflow {meta.get('clipflow_version', '?')}."
    )


_MODES = {
    "N": "likelihood of natural images only",
    "P": "natural images against frequency-masked proxies of them",
    "N+P": "likelihood of natural images plus a margin against frequency-masked proxies",
}


def _card_usage(repo_id: str) -> str:
    return (
        "## Use\n\n"
        "With the `clipflow` package installed:\n\n"
        "```bash\n"
        f"clipflow-detect ckpt=hf://{repo_id} inputs=[photo.jpg,folder/]\n"
        f"clipflow-eval ckpt=hf://{repo_id} data.test_root=/data/benchmark\n```\n\n"
        "```python\nfrom clipflow import Detector\n"
        f'det = Detector.from_pretrained("{repo_id}")  # revision="<commit>" pins it\n'
        '# or a local copy of this repo: Detector.from_pretrained("path/to/folder")\n'
        'det.predict(["photo.jpg"])  # score, decision, fpr_val, p_value per image\n```\n\n'
        "Pin a revision (`hf://OWNER/NAME@<commit>`) for reproducible numbers. The CLIP "
        "backbone is loaded by open_clip from its own weights, not from this repo."
    )


def _card_family(bb: dict) -> str:
    """``open_clip``, ``timm`` or ``custom``, and which block tokens (if any) were used."""
    family = f"`{bb.get('family') or 'open_clip'}`"
    if not bb.get("layers"):
        return f"{family}, tower output"
    return f"{family}, class token of blocks {bb['layers']} ({bb.get('layer_pool')})"


def _card_model(meta: dict) -> str:
    bb, flow = meta["backbone"], meta["flow"]
    rows = [
        ("backbone", f"`{bb.get('name')}`"),
        ("backbone family / layers", _card_family(bb)),
        ("backbone weights", f"`{bb.get('weights_id') or bb.get('pretrained') or 'n/a'}`"),
        ("preprocessing", f"`{bb.get('preprocess', 'paper')}`, {bb.get('image_size', '?')} px"),
        ("precision", f"`{bb.get('precision', 'fp32')}`"),
        ("feature dim", str(meta["feature_dim"])),
        (
            "flow",
            f"{flow.get('block', 'glow')} × {flow['n_blocks']} blocks, DR to "
            f"{flow['dr_dim'] or meta['feature_dim']}, hidden ×{flow['hidden_mult']}, "
            f"clamp {flow['clamp']}, L2-normalised input: {flow['normalize']}",
        ),
    ]
    return "## Model\n\n" + _table(rows)


def _card_training(meta: dict) -> str:
    cfg, train = meta.get("config", {}), meta.get("train", {})
    tcfg, proxy = cfg.get("train", {}), meta.get("proxy") or {}
    classes = train.get("classes") or {}
    loss = tcfg.get("loss", "?")
    if "hinge" in str(loss):
        loss = f"{loss} (margin {tcfg.get('hinge_margin')})"
    rows = [
        ("mode", f"`{train.get('mode', tcfg.get('mode', '?'))}`"),
        (
            "training data",
            f"`{folder_name(cfg.get('data', {}).get('train_root')) or '?'}` (natural images)",
        ),
        ("images", f"{train.get('n_images', '?')} in {len(classes) or '?'} classes"),
        ("loss", f"`{loss}`"),
        ("proxy", ", ".join(f"{k}={v}" for k, v in proxy.items()) or "none"),
        ("views / augmentation", f"{train.get('views', 1)}; {train.get('augmentation', 'n/a')}"),
        (
            "optimisation",
            f"{train.get('epochs', tcfg.get('epochs', '?'))} epochs, lr {tcfg.get('lr', '?')}, "
            f"batch {tcfg.get('batch_size', '?')}, seed {cfg.get('seed', '?')}",
        ),
    ]
    return "## Training\n\n" + _table(rows) + "\n\nThe full resolved config is in `model.json`."


def _card_score(ckpt: Checkpoint) -> str:
    val = ckpt.meta.get("validation", {})
    n_val = ckpt.val_real_scores.numel()
    calib = (
        f"on {val.get('n_images', '?')} natural validation images against their "
        f"`{val.get('proxy', 'band-stop')}` proxies (validation accuracy "
        f"{100 * val['acc']:.2f}%)"
        if "acc" in val
        else f"on natural validation images against their `{val.get('proxy', 'band-stop')}` proxies"
    )
    return (
        "## Score and threshold\n\n"
        "    score q(z) = (‖u‖² − 2 log|det J|) / (2C) = −log p(z)/C − ½ log 2π"
        "        higher = more likely AI-generated\n\n"
        "with `u` the flow's output for the image's CLIP feature `z`, `C` its dimension. "
        f"An image's `decision` is `ai-generated` when its score exceeds the threshold "
        f"**{ckpt.threshold:.6g}**, chosen for maximum accuracy {calib}: no AI-generated image "
        "was used. `fpr_val` (clipflow-detect, `Detector.predict`) is the share of the "
        f"{n_val} stored natural validation scores at least as high as an image's score: how "
        "often a real photo looks this unusual (`acc@val` in evaluation tables uses the same "
        "threshold). `p_value` is the conformal p-value (1 + that count) / "
        f"({n_val} + 1); `fpr=ALPHA` (`clipflow-detect fpr=0.01`, `Detector.predict(..., "
        "fpr=0.01)`) decides `ai-generated` when `p_value` <= ALPHA instead, which flags at "
        "most that share of real photos like the calibration ones."
    )


def _card_results(results_md: str | None) -> str:
    if not results_md:
        return (
            "## Evaluation\n\nNo evaluation was attached to this upload "
            "(`clipflow-push ... results=EVAL_DIR` embeds a clipflow-eval run)."
        )
    body = re.sub(r"^(#+)", r"##\1", results_md.strip(), flags=re.MULTILINE)  # nest headings
    return "## Evaluation (clipflow-eval of this checkpoint)\n\n" + body


def _card_limitations(meta: dict) -> str:
    lines = [
        "## Limitations\n",
        "- Generators unlike those it was checked on may score as natural; the threshold was "
        "calibrated on proxies, not on any generator's images.",
        "- Post-processing (JPEG re-compression, resizing, blur, screenshots) shifts scores, "
        "usually towards natural; measure it with `clipflow-eval ... perturb=all`.",
        "- Natural images unlike the training photos (other cameras, medical, drawings, heavy "
        "edits) can score high: read `fpr_val`, not only the decision.",
        "- A score is evidence, not proof: do not use it alone to decide about a person.",
    ]
    if meta["backbone"].get("random_init"):
        lines.insert(
            1,
            "- **Random-weight backbone: this checkpoint only shows that the pipeline runs; "
            "it detects nothing.**",
        )
    # what training or clipflow-calibrate found too small or not usable (model.json warnings)
    lines += [
        f"- Recorded when it was made: {text}" for text in (meta.get("warnings") or {}).values()
    ]
    return "\n".join(lines)


def _card_files(ckpt: Checkpoint, source_sha256: str | None = None) -> str:
    versions = ckpt.meta.get("versions") or {}
    pinned = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "not recorded"
    redacted = redacted_fields(ckpt.meta)
    paths = (
        f" Local paths are published by their last part only (`{LOCAL}/NAME`): "
        + ", ".join(f"`{f}`" for f in redacted)
        + "."
        if redacted
        else ""
    )
    source = (
        f" Exported from checkpoint sha256 `{source_sha256}` (the evaluation above is of that "
        "file): the same tensors, only the redacted path in its hashed record differs."
        if source_sha256 and source_sha256 != ckpt.sha256
        else ""
    )
    return (
        "## Files\n\n"
        f"- `{WEIGHTS_NAME}`: the flow (and DR) weights, sha256 `{ckpt.sha256}`\n"
        f"- `{META_NAME}`: format, config, backbone, threshold, training record\n\n"
        f"Trained with: {pinned}.{paths}{source}"
    )


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


# ----------------------------------------------------------------------------- results


def read_results(results_dir: str | os.PathLike, ckpt: Checkpoint) -> Results:
    """results.md of a clipflow-eval run of ``ckpt`` (robustness.md appended if present)
    and its metrics.json (the card's model-index).

    The run's metrics.json must name this checkpoint's sha256: results of another model
    embedded in the card would be wrong numbers under this model's name.
    """
    folder = Path(results_dir).expanduser()
    md, metrics = folder / "results.md", folder / "metrics.json"
    if not md.is_file():
        raise ClipflowError(
            f"results={folder}: no results.md there; pass the run dir clipflow-eval printed"
        )
    record = _evaluated_record(folder, metrics)
    recorded = record["checkpoint_sha256"]
    if recorded != ckpt.sha256:
        raise ClipflowError(
            f"results={folder} is not an evaluation of this checkpoint (metrics.json records "
            f"sha256 {recorded[:12]}, the checkpoint is {ckpt.sha256[:12]}); "
            "evaluate it with clipflow-eval ckpt=... and pass that run dir"
        )
    text = md.read_text(encoding="utf-8")
    robustness = folder / "robustness.md"
    if robustness.is_file():
        text += "\n\n" + robustness.read_text(encoding="utf-8")
    return Results(text, record)


def _evaluated_record(folder: Path, metrics: Path) -> dict:
    """A clipflow-eval run's metrics.json, which records the checkpoint sha256, or one line
    saying what is missing: without it the results cannot be tied to the checkpoint."""
    again = "rerun clipflow-eval ckpt=... and pass that run dir"
    if not metrics.is_file():
        raise ClipflowError(
            f"results={folder}: no metrics.json there (clipflow-eval writes it beside "
            f"results.md; it records which checkpoint was evaluated); {again}"
        )
    try:
        record = json.loads(metrics.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClipflowError(
            f"results={folder}: cannot read metrics.json ({err.strerror})"
        ) from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ClipflowError(
            f"results={folder}: metrics.json is not valid JSON ({first_line(err)}); {again}"
        ) from None
    recorded = record.get("checkpoint_sha256") if isinstance(record, dict) else None
    if not isinstance(recorded, str) or not recorded:
        raise ClipflowError(
            f"results={folder}: metrics.json records no checkpoint_sha256, so these results "
            f"cannot be tied to the checkpoint (not a clipflow-eval run?); {again}"
        )
    return record


# ----------------------------------------------------------------------------- save / push


def save_pretrained(
    ckpt: Checkpoint,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    results: str | os.PathLike | Results | None = None,
) -> Path:
    """Write the folder a Hub model repo of ``ckpt`` holds: model.safetensors, model.json
    (local paths redacted) and the model card README.md; ``results``: a clipflow-eval run
    dir of this checkpoint for the card. No network. Returns the folder, which
    ``Detector.from_pretrained(folder)`` (or ``ckpt=folder``) loads with identical scores."""
    if repo_id is not None:
        repo_id = _repo_id(repo_id)
    if results is not None and not isinstance(results, Results):
        results = read_results(results, ckpt)
    published = save_published(ckpt, folder)
    assert published.path is not None  # load_checkpoint records where it read from
    card = model_card(published, repo_id, results, ckpt.sha256)
    atomic_write_text(published.path.parent / CARD_NAME, card)
    return published.path.parent


def push_to_hub(
    ckpt: Checkpoint,
    repo_id: str,
    private: bool = False,
    results: str | os.PathLike | Results | None = None,
    api=None,
) -> str:
    """Upload ``ckpt`` as :func:`save_pretrained` writes it, in one commit to ``repo_id``
    (created if needed); the commit URL. ``api``: an ``HfApi`` (default: a new one)."""
    return push_checkpoint(PushPlan(_repo_id(repo_id), private, ckpt, _results(results, ckpt)), api)


@dataclass(frozen=True)
class PushPlan:
    """What an upload sends: a validated checkpoint, where to, and the eval for its card."""

    repo_id: str
    private: bool
    ckpt: Checkpoint
    results: Results | None = None


def _repo_id(repo: str) -> str:
    if "@" in repo:
        raise ClipflowError(f"repo={repo}: pushing goes to a repo, not a revision; drop '@...'")
    return parse_hub_ref(repo).repo_id


def _results(results: str | os.PathLike | Results | None, ckpt: Checkpoint) -> Results | None:
    if results is None or isinstance(results, Results):
        return results
    return read_results(results, ckpt)


def plan_push(
    ckpt_path: str | Path, repo: str, results: str | Path | None = None, private: bool = False
) -> PushPlan:
    """Validate the repo name, the checkpoint (load_checkpoint) and the results."""
    repo_id = _repo_id(repo)
    ckpt = load_checkpoint(ckpt_path)
    return PushPlan(repo_id, private, ckpt, _results(results, ckpt))


def describe_plan(plan: PushPlan) -> str:
    """The dry-run report: target, the files as staged (sizes, hashes), then the card."""
    lines = [f"would upload to https://huggingface.co/{plan.repo_id} (private={plan.private}):"]
    with tempfile.TemporaryDirectory(prefix="clipflow-push-") as tmp:
        stage = save_pretrained(plan.ckpt, tmp, plan.repo_id, plan.results)
        for name in (WEIGHTS_NAME, META_NAME):
            path = stage / name
            lines.append(f"  {name}  {path.stat().st_size} bytes  sha256 {file_sha256(path)}")
        card = (stage / CARD_NAME).read_text(encoding="utf-8")
    lines.append(f"  {CARD_NAME}  {len(card.encode('utf-8'))} bytes  (model card below)")
    return "\n".join(lines) + "\n\n" + card


def push_checkpoint(plan: PushPlan, api=None) -> str:
    """Stage the folder :func:`save_pretrained` writes and upload it in one commit; the
    commit URL."""
    with tempfile.TemporaryDirectory(prefix="clipflow-push-") as tmp:
        stage = save_pretrained(plan.ckpt, tmp, plan.repo_id, plan.results)
        return upload_folder(stage, plan.repo_id, plan.private, api)
