"""Benchmark: JPEG files on disk -> cached features, against a UnivFD-style baseline, one run.

    python scripts/bench_extract.py                          # CPU, tiny backbone (smoke run)
    python scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 1024

(a) baseline, as UnivFD runs it: strict fp32 model, PIL decoding, batch 128, 4 workers, no cache;
(b) our fast path: bf16 tower (``--compile auto``, the default: compiled on CUDA as
    ``backbone.compile=auto`` does), larger batches, more workers with prefetch, PIL and/or
    nvJPEG decoding, written to the feature cache;
(c) the default configuration: what a plain ``clipflow-train device=...`` runs, every ``auto``
    of the shipped configs resolved for this machine (precision, compile, batch size, workers,
    decoder), written to the feature cache.
Also times N+P training on 14,400 cached features and scoring 100,000 cached features, and,
for the fast path, its two halves alone: the backbone on ready GPU tensors (``model_only``)
and files -> normalised batches on the device with no backbone (``input_only``), so a
shortfall can be pinned on one side.
Prints a table with images/s and the ratio (b)/(a); --json writes the numbers, including
whether compile and the training step's CUDA graph were in effect (``speed``). ``--targets``
ends with the PASS/FAIL table of the GPU targets (docs/benchmarks.md); ``--verdict JSON``
prints that table again from a results file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipflow.backbones.backbone import compile_status, load_backbone, resolve_backbone_auto
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.data.synthetic import natural_image
from clipflow.eval.metrics import dataset_metrics
from clipflow.features.cache import FeatureCache
from clipflow.features.cached_extract import cached_extract
from clipflow.features.extract import iter_feature_batches
from clipflow.features.loader import Loader
from clipflow.flow.config import FlowConfig, TrainConfig
from clipflow.flow.fit import fit
from clipflow.flow.model import CLIPFlow, score_features
from clipflow.settings.config import train_settings
from clipflow.transforms.variant import IDENTITY

BACKBONES = {
    "tiny": dict(name="tiny", pretrained=None),
    # speed does not depend on weight values: random ViT-L/14 needs no download
    "vit_l14_random": dict(name="ViT-L-14-quickgelu", pretrained=None),
}


def _write_jpeg(args: tuple[Path, int, int]) -> None:
    path, size, seed = args
    if not path.exists():
        rng = np.random.default_rng(seed)
        # Large images: upsample a 256-px field and add grain (an FFT at 1024² per image would
        # make generating the set slower than benchmarking it).
        img = Image.fromarray(natural_image(rng, min(size, 256)))
        if size > 256:
            grain = rng.normal(0, 6, (size, size, 3))
            img = Image.fromarray(
                np.clip(np.asarray(img.resize((size, size), Image.BICUBIC)) + grain, 0, 255).astype(
                    np.uint8
                )
            )
        img.save(path, quality=90)


def make_jpegs(root: Path, size: int, n: int, procs: int) -> list[Path]:
    folder = root / f"jpeg{size}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"{i:06d}.jpg", size, i) for i in range(n)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_write_jpeg, jobs, chunksize=64))
    return [p for p, _, _ in jobs]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_extract(backbone, paths, device, cache, loader: Loader) -> float:
    """Images per second for one extraction (after a one-batch warm-up)."""
    tf = build_transform(backbone)
    warm = paths[: loader.batch_size]
    cached_extract(backbone, warm, tf, [IDENTITY], None, device, loader, desc="warm-up")
    _sync(device)
    start = time.perf_counter()
    fs = cached_extract(backbone, paths, tf, [IDENTITY], cache, device, loader, desc="timed")
    _sync(device)
    assert len(fs.paths) == len(paths), "every benchmark image must be read"
    return len(paths) / (time.perf_counter() - start)


class NoBackbone(torch.nn.Module):
    """Stands in for the tower: the whole input pipeline runs, the model costs nothing."""

    def __init__(self, like):
        super().__init__()
        self.feature_dim, self.image_size = like.feature_dim, like.image_size
        self.cfg, self.mean, self.std = like.cfg, like.mean, like.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(len(images), self.feature_dim)


def time_first_result(backbone, paths, device, loader: Loader) -> float:
    """Seconds from the start of an extraction to its first features (two batches: the loop
    runs one batch behind): what each ``cached_extract`` call, e.g. each epoch's fresh
    proxies, pays before its workers are up to speed."""
    start = time.perf_counter()
    batches = iter_feature_batches(
        backbone, paths, build_transform(backbone), device=device, loader=loader, desc="first"
    )
    next(batches)
    elapsed = time.perf_counter() - start
    batches.close()
    return elapsed


def time_input_only(backbone, paths, device, loader: Loader) -> float:
    """Images/s from JPEG files to normalised batches on ``device`` (no model, no cache)."""
    return time_extract(NoBackbone(backbone), paths, device, None, loader)


def time_model_only(backbone, device: str, batch: int, n_batches: int = 8) -> float:
    """Images per second of the tower alone on uint8 batches already on ``device``."""
    tf = build_transform(backbone)
    size = backbone.image_size
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    backbone(tf.normalize(x))  # warm-up (and compilation, with --compile)
    _sync(device)
    start = time.perf_counter()
    for _ in range(n_batches):
        backbone(tf.normalize(x))
    _sync(device)
    return batch * n_batches / (time.perf_counter() - start)


def time_training(
    device: str, n: int = 14_400, dim: int = 768, cuda_graph: bool = True
) -> tuple[float, str]:
    """(seconds for 10 N+P epochs with the default TrainConfig, what the steps ran as)."""
    g = torch.Generator().manual_seed(0)
    natural = torch.randn(1, n, dim, generator=g)
    proxy = natural + 0.1 * torch.randn(1, n, dim, generator=g)
    model = CLIPFlow(dim, FlowConfig())
    status: dict = {}
    _sync(device)
    start = time.perf_counter()
    cfg = TrainConfig(mode="N+P", epochs=10, cuda_graph=cuda_graph)
    fit(model, natural, proxy, cfg, device, status=status)
    _sync(device)
    return time.perf_counter() - start, status.get("cuda_graph", "?")


def time_scoring(device: str, n: int = 100_000, dim: int = 768) -> float:
    feats = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
    labels = np.arange(n) % 2
    model = CLIPFlow(dim, FlowConfig()).to(device)
    start = time.perf_counter()
    scores = score_features(model, feats, batch_size=16384, device=device).numpy()
    dataset_metrics(scores, labels, threshold=0.0)
    return time.perf_counter() - start


def time_clone(batch: int, dim: int, device: str, k: int = 2, repeats: int = 50) -> float:
    """Microseconds to copy one batch's features (B·K, D) float32 out of pinned memory, as
    ``_InFlight.result`` does (the copy keeps pinned memory bounded by the batches in flight)."""
    pinned = device.startswith("cuda")
    feats = torch.empty(batch * k, dim, pin_memory=pinned)
    start = time.perf_counter()
    for _ in range(repeats):
        feats.clone()
    return 1e6 * (time.perf_counter() - start) / repeats


def default_settings(backbone: str, device: str):
    """The shipped train config with no flags but the device and the benchmark's backbone:
    every ``auto`` resolved by the settings layer, as ``clipflow-train`` resolves it."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    pick = ["backbone=tiny"] if backbone == "tiny" else ["backbone.pretrained=null"]
    with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"device={device}", *pick])
    return train_settings(OmegaConf.to_container(cfg, resolve=True))


