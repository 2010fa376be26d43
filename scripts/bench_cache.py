"""Benchmark: the feature cache's overhead on a fully cached run, and incremental extraction.

    python scripts/bench_cache.py                    # N = 10,000 and 100,000 (< 2 min, 2 cores)
    python scripts/bench_cache.py --sizes 10000 100000 1000000 --json cache.json

(1) Full hits: N empty files (never decoded on a hit) whose file keys get random features,
    written straight into packs of the real setting key (tiny backbone, its transform, the
    identity variant), then ``cached_extract`` over the whole list with a backbone that raises
    if called. The time is split into stat + file key, lookup (pack headers, then loading and
    checking the packs that hold wanted rows) and assembling the (1, N, D) tensor.
    A size whose file creation would take longer than ``--max-create-s`` (projected from the
    largest size created) is not run: its figures are a linear extrapolation, labelled so.
(2) Incremental: 10 new real images added to the folder of ``--incremental-size`` cached files,
    the whole folder listed again through the real tiny backbone; the images its forward saw
    are counted (must be the 10 new ones).
Prints a table; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.data.synthetic import write_images
from clipflow.features.cache import DEFAULT_SHARD_SIZE, FeatureCache, file_key
from clipflow.features.cached_extract import _assemble, cached_extract
from clipflow.features.loader import DEFAULT_LOADER
from clipflow.transforms.variant import IDENTITY


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--incremental-size", type=int, default=100_000, help="cached files (part 2)")
    p.add_argument("--new", type=int, default=10, help="new real images (part 2)")
    p.add_argument("--max-create-s", type=float, default=90.0)
    p.add_argument("--workdir", default=None, help="parent of the temporary folder")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def _make_files(folder: Path, n: int) -> tuple[list[str], float]:
    """``n`` empty files in ``folder``; their paths and the seconds it took."""
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    paths = []
    for i in range(n):
        path = str(folder / f"{i:07d}.png")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        paths.append(path)
    return paths, time.perf_counter() - t0


def _fill_cache(cache: FeatureCache, key: str, paths: list[str], dim: int) -> float:
    """Packs of random features for ``paths`` under setting ``key``; seconds taken."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    size = cache.shard_size
    for start in range(0, len(paths), size):
        chunk = paths[start : start + size]
        feats = torch.randn(len(chunk), dim, generator=gen)
        cache.write_pack(key, [file_key(p) for p in chunk], feats, {})
    return time.perf_counter() - t0


class _Counter:
    """Forward pre-hook: counts the images the backbone sees, or refuses any call."""

    def __init__(self, refuse: bool):
        self.refuse, self.images = refuse, 0

    def __call__(self, module, inputs):
        if self.refuse:
            raise AssertionError("backbone called on a fully cached run")
        self.images += int(inputs[0].shape[0])


