"""Extraction: image files -> backbone features, skipping (and listing) unreadable files.

One decode per image feeds every *variant* of it (e.g. the natural image and its proxy),
so N+P pairs come from the same pixels. Randomness (crops, masks) is seeded per file from
(seed, view, variant, path), so results do not depend on batch size, worker count or file order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..backbones.preprocess import ImageTransform
from ..backbones.protocol import BackboneProtocol
from ..core.fileio import path_key_bytes
from ..data.imageio import DEFAULT_MAX_PIXELS, load_image
from ..errors import UnreadableImageError
from ..transforms.variant import Variant, VariantFn, as_variant
from .batching import regrouped, worker_parts
from .decode import (
    PackedPayloads,
    PayloadGroup,
    decode_on_device,
    pil_to_uint8_tensor,
    read_payload,
)
from .loader import DEFAULT_LOADER, Loader

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Features of the readable files, aligned with ``paths``.

    Attributes:
        features: (K, N, D) float32 on CPU, one slice per variant.
        paths: the N files that were read, in input order.
        skipped: (path, reason) of every file that could not be used.
    """

    features: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def item_seed(seed: int, view: int, path: str) -> int:
    """A 63-bit seed for one file's random draws (crop position, proxy mask).

    The name is hashed as bytes (:func:`~clipflow.core.fileio.path_key_bytes`): a name that is not
    valid UTF-8 gets a seed too, and a UTF-8 name the same seed as ``str.encode`` gave it.
    """
    digest = hashlib.blake2b(path_key_bytes(f"{seed}/{view}/{path}"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ImageFileDataset(Dataset):
    """Loads one file, applies each variant then the transform; never raises on bad files.

    With ``raw=True`` it only reads the file (see decode.read_payload) and the
    variants + transform run later on the GPU via :meth:`apply_all`.
    """

    def __init__(
        self,
        paths: Sequence,
        transform,
        variants: Sequence[Variant],
        seed: int,
        view: int,
        raw: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.variants = list(variants)
        self.seed, self.view, self.raw = seed, view, raw
        self.max_pixels = max_pixels  # larger images are skipped before decoding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if self.raw:
                return read_payload(path, self.max_pixels), i, ""
            image = pil_to_uint8_tensor(load_image(path, self.max_pixels))  # (3, H, W) uint8
            return self.apply_all(image, path), i, ""
        except UnreadableImageError as err:
            return None, i, err.reason
        except Exception as err:  # a file must never take the batch down with it
            return None, i, f"{type(err).__name__}: {err}"

    def apply_all(self, image: torch.Tensor, path: str) -> torch.Tensor:
        """uint8 (3, H, W) -> (K, 3, S, S): every variant, then the backbone transform."""
        return self.apply_batch([image], [path])[0]

    def apply_batch(self, images: list[torch.Tensor], paths: list[str]) -> torch.Tensor:
        """B uint8 (3, H, W) images -> (B, K, 3, S, S), the transform batched per variant.

        Each (variant, file) pair has its own generator, used by the variant first and then by
        the crop, so a file's result does not depend on the batch it came in. A variant with a
        ``crop_key`` crops with a fresh generator of that key instead: the very draw the
        variant ``crop_key`` (e.g. the identity, whose ``fn`` draws nothing) crops with.
        """
        per_variant = []
        for variant in self.variants:
            gens = [self._generator(variant, path) for path in paths]
            fns = [variant.fn_for(path) for path in paths]
            varied = [fn(im, g) if fn else im for fn, im, g in zip(fns, images, gens)]
            if variant.crop_key is not None:
                gens = [self._generator(Variant(variant.crop_key), path) for path in paths]
            per_variant.append(self._transform_batch(varied, gens))
        return torch.stack(per_variant, dim=1)

    def _generator(self, variant: Variant, path: str) -> torch.Generator:
        return torch.Generator().manual_seed(
            item_seed(self.seed, self.view, f"{variant.key}|{path}")
        )

    def _transform_batch(
        self, images: list[torch.Tensor], gens: list[torch.Generator]
    ) -> torch.Tensor:
        # uint8 crops when the transform can normalise later on the device (less to ship).
        if hasattr(self.transform, "geometry_batch"):
            return self.transform.geometry_batch(images, gens)
        return torch.stack([self.transform(im, g) for im, g in zip(images, gens)])


def _collate(batch):
    good = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, reason) for x, i, reason in batch if x is None]
    if good and isinstance(good[0][0], tuple):  # raw payloads: decoded on the device later
        return PackedPayloads.pack([x for x, _ in good]), [i for _, i in good], bad
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def _device_stage(
    dataset: ImageFileDataset, packed: PackedPayloads | PayloadGroup, idx: list[int], device
):
    """Decode (nvJPEG) and transform a raw batch on the device; returns (images, kept, bad)."""
    paths = [dataset.paths[i] for i in idx]
    decoded = decode_on_device(packed.unpack(), paths, device)
    bad = [
        (i, getattr(img, "reason", str(img)))
        for i, img in zip(idx, decoded)
        if isinstance(img, Exception)
    ]
    good = [
        (i, path, img)
        for i, path, img in zip(idx, paths, decoded)
        if not isinstance(img, Exception)
    ]
    if not good:
        return None, [], bad
    kept, good_paths, images = (list(t) for t in zip(*good))
    return dataset.apply_batch(images, good_paths), kept, bad


def iter_feature_batches(
    backbone: BackboneProtocol,
    paths: Sequence,
    transform: ImageTransform,
    variants: Sequence[Variant | VariantFn | None] = (None,),
    device: str | torch.device = "cpu",
    loader: Loader = DEFAULT_LOADER,
    *,
    seed: int = 0,
    view: int = 0,
    desc: str = "extract",
) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, str]]]]:
    """Stream (kept indices, features (K, B, D) on CPU, [(index, reason)] of bad files) per batch.

    One loader for the whole list: callers that write results in pieces (the cache's
    shards) keep the workers busy instead of restarting them per piece.
    ``decode="pil"`` decodes and crops in the loader workers; ``"nvjpeg"`` decodes JPEGs in one
    batched call on ``device`` (nvJPEG on CUDA; torchvision's CPU decoder otherwise) and runs
    proxies and crops there, in a helper thread; ``"by_size"`` picks one of the two for these
    files (:meth:`Loader.for_files`). Workers prepare pieces of a batch (features/batching.py).
    Normalisation always runs on ``device``. Images above ``max_pixels`` (by their header) are
    skipped undecoded (see ``data.max_megapixels``).
    """
    chosen = [as_variant(v, i) for i, v in enumerate(variants)]
    loader = loader.for_files([str(p) for p in paths], device)  # data.decode=by_size: choose
    raw = loader.decode == "nvjpeg"
    dataset = ImageFileDataset(paths, transform, chosen, seed, view, raw, loader.max_pixels)
    # Worker tasks of a fraction of a batch (features/batching.py: the first batch sooner).
    parts = worker_parts(loader.batch_size, loader.num_workers)
    chunks = DataLoader(
        dataset,
        batch_size=loader.batch_size // parts,
        num_workers=loader.num_workers,
        collate_fn=_collate,
        pin_memory=torch.device(device).type == "cuda" and not raw,
        prefetch_factor=loader.prefetch_factor * parts if loader.num_workers > 0 else None,
    )
    batches = regrouped(chunks, parts, device)
    normalize = getattr(transform, "normalize", lambda x: x)
    in_flight: _InFlight | None = None
    with tqdm(total=len(dataset), desc=desc, unit="img") as bar:
        for images, idx, bad in _device_staged(batches, dataset, device, raw):
            bar.update(len(idx) + len(bad))
            for i, reason in bad:
                log.warning("skipped %s: %s", dataset.paths[i], reason)
            current = _launch(backbone, images, idx, bad, len(chosen), normalize, device)
            # One batch behind: the GPU computes this batch while the caller handles the last.
            if in_flight is not None:
                yield in_flight.result()
            in_flight = current
    if in_flight is not None:
        yield in_flight.result()