def default_backbone(s, device, fast_bb):
    """The default configuration's backbone: the fast path's when their configs agree (one
    compilation per process instead of two), else its own."""
    if resolve_backbone_auto(s.backbone, device) == fast_bb.cfg:
        return fast_bb
    return load_backbone(s.backbone, device)


def time_default(s, backbone, paths, device) -> float:
    """Images/s of the default configuration (into a fresh feature cache, as a first run)."""
    with tempfile.TemporaryDirectory() as cache_dir:
        return time_extract(
            backbone, paths, device, FeatureCache(cache_dir), Loader.from_data(s.data)
        )


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run(args) -> dict:
    device = args.device
    root = Path(args.data or tempfile.mkdtemp(prefix="clipflow-bench-"))
    base_bb = load_backbone(BackboneConfig(precision="fp32", **BACKBONES[args.backbone]), device)
    compile_ = {"auto": "auto", "on": True, "off": False}[args.compile]
    fast_bb = load_backbone(
        BackboneConfig(precision=args.fast_precision, compile=compile_, **BACKBONES[args.backbone]),
        device,
    )
    results: dict = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "backbone": args.backbone,
        "torch": torch.__version__,
        "sizes": {},
    }
    defaults = default_settings(args.backbone, device)
    results["default_config"] = defaults.auto  # what each auto became here
    default_bb = default_backbone(defaults, device, fast_bb)
    results["model_only"] = time_model_only(fast_bb, device, args.fast_batch)
    for size in args.sizes:
        paths = make_jpegs(root, size, max(args.n_baseline, args.n_fast), args.gen_procs)
        row = {
            "baseline": time_extract(
                base_bb,
                paths[: args.n_baseline],
                device,
                None,
                Loader(batch_size=128, num_workers=4, decode="pil"),
            )
        }
        for decode in args.decoders:
            fast = Loader(args.fast_batch, args.workers, decode, prefetch_factor=4)
            with tempfile.TemporaryDirectory() as cache_dir:
                row[f"fast_{decode}"] = time_extract(
                    fast_bb, paths[: args.n_fast], device, FeatureCache(cache_dir), fast
                )
            row[f"input_only_{decode}"] = time_input_only(
                fast_bb, paths[: args.n_fast], device, fast
            )
        row["default"] = time_default(defaults, default_bb, paths[: args.n_fast], device)
        row["default_first_result_s"] = time_first_result(
            default_bb,
            paths[: 4 * defaults.data.batch_size],
            device,
            Loader.from_data(defaults.data),
        )
        best = max(v for k, v in row.items() if k.startswith("fast_"))
        row["ratio"] = best / row["baseline"]
        row["default_ratio"] = row["default"] / row["baseline"]
        results["sizes"][size] = row
    results["train_n"], results["score_n"] = args.train_n, args.score_n
    results["train_np_10ep_s"], cuda_graph = time_training(device, args.train_n)
    results["score_s"] = time_scoring(device, args.score_n)
    results["speed"] = {
        "fast_compile": compile_status(fast_bb),
        "default_compile": compile_status(default_bb),
        "train_cuda_graph": cuda_graph,
    }
    results["clone_us_per_batch"] = time_clone(args.fast_batch, fast_bb.feature_dim, device)
    results["peak_rss_mb"] = peak_rss_mb()
    if device.startswith("cuda"):
        results["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def print_table(r: dict) -> None:
    print(f"\ndevice: {r['device']}   backbone: {r['backbone']}   torch {r['torch']}")
    print(
        f"{'size':>6} | {'baseline img/s':>14} | "
        + " | ".join(f"{k:>14}" for k in next(iter(r["sizes"].values())) if k.startswith("fast_"))
        + f" | {'default img/s':>14} | ratio (best fast, default)"
    )
    for size, row in r["sizes"].items():
        fast = " | ".join(f"{v:14.1f}" for k, v in row.items() if k.startswith("fast_"))
        print(
            f"{size:>6} | {row['baseline']:14.1f} | {fast} | {row['default']:14.1f} | "
            f"{row['ratio']:.2f}x, {row['default_ratio']:.2f}x"
        )
    auto = r["default_config"]
    print(
        "default = no flags: "
        + (", ".join(f"{k}={v}" for k, v in auto.items() if k != "device") or "no auto values")
        + (f" ({auto['device']})" if "device" in auto else "")
    )
    print(
        f"fast path halves, img/s: model alone {r['model_only']:.1f}; "
        + "; ".join(
            f"{size}-px input pipeline ({k.removeprefix('input_only_')}) {v:.1f}"
            for size, row in r["sizes"].items()
            for k, v in row.items()
            if k.startswith("input_only_")
        )
    )
    print(
        "default row, seconds to the first features of an extraction: "
        + "; ".join(
            f"{size} px {row['default_first_result_s']:.2f}" for size, row in r["sizes"].items()
        )
    )
    print(f"N+P training, 10 epochs on {r['train_n']:,} features: {r['train_np_10ep_s']:.2f} s")
    print(f"scoring + metrics on {r['score_n']:,} cached features: {r['score_s']:.2f} s")
    speed = r.get("speed", {})
    print(
        "in effect: fast compile={fast_compile}, default compile={default_compile}, "
        "training CUDA graph={train_cuda_graph}".format(**speed)
    )
    print(f"copy of one batch's features out of pinned memory: {r['clone_us_per_batch']:.0f} µs")
    print(
        f"peak host RSS: {r['peak_rss_mb']:.0f} MB"
        + (f"; peak GPU memory: {r['peak_gpu_mem_gb']:.2f} GB" if "peak_gpu_mem_gb" in r else "")
    )


# The GPU targets of issue #25 (one H100/H200): (name, figure, baseline, op, target).
def _size(r: dict, size: int) -> dict | None:
    return r["sizes"].get(size) or r["sizes"].get(str(size))


def _targets(r: dict) -> list[tuple[str, float | None, float | None, str, float, str]]:
    s256, s1024 = _size(r, 256) or {}, _size(r, 1024) or {}
    return [
        (
            "256 px end to end (default), img/s",
            s256.get("default"),
            s256.get("baseline"),
            ">=",
            2400,
            "fp32 UnivFD-style loop, img/s",
        ),
        ("256 px default / fp32 loop", s256.get("default_ratio"), None, ">=", 9.0, ""),
        (
            "1024 px end to end (default), img/s",
            s1024.get("default"),
            s1024.get("baseline"),
            ">=",
            1500,
            "fp32 UnivFD-style loop, img/s",
        ),
        (
            f"N+P training, 10 epochs, {r.get('train_n', 0):,} features, s",
            r.get("train_np_10ep_s"),
            r.get("train_eager_s"),
            "<=",
            10,
            "eager loop, s",
        ),
        (
            f"scoring + metrics, {r.get('score_n', 0):,} features, s",
            r.get("score_s"),
            None,
            "<=",
            5,
            "",
        ),
    ]


def print_verdict(r: dict) -> int:
    """The PASS/FAIL table; returns 0 when every target passed, 1 otherwise."""
    print(f"\n== targets on {r['device']} (torch {r['torch']})")
    print(f"{'target':<44} | {'figure':>9} | {'baseline (same run)':>38} | {'want':>8} | verdict")
    failed = 0
    for name, fig, base, op, want, base_name in _targets(r):
        if fig is None:
            verdict, shown = "NOT RUN", "-"
        else:
            ok = fig >= want if op == ">=" else fig <= want
            verdict, shown = ("PASS" if ok else "FAIL"), f"{fig:,.2f}"
        failed += verdict != "PASS"
        based = f"{base:,.2f} ({base_name})" if base is not None and base_name else "-"
        print(f"{name:<44} | {shown:>9} | {based:>38} | {op} {want:<5} | {verdict}")
    speed = r.get("speed", {})
    print(
        "in effect: compile (default row) = {}, training CUDA graph = {}".format(
            speed.get("default_compile", "?"), speed.get("train_cuda_graph", "?")
        )
    )
    return 1 if failed else 0


def parse(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    p.add_argument("--sizes", type=int, nargs="+", default=[256])
    p.add_argument("--n-baseline", type=int, default=256)
    p.add_argument("--n-fast", type=int, default=512)
    p.add_argument("--fast-batch", type=int, default=256)
    p.add_argument("--fast-precision", default="bf16")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument(
        "--decoders", nargs="+", default=None, help="pil and/or nvjpeg (default: both on CUDA)"
    )
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the fast path's backbone.compile (auto: on for CUDA, as the default config)",
    )
    p.add_argument(
        "--targets", action="store_true", help="end with the PASS/FAIL table of the GPU targets"
    )
    p.add_argument("--verdict", type=Path, help="only print the PASS/FAIL table of this JSON")
    p.add_argument("--gen-procs", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--data", help="folder for the generated JPEGs (reused between runs)")
    p.add_argument(
        "--train-n", type=int, default=14_400, help="cached features for the training timing"
    )
    p.add_argument(
        "--score-n", type=int, default=100_000, help="cached features for the scoring timing"
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.decoders is None:
        args.decoders = ["pil", "nvjpeg"] if args.device.startswith("cuda") else ["pil"]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.verdict:
        return print_verdict(json.loads(args.verdict.read_text()))
    results = run(args)
    if args.targets and args.device.startswith("cuda"):
        # the training baseline of the same run: the eager loop (no CUDA graph)
        results["train_eager_s"] = time_training(args.device, args.train_n, cuda_graph=False)[0]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return print_verdict(results) if args.targets else 0


if __name__ == "__main__":
    sys.exit(main())