def _full_hit(backbone, tf, root: Path, n: int) -> dict:
    """Part (1) at one size: create, fill, then time the cached run and its parts."""
    paths, create_s = _make_files(root / f"files{n}", n)
    cache = FeatureCache(root / f"cache{n}", shard_size=DEFAULT_SHARD_SIZE)
    # the key cached_extract computes (its default loader caps pixels at data.max_megapixels)
    key = cache.setting_key(backbone, tf, IDENTITY, 0, 0, DEFAULT_LOADER.max_pixels)
    dim = backbone.feature_dim
    fill_s = _fill_cache(cache, key, paths, dim)
    guard = backbone.register_forward_pre_hook(_Counter(refuse=True))
    try:
        t0 = time.perf_counter()
        fs = cached_extract(backbone, paths, tf, [IDENTITY], cache, desc="bench")
        total = time.perf_counter() - t0
        assert tuple(fs.features.shape) == (1, n, dim) and fs.paths == paths and not fs.skipped
        probe = fs.features[0, :: max(1, n // 1000)].clone()
        del fs  # at 1M files the tensor is 3 GB: do not hold two of them
        # The parts, timed separately with the same calls cached_extract makes.
        t0 = time.perf_counter()
        fkeys = [file_key(p) for p in paths]
        t1 = time.perf_counter()
        headers = cache.packs(key)
        t2 = time.perf_counter()
        known = [cache.lookup(key, set(fkeys), dim)]
        t3 = time.perf_counter()
        again = _assemble(known, paths, fkeys, dim)
        t4 = time.perf_counter()
    finally:
        guard.remove()
    assert torch.equal(again.features[0, :: max(1, n // 1000)], probe)
    return {
        "n": n,
        "measured": True,
        "create_files_s": create_s,
        "fill_cache_s": fill_s,
        "packs": len(headers),
        "cached_run_s": total,
        "us_per_file": total / n * 1e6,
        "stat_key_s": t1 - t0,
        "pack_headers_s": t2 - t1,
        "lookup_s": t3 - t2,
        "assemble_s": t4 - t3,
    }


def _extrapolate(row: dict, n: int) -> dict:
    """Linear extrapolation of a measured row to ``n`` files (labelled as such)."""
    scale = n / row["n"]
    out = {"n": n, "measured": False, "extrapolated_from": row["n"]}
    for k in ("create_files_s", "fill_cache_s", "cached_run_s", "stat_key_s"):
        out[k] = row[k] * scale
    for k in ("pack_headers_s", "lookup_s", "assemble_s"):
        out[k] = row[k] * scale
    out["us_per_file"] = row["us_per_file"]
    return out


def _incremental(backbone, tf, root: Path, base: int, n_new: int, rows: list[dict]) -> dict:
    """Part (2): ``n_new`` real images next to ``base`` cached files, through the backbone."""
    folder, cache_dir = root / f"files{base}", root / f"cache{base}"
    if not any(r["n"] == base and r["measured"] for r in rows):
        paths, _ = _make_files(folder, base)
        cache = FeatureCache(cache_dir)
        _fill_cache(
            cache,
            cache.setting_key(backbone, tf, IDENTITY, 0, 0, DEFAULT_LOADER.max_pixels),
            paths,
            backbone.feature_dim,
        )
    new = root / "new"
    write_images(new, n_new, np.random.default_rng(0), size=64)
    for image in new.iterdir():  # into the cached folder: the run lists one folder
        os.replace(image, folder / f"new-{image.name}")
    paths = sorted(str(p) for p in folder.iterdir())
    counter = _Counter(refuse=False)
    hook = backbone.register_forward_pre_hook(counter)
    try:
        t0 = time.perf_counter()
        fs = cached_extract(backbone, paths, tf, [IDENTITY], FeatureCache(cache_dir), desc="incr")
        seconds = time.perf_counter() - t0
    finally:
        hook.remove()
    assert fs.features.shape[1] == len(paths) and not fs.skipped
    return {"cached": base, "new": n_new, "extracted_new": counter.images, "run_s": seconds}


def _table(rows: list[dict], incr: dict) -> str:
    head = f"{'files':>9} {'run s':>8} {'µs/file':>8} {'stat+key':>9} {'headers':>8} "
    head += f"{'lookup':>8} {'assemble':>9} {'create s':>9}"
    lines = ["feature cache, fully cached run (seconds; lookup includes reading the headers)"]
    lines.append(head)
    for r in rows:
        tag = "" if r["measured"] else f"  EXTRAPOLATED from {r['extrapolated_from']:,}"
        lines.append(
            f"{r['n']:>9,} {r['cached_run_s']:>8.2f} {r['us_per_file']:>8.1f} "
            f"{r['stat_key_s']:>9.2f} {r['pack_headers_s']:>8.2f} {r['lookup_s']:>8.2f} "
            f"{r['assemble_s']:>9.2f} {r['create_files_s']:>9.1f}{tag}"
        )
    lines.append(
        f"incremental: {incr['new']} new images added to a folder of {incr['cached']:,} cached "
        f"files -> backbone saw {incr['extracted_new']} images, run {incr['run_s']:.2f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    backbone = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    tf = build_transform(backbone)
    root = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=args.workdir))
    try:
        rows: list[dict] = []
        for n in sorted(args.sizes):
            done = [r for r in rows if r["measured"]]
            if done and done[-1]["create_files_s"] * n / done[-1]["n"] > args.max_create_s:
                rows.append(_extrapolate(done[-1], n))
                continue
            rows.append(_full_hit(backbone, tf, root, n))
        incr = _incremental(backbone, tf, root, args.incremental_size, args.new, rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(_table(rows, incr))
    if args.json:
        result = {"sizes": rows, "incremental": incr, "extracted_new": incr["extracted_new"]}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if incr["extracted_new"] == incr["new"] else 1


if __name__ == "__main__":
    sys.exit(main())
