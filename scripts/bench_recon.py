"""Benchmark: what reconstructions cost, and what the cache saves (CPU, tiny autoencoder).

    python scripts/bench_recon.py                      # 32 images of 256 px, batch 8 (< 1 min)
    python scripts/bench_recon.py --images 64 --size 256 --device cuda --autoencoder DIR

(1) Fresh: ``reconstruct_files`` on N synthetic PNGs (read, encode -> decode, PNG write into
    an empty cache); (2) cached: the same call again (only file keys and existence checks);
    (3) served: reading every cached reconstruction back (PNG decode), what a training epoch
    pays per proxy draw; (4) the autoencoder alone on one batch, for the model's own rate.
With ``--autoencoder tiny`` (the default) these are the pipeline's overheads around a
~44k-parameter random model, not what SD's VAE costs. Prints a table; --json writes it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipflow.backbones.autoencoder import load_autoencoder
from clipflow.data.synthetic import natural_image
from clipflow.features.recon import ReconCache, reconstruct_files
from clipflow.transforms.recon import reconstruct


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autoencoder", default="tiny")
    parser.add_argument("--subfolder", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    ae = load_autoencoder(args.autoencoder, args.subfolder, args.device)
    rng = np.random.default_rng(0)
    out: dict = {"images": args.images, "size": args.size, "device": args.device}
    out["autoencoder"] = args.autoencoder
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.images):
            path = Path(tmp) / "img" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(natural_image(rng, args.size)).save(path)
            paths.append(path)
        cache = ReconCache(Path(tmp) / "cache")
        t = time.perf_counter()
        fresh = reconstruct_files(ae, paths, cache, args.device, args.batch_size)
        out["fresh_s"] = time.perf_counter() - t
        t = time.perf_counter()
        again = reconstruct_files(ae, paths, cache, args.device, args.batch_size)
        out["cached_s"] = time.perf_counter() - t
        assert (fresh.computed, again.computed, again.reused) == (len(paths), 0, len(paths))
        t = time.perf_counter()
        for p in paths:
            assert again.get(str(p)) is not None
        out["served_s"] = time.perf_counter() - t
        png_bytes = sum(f.stat().st_size for f in Path(fresh.folder).glob("*.png"))
        out["cache_bytes_per_image"] = png_bytes / len(paths)
    batch = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8)
    reconstruct(ae, batch, args.device)  # warm-up
    t = time.perf_counter()
    reconstruct(ae, batch, args.device)
    out["model_img_per_s"] = args.batch_size / (time.perf_counter() - t)
    n = args.images
    print(f"{n} images of {args.size} px, autoencoder {args.autoencoder}, {args.device}:")
    print("| stage | seconds | images/s |\n|---|---:|---:|")
    for stage in ("fresh", "cached", "served"):
        s = out[f"{stage}_s"]
        print(f"| {stage} | {s:.2f} | {n / s:.1f} |")
    print(f"| autoencoder alone (batch {args.batch_size}) | | {out['model_img_per_s']:.1f} |")
    print(f"cache: {out['cache_bytes_per_image'] / 1024:.0f} KiB per image (PNG)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
