"""Precision check: do bf16 / autocast / TF32 features match strict fp32 on the same images?

    python scripts/check_precision.py                                   # CPU, tiny backbone
    python scripts/check_precision.py --device cuda --backbone vit_l14_random --n 512

Reports the cosine similarity of every image's features to the fp32 ones (min and mean) and
the AP of a linear read-out fitted on the fp32 features of a generated real/fake set, per
precision. The target (issue #3): cosine >= 0.999 and AP within 0.1 point of fp32. It is
the condition for ``backbone.precision=auto`` choosing bf16 on GPUs; tests/test_auto.py runs
:func:`check` on the tiny backbone in-process so the suite keeps it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.data.synthetic import fake_image, natural_image
from clipflow.features.extract import extract_features
from clipflow.features.loader import Loader

MIN_COSINE = 0.999  # every image's features vs fp32
MAX_AP_DIFF = 0.1  # points of AP of the fp32-fitted read-out

BACKBONES = {
    "tiny": dict(name="tiny", pretrained=None),
    "vit_l14_random": dict(name="ViT-L-14-quickgelu", pretrained=None),
}


def make_set(root: Path, n: int) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(n):
        fake = i % 2
        path = root / f"{i:05d}.jpg"
        Image.fromarray(
            fake_image(rng, 256, strength=2.0) if fake else natural_image(rng, 256)
        ).save(path, quality=92)
        paths.append(path)
        labels.append(fake)
    return paths, np.array(labels)


def features(
    backbone_kw: dict, precision: str, paths, device, num_workers: int = 4
) -> torch.Tensor:
    bb = load_backbone(BackboneConfig(precision=precision, **backbone_kw), device)
    loader = Loader(batch_size=128, num_workers=num_workers)
    return extract_features(bb, paths, build_transform(bb), [None], device, loader).features[0]


def check(backbone: str, device: str, n: int, precisions: list[str], num_workers: int = 4) -> dict:
    """Cosine to the fp32 features and read-out AP per precision, on ``n`` generated images."""
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = make_set(Path(tmp), n)
        ref = features(BACKBONES[backbone], "fp32", paths, device, num_workers)
        w = ref[labels == 1].mean(0) - ref[labels == 0].mean(0)  # read-out fitted on fp32 only
        ap_ref = 100 * average_precision_score(labels, (ref @ w).numpy())
        report = {
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
            "backbone": backbone,
            "n": n,
            "fp32_ap": ap_ref,
            "precisions": {},
        }
        for precision in precisions:
            feats = features(BACKBONES[backbone], precision, paths, device, num_workers)
            cos = torch.nn.functional.cosine_similarity(feats, ref, dim=-1)
            ap = 100 * average_precision_score(labels, (feats @ w).numpy())
            report["precisions"][precision] = {
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                "ap": ap,
                "ap_diff": ap - ap_ref,
            }
    return report


def passes(report: dict) -> bool:
    """Every precision within the targets."""
    return all(
        r["cos_min"] >= MIN_COSINE and abs(r["ap_diff"]) < MAX_AP_DIFF
        for r in report["precisions"].values()
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--precisions", nargs="+", default=["bf16", "amp_bf16", "tf32"])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report = check(args.backbone, args.device, args.n, args.precisions)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if passes(report) else 1


if __name__ == "__main__":
    sys.exit(main())
