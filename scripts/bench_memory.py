"""Peak host memory of a cached extraction, and of training, vs the number of images (flat?).

    python scripts/bench_memory.py --n 10000 100000          # CPU, tiny backbone, 64-px JPEGs
    python scripts/bench_memory.py --train                   # 10k, 100k, 1M rows (< 3 min)
    python scripts/bench_memory.py --train --quick           # 5k, 20k, 100k rows

``--train``: N-mode training (1 epoch) on synthetic features written as feature-cache packs,
streamed within ``train.ram_budget_gb`` (``--path ram`` loads them all, the in-RAM path, for
comparison). The packs are written once per size into ``--data`` (D × 4 bytes per row; D = 64
by default so that 1M rows are 0.25 GB of packs, ``--dim 768`` for CLIP's width) and reused.
The flow is a small one (DR to 16, 2 blocks, batch 4096) so that 1M rows train in seconds:
the memory of a training does not depend on the flow's width, only the time does. The
default budget (0.005 GB) makes a buffer of one batch (4,096 rows at D = 64), below every
size, so every size streams and the peak cannot grow by filling a larger buffer. The run
ends with the ratio of each size's peak to the smallest size's (the baseline of the same
run), and of what the streaming path itself adds (peak − RSS after setup; setup = imports +
the caller's list of N file keys, ~100 bytes per file, which any caller holds). The packs
are written by this process before each child starts, so a child's peak is its own.

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
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TRAIN_SIZES = {False: [10_000, 100_000, 1_000_000], True: [5_000, 20_000, 100_000]}


def _rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """This process's resident memory now (not its peak so far); the peak where /proc lacks."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _rss_mb(resource.RUSAGE_SELF)


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
    from clipflow.backbones.backbone import load_backbone
    from clipflow.backbones.config import BackboneConfig
    from clipflow.backbones.preprocess import build_transform
    from clipflow.features.cache import FeatureCache
    from clipflow.features.cached_extract import cached_extract
    from clipflow.features.loader import Loader
    from clipflow.transforms.variant import IDENTITY

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
            Loader(batch_size=256, num_workers=workers),
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


def write_packs(folder: Path, n: int, dim: int, shard: int) -> list[str]:
    """Synthetic features of ``n`` 'files' as packs of ``shard`` rows; returns their keys."""
    from clipflow.features.cache import FeatureCache

    keys = [f"{i:032x}" for i in range(n)]
    done = folder / f"done-{n}-{dim}"
    if done.exists():
        return keys
    cache = FeatureCache(folder, shard_size=shard)
    gen = torch.Generator().manual_seed(0)
    for a in range(0, n, shard):
        rows = keys[a : a + shard]
        cache.write_pack(f"n{n}-d{dim}", rows, torch.randn(len(rows), dim, generator=gen), {})
    done.touch()
    return keys


def measure_train(
    n: int, data: Path, dim: int, budget_gb: float, path: str, device: str = "cpu"
) -> dict:
    """Runs inside the child process: locate the packs, train one epoch, report peak RSS."""
    from clipflow.features.cache import FeatureCache
    from clipflow.features.stream import locate
    from clipflow.flow.config import FlowConfig, TrainConfig
    from clipflow.flow.fit import fit
    from clipflow.flow.model import CLIPFlow

    keys = write_packs(data, n, dim, shard=4096)  # written by the parent: keys only
    base = _current_rss_mb()  # imports + the list of N file keys
    start = time.perf_counter()
    found = locate(FeatureCache(data), [[f"n{n}-d{dim}"]], keys, dim)
    del keys
    natural = found.features[0]
    if path == "ram":
        natural = natural[0][None]  # (1, N, D) in RAM: what the in-RAM path holds
    cfg = TrainConfig(mode="N", epochs=1, batch_size=4096, ram_budget_gb=budget_gb)
    torch.manual_seed(0)
    model = CLIPFlow(dim, FlowConfig(dr_dim=16, n_blocks=2))
    history = fit(model, natural, None, cfg, device)
    return {
        "n": n,
        "device": device,
        "dim": dim,
        "path": path,
        "budget_gb": budget_gb,
        "features_mb": n * dim * 4 / 2**20,
        "rss_after_setup_mb": round(base),
        "peak_rss_mb": round(_rss_mb(resource.RUSAGE_SELF)),
        "locate_and_train_s": round(time.perf_counter() - start, 1),
        "loss": round(history[-1]["loss"], 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, nargs="+", help="sizes (default 1k 10k; --train: 10k 100k 1M)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "clipflow-mem-jpegs")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    p.add_argument("--train", action="store_true", help="training from packs, not extraction")
    p.add_argument("--dim", type=int, default=64, help="--train: feature width")
    p.add_argument("--quick", action="store_true", help="--train: 5k, 20k, 100k rows")
    p.add_argument(
        "--budget-gb",
        type=float,
        default=0.005,
        help="--train: train.ram_budget_gb (D=64: 4,096 rows)",
    )
    p.add_argument("--path", choices=("stream", "ram"), default="stream", help="--train")
    p.add_argument("--device", default="cpu", help="--train: where the flow trains")
    args = p.parse_args(argv)
    if args.child and args.train:
        row = measure_train(args.child, args.data, args.dim, args.budget_gb, args.path, args.device)
        print(json.dumps(row))
        return 0
    if args.child:
        print(json.dumps(measure(args.child, args.data, args.workers)))
        return 0
    if args.n is None:
        args.n = [1000, 10000] if not args.train else TRAIN_SIZES[args.quick]
    rows = []
    for n in args.n:
        if args.train:  # here, so that the child's peak is not the writing's
            write_packs(args.data, n, args.dim, shard=4096)
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
                *(["--train", "--dim", str(args.dim)] if args.train else []),
                *(["--budget-gb", str(args.budget_gb), "--path", args.path] if args.train else []),
                *(["--device", args.device] if args.train else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if args.train:
        print(train_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def train_table(rows: list[dict]) -> str:
    """The --train rows as a table, each size's peak against the first (smallest) size's."""
    base = rows[0]
    lines = [
        f"{'rows':>10} {'path':>6} {'setup MB':>9} {'peak MB':>8} {'peak-setup':>10} "
        f"{'peak / first':>12} {'(peak-setup) / first':>20}"
    ]
    for r in rows:
        grow = r["peak_rss_mb"] - r["rss_after_setup_mb"]
        base_grow = max(1, base["peak_rss_mb"] - base["rss_after_setup_mb"])
        lines.append(
            f"{r['n']:>10,} {r['path']:>6} {r['rss_after_setup_mb']:>9} {r['peak_rss_mb']:>8} "
            f"{grow:>10} {r['peak_rss_mb'] / base['peak_rss_mb']:>11.2f}x "
            f"{grow / base_grow:>19.2f}x"
        )
    last = rows[-1]
    lines.append(
        f"peak RSS {last['n']:,} / {base['n']:,} rows = "
        f"{last['peak_rss_mb'] / base['peak_rss_mb']:.2f}x (D = {base['dim']}, "
        f"budget {base['budget_gb']} GB, same run)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
