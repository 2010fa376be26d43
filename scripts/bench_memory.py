"""Peak host memory of a cached extraction vs the number of images (is it flat?).

    python scripts/bench_memory.py --n 10000 100000          # CPU, tiny backbone, 64-px JPEGs

Each size runs in a fresh process (so peaks do not carry over): it extracts the features of
N generated JPEGs into a fresh feature cache and reports the peak RSS of the process and of
its largest loader worker, before and after reading the finished cache back. The features
themselves (N × 768 float32) are the only part that must grow with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def _rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def make_jpegs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                path, quality=90
            )
        paths.append(path)
    return paths


def measure(n: int, data: Path, workers: int) -> dict:
    """Runs inside the child process."""
    from clipflow.backbone import BackboneConfig, load_backbone
    from clipflow.cache import FeatureCache, cached_extract
    from clipflow.features import IDENTITY
    from clipflow.preprocess import build_transform

    paths = make_jpegs(data, n)
    base = _rss_mb(resource.RUSAGE_SELF)
    bb = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    with tempfile.TemporaryDirectory() as cache_dir:
        fs = cached_extract(
            bb,
            paths,
            build_transform(bb),
            [IDENTITY],
            FeatureCache(cache_dir),
            "cpu",
            batch_size=256,
            num_workers=workers,
            desc=f"{n} images",
        )
        return {
            "n": n,
            "n_features": len(fs.paths),
            "rss_after_setup_mb": base,
            "peak_rss_main_mb": _rss_mb(resource.RUSAGE_SELF),
            "peak_rss_worker_mb": _rss_mb(resource.RUSAGE_CHILDREN),
            "features_mb": fs.features.numel() * 4 / 2**20,
        }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "clipflow-mem-jpegs")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.data, args.workers)))
        return 0
    rows = []
    for n in args.n:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--workers",
                str(args.workers),
                "--data",
                str(args.data),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