def _device_staged(batches, dataset: ImageFileDataset, device, raw: bool) -> Iterator[tuple]:
    """The loader's (images, kept, bad) batches; raw ones (nvJPEG) decoded and transformed on
    the device in a helper thread, one batch ahead.

    The device stage (decode, proxies, crops) is mostly Python launching kernels; in its own
    thread it runs while the main thread launches the backbone on the previous batch and waits
    for its features (both release the GIL). Both threads queue on the device's current
    stream, so the images are ready, in stream order, before the backbone reads them.
    """
    if not raw:
        yield from batches
        return
    with ThreadPoolExecutor(1, thread_name_prefix="clipflow-device-stage") as pool:
        pending: Future | None = None
        for packed, idx, bad in batches:
            ahead = pool.submit(_staged_batch, dataset, packed, idx, bad, device)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def _staged_batch(dataset: ImageFileDataset, packed, idx: list[int], bad: list, device):
    if packed is None:
        return None, idx, bad
    where = torch.cuda.device(device) if torch.device(device).type == "cuda" else nullcontext()
    with where:  # a new thread's current CUDA device is device 0 otherwise
        images, kept, late_bad = _device_stage(dataset, packed, idx, device)
    return images, kept, bad + late_bad


@dataclass
class _InFlight:
    """A launched batch: features (B·K, D) on the host, complete once ``done`` has fired."""

    idx: list[int]
    feats: torch.Tensor
    k: int
    bad: list[tuple[int, str]]
    done: torch.cuda.Event | None = None

    def result(self) -> tuple[list[int], torch.Tensor, list[tuple[int, str]]]:
        feats = self.feats
        if self.done is not None:
            self.done.synchronize()
            feats = feats.clone()  # out of pinned memory, which then serves the next batches
        return (
            self.idx,
            feats.view(len(self.idx), self.k, feats.shape[-1]).transpose(0, 1),
            self.bad,
        )


