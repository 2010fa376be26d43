"""The model card's YAML metadata, as the Hub reads it: ``base_model``, ``pipeline_tag``,
``datasets`` and ``model-index`` (through huggingface_hub's ModelCardData and EvalResult,
never hand-written YAML).

- ``base_model``: the Hub repo of the frozen backbone's weights (:func:`base_model_id`):
  OpenAI's own CLIP repos for open_clip's ``openai`` tag, the repo open_clip or timm
  download for their other tags, none for random towers (``clipflow-tiny``), local weight
  files or custom extractors (which weights they are is not known).
- ``datasets``: the training data's Hub dataset where it is a known one (:func:`training_datasets`),
  else omitted.
- ``model-index``: the per-set results of a clipflow-eval run of this very checkpoint
  (its ``metrics.json``, tied by sha256; see push.read_results); omitted without one. The
  checkpoint itself records no test results (its validation accuracy is against proxies,
  not generators, and is not put there).
"""

from __future__ import annotations

import re
from typing import Any

from ..backbones.config import TINY_NAME, packaged_names
from ..backbones.protocol import CUSTOM
from ..backbones.weights import looks_like_path
from ..data.download import load_manifest

LICENSE = "mit"
PIPELINE_TAG = "image-classification"
TAGS = [
    "clipflow",
    "ai-generated-image-detection",
    "image-forensics",
    "normalizing-flow",
    "clip",
]
# OpenAI's own releases of the CLIP towers open_clip loads with pretrained=openai (open_clip
# downloads a re-hosted copy of the same weights, e.g. timm/vit_large_patch14_clip_224.openai).
OPENAI_REPOS = {
    "ViT-B-32": "openai/clip-vit-base-patch32",
    "ViT-B-16": "openai/clip-vit-base-patch16",
    "ViT-L-14": "openai/clip-vit-large-patch14",
    "ViT-L-14-336": "openai/clip-vit-large-patch14-336",
}
# Training folders of the paper's data as clipflow-download-data unpacks them -> manifest part.
KNOWN_TRAINING_FOLDERS = {"progan_train": "train", "progan_val": "val"}
# metrics.json column -> (model-index metric type, shown name); values are percentages.
EVAL_METRICS = {
    "ap": ("ap", "AP (%)"),
    "acc@val": ("accuracy", "acc@val (%)"),
    "auc": ("roc_auc", "AUC (%)"),
}


def card_data(meta: dict, model_name: str, metrics: dict | None = None):
    """The card's metadata (a huggingface_hub ``ModelCardData``) for a checkpoint's
    ``meta``; ``metrics``: the metrics.json of a clipflow-eval run of it, or None."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        license=LICENSE,
        library_name="clipflow",
        tags=list(TAGS),
        pipeline_tag=PIPELINE_TAG,
        base_model=base_model_id(meta["backbone"]),
        datasets=training_datasets(meta) or None,
        model_name=model_name,
        eval_results=eval_results(metrics) or None,
    )


def base_model_id(backbone: dict) -> str | None:
    """The Hub repo id of the backbone's weights, or None where there is none: a random
    tower (``clipflow-tiny``, ``pretrained: null``), a local weights file (which weights it
    holds is not known), a custom extractor."""
    name, pretrained = str(backbone.get("name") or ""), backbone.get("pretrained")
    family = backbone.get("family") or "open_clip"
    if backbone.get("random_init") or not pretrained or family == CUSTOM:
        return None
    if name == TINY_NAME or name in packaged_names() or looks_like_path(str(pretrained)):
        return None
    if name.startswith("hf-hub:"):
        return _repo(name.removeprefix("hf-hub:"))
    if family == "timm":
        from ..backbones.timm_tower import hub_source

        source = hub_source(name)
        return source[0] if source else None
    if pretrained == "openai":
        known = OPENAI_REPOS.get(name.removesuffix("-quickgelu"))
        if known:
            return known
    from open_clip.pretrained import get_pretrained_cfg

    hub = (get_pretrained_cfg(name, str(pretrained)) or {}).get("hf_hub")
    return _repo(hub) if hub else None


def _repo(text: str) -> str | None:
    """``org/name`` from open_clip's ``org/name/`` (or ``org/name/file``) or ``org/name@rev``."""
    parts = text.split("@")[0].strip("/").split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else None


def training_datasets(meta: dict) -> list[str]:
    """Hub dataset ids of the training (and validation) folders when they are the paper's
    (``progan_train``, ``progan_val``: the CNNDetection release, data_manifest.json); [] for
    any other folder, whose contents are not known."""
    data = (meta.get("config") or {}).get("data") or {}
    manifest = None
    found: list[str] = []
    for key in ("train_root", "val_root"):
        part = KNOWN_TRAINING_FOLDERS.get(folder_name(data.get(key)))
        if part is None:
            continue
        manifest = manifest or load_manifest()
        repo = manifest.files[manifest.parts[part].files[0]].source.get("repo_id")
        if repo and repo not in found:
            found.append(repo)
    return found


def folder_name(path: object) -> str:
    """The last part of a folder as typed (POSIX or Windows separators); "" for none."""
    if not path:
        return ""
    return re.split(r"[\\/]", str(path).rstrip("/\\"))[-1]


def eval_results(metrics: dict | None) -> list:
    """One huggingface_hub ``EvalResult`` per test set and metric of a clipflow-eval
    ``metrics.json`` (percentages, as in results.md); [] without one."""
    from huggingface_hub import EvalResult

    out = []
    for row in (metrics or {}).get("datasets") or []:
        if not isinstance(row, dict) or not row.get("dataset"):
            continue
        for column, (metric_type, metric_name) in EVAL_METRICS.items():
            value = _finite(row.get(column))
            if value is None:
                continue
            out.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name="AI-generated image detection",
                    dataset_type=str(row["dataset"]),
                    dataset_name=str(row.get("display_name") or row["dataset"]),
                    dataset_config=str(row.get("benchmark")) if row.get("benchmark") else None,
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=value,
                )
            )
    return out


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None
