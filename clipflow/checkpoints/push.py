"""clipflow-push: a checkpoint published on the Hugging Face Hub with a generated model card.

:func:`push_checkpoint` validates the checkpoint with ``load_checkpoint`` first, stages it
with a generated model card (``README.md``, see :func:`model_card`) and uploads the folder in
one commit. Reading ``hf://`` checkpoints is :mod:`clipflow.checkpoints.hub`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.fileio import file_sha256
from ..core.versions import __version__
from ..errors import ClipflowError, first_line
from .checkpoint import Checkpoint, load_checkpoint
from .hub import parse_hub_ref
from .schema import META_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
CARD_TAGS = [
    "clipflow",
    "ai-generated-image-detection",
    "image-forensics",
    "normalizing-flow",
    "clip",
]

# ----------------------------------------------------------------------------- model card


def model_card(ckpt: Checkpoint, repo_id: str, results_md: str | None = None) -> str:
    """The README.md of a pushed checkpoint: YAML metadata + what the detector is, how it was
    trained, what its score and threshold mean, its evaluation (if given) and its limits."""
    from huggingface_hub import ModelCardData

    meta = ckpt.meta
    data = ModelCardData(license="mit", library_name="clipflow", tags=list(CARD_TAGS))
    sections = [
        _card_intro(meta, repo_id),
        _card_usage(repo_id),
        _card_model(meta),
        _card_training(meta),
        _card_score(ckpt),
        _card_results(results_md),
        _card_limitations(meta),
        _card_files(ckpt),
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
            f"`{_folder_name(cfg.get('data', {}).get('train_root'))}` (natural images)",
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


def _folder_name(path: object) -> str:
    """Only the last part of a training folder as typed: the card is public, and an absolute
    path would publish the trainer's home folder and user name."""
    if not path:
        return "?"
    return re.split(r"[\\/]", str(path).rstrip("/\\"))[-1] or "?"  # POSIX or Windows


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
        "threshold)."
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
    return "\n".join(lines)


def _card_files(ckpt: Checkpoint) -> str:
    versions = ckpt.meta.get("versions") or {}
    pinned = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "not recorded"
    return (
        "## Files\n\n"
        f"- `{WEIGHTS_NAME}`: the flow (and DR) weights, sha256 `{ckpt.sha256}`\n"
        f"- `{META_NAME}`: format, config, backbone, threshold, training record\n\n"
        f"Trained with: {pinned}."
    )


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


# ----------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushPlan:
    """What an upload sends: the staged folder's files and the card text."""

    repo_id: str
    private: bool
    files: dict[str, Path]  # name in repo -> local file
    card: str


def read_results(results_dir: str | Path, ckpt: Checkpoint) -> str:
    """results.md of a clipflow-eval run of ``ckpt`` (robustness.md appended if present).

    The run's metrics.json must name this checkpoint's sha256: results of another model
    embedded in the card would be wrong numbers under this model's name.
    """
    folder = Path(results_dir).expanduser()
    md, metrics = folder / "results.md", folder / "metrics.json"
    if not md.is_file():
        raise ClipflowError(
            f"results={folder}: no results.md there; pass the run dir clipflow-eval printed"
        )
    recorded = _evaluated_sha256(folder, metrics)
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
    return text


def _evaluated_sha256(folder: Path, metrics: Path) -> str:
    """The checkpoint sha256 a clipflow-eval run's metrics.json records, or one line saying
    what is missing: without it the results cannot be tied to the checkpoint."""
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
    return recorded


def plan_push(
    ckpt_path: str | Path, repo: str, results: str | Path | None = None, private: bool = False
) -> PushPlan:
    """Validate the checkpoint (load_checkpoint), read the results, write the card text."""
    repo_id = parse_hub_ref(repo).repo_id
    if "@" in repo:
        raise ClipflowError(f"repo={repo}: pushing goes to a repo, not a revision; drop '@...'")
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.path is not None  # load_checkpoint always records where it read from
    results_md = read_results(results, ckpt) if results else None
    files = {WEIGHTS_NAME: ckpt.path, META_NAME: ckpt.path.with_suffix(".json")}
    return PushPlan(repo_id, private, files, model_card(ckpt, repo_id, results_md))


def describe_plan(plan: PushPlan) -> str:
    """The dry-run report: target, files with sizes and hashes, then the card."""
    lines = [f"would upload to https://huggingface.co/{plan.repo_id} (private={plan.private}):"]
    for name, path in plan.files.items():
        lines.append(f"  {name}  {path.stat().st_size} bytes  sha256 {file_sha256(path)}")
    lines.append(f"  {CARD_NAME}  {len(plan.card.encode('utf-8'))} bytes  (model card below)")
    return "\n".join(lines) + "\n\n" + plan.card


def push_checkpoint(plan: PushPlan, api=None) -> str:
    """Create the repo if needed and upload the staged files in one commit; the commit URL."""
    from huggingface_hub import HfApi

    api = api or HfApi(library_name="clipflow", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="clipflow-push-") as tmp:
        stage = Path(tmp)
        for name, path in plan.files.items():
            shutil.copyfile(path, stage / name)
        (stage / CARD_NAME).write_text(plan.card, encoding="utf-8")
        digest = file_sha256(stage / WEIGHTS_NAME)
        try:
            api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
            info = api.upload_folder(
                repo_id=plan.repo_id,
                folder_path=stage,
                commit_message=f"clipflow-push: checkpoint {digest[:12]}",
            )
        except Exception as err:  # auth, network, permissions: huggingface_hub's error types
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ClipflowError(
                f"upload to {plan.repo_id} failed ({type(err).__name__}: {reason}); "
                "log in with `hf auth login` (or set HF_TOKEN) and check you may write there"
            ) from None
    return str(getattr(info, "commit_url", info))