def _launch(
    backbone, images: torch.Tensor | None, idx: list[int], bad, k: int, normalize, device
) -> _InFlight:
    """Queue the backbone on (B, K, 3, S, S) uint8 images; on CUDA nothing waits for the result."""
    if images is None:
        return _InFlight([], torch.empty(0, backbone.feature_dim), k, bad)
    flat = normalize(images.flatten(0, 1).to(device, non_blocking=True))  # (B·K, 3, S, S)
    feats = backbone(flat).float()
    if not feats.is_cuda:
        return _InFlight(idx, feats.cpu(), k, bad)
    # Pinned host memory: the copy then runs asynchronously, behind the next batch's work.
    host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True).copy_(
        feats, non_blocking=True
    )
    done = torch.cuda.Event()
    done.record()
    return _InFlight(idx, host, k, bad, done)


def extract_features(
    backbone: BackboneProtocol,
    paths: Sequence,
    transform: ImageTransform,
    variants: Sequence[Variant | VariantFn | None] = (None,),
    device: str | torch.device = "cpu",
    loader: Loader = DEFAULT_LOADER,
    *,
    seed: int = 0,
    view: int = 0,
    desc: str = "extract",
) -> FeatureSet:
    """Run ``backbone`` over ``paths`` (see :func:`iter_feature_batches`).

    A ``None`` variant is the image itself."""
    paths = [str(p) for p in paths]
    chunks, kept, skipped = [], [], []
    batches = iter_feature_batches(
        backbone, paths, transform, variants, device, loader, seed=seed, view=view, desc=desc
    )
    for idx, feats, bad in batches:
        chunks.append(feats)
        kept += idx
        skipped += [(paths[i], reason) for i, reason in bad]
    features = (
        torch.cat(chunks, dim=1) if chunks else torch.empty(len(variants), 0, backbone.feature_dim)
    )
    return FeatureSet(features, [paths[i] for i in kept], skipped)
