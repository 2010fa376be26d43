"""The training-free reconstruction distance (AEROBLADE's idea, Ricker et al., CVPR 2024).

An image that a latent-diffusion autoencoder made comes back from that autoencoder's round trip
almost unchanged; a real photo loses detail. The score is the *negative* distance between an
image and its reconstruction (higher = more likely generated, like every other score here).

Distance: the root-mean-square difference of the pixels on the [0, 1] scale over the whole
image (``distance=pixel``). AEROBLADE uses LPIPS (VGG features), which is better; the ``lpips``
package downloads VGG's weights from torchvision on first use, so it is not used here (offline
runs and tests). Nothing is trained: the threshold follows the flow's rule (natural validation
images vs their band-stop proxies, each reconstructed) and the validation naturals' scores give
the conformal columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..backbones.autoencoder import load_autoencoder
from ..data.imageio import load_image
from ..errors import ClipflowError, UnreadableImageError
from ..eval.metrics import calibrate_threshold
from ..features.decode import pil_to_uint8_tensor
from ..features.loader import Loader
from ..features.recon import Reconstructions, recon_cache, reconstruct_files
from ..runs.train_data import validation_proxy
from ..settings.config import TrainSettings

log = logging.getLogger(__name__)

DISTANCES = ("pixel",)


def pixel_distance(image: torch.Tensor, recon: torch.Tensor) -> float:
    """RMS difference of two uint8 (3, H, W) images on the [0, 1] scale."""
    diff = (image.double() - recon.double()) / 255.0
    return float(diff.pow(2).mean().sqrt())


def recon_scores(
    recons: Reconstructions, paths: list[str], before=None, max_pixels: int | None = None
) -> dict[str, float]:
    """path -> −distance(image, reconstruction) for every path with a reconstruction.
    ``before``: the variant the reconstructions were made of (the image is compared after it)."""
    out = {}
    for path in paths:
        recon = recons.get(path)
        if recon is None:
            continue
        try:
            image = pil_to_uint8_tensor(load_image(path, max_pixels))  # (3, H, W)
        except UnreadableImageError:
            continue
        fn = before.fn_for(path) if before is not None else None
        image = fn(image, torch.Generator().manual_seed(0)) if fn else image
        out[path] = -pixel_distance(image, recon)
    return out


def recon_distance_scores(
    s: TrainSettings,
    options: dict,
    test_paths: list[str],
    val_paths: list[Path],
    device: str,
) -> tuple[dict[str, float], float, np.ndarray, int]:
    """(test path -> score, threshold, calibration reals' scores, 0 parameters)."""
    if options["distance"] not in DISTANCES:
        raise ClipflowError(
            f"baseline_settings.recon_distance.distance={options['distance']!r}: "
            f"choose from {', '.join(DISTANCES)}"
        )
    ae = load_autoencoder(options["autoencoder"], options["autoencoder_subfolder"], device)
    cache, max_pixels = recon_cache(s.data), Loader.from_data(s.data).max_pixels
    batch = int(options["batch_size"])
    stop = validation_proxy(s.data.val_band)
    val = [str(p) for p in val_paths]

    def run(paths: list[str], before, desc: str) -> dict[str, float]:
        recons = reconstruct_files(ae, paths, cache, device, batch, before, max_pixels, desc)
        return recon_scores(recons, paths, before, max_pixels)

    real = run(val, None, "reconstruct validation")
    fake = run(val, stop, "reconstruct validation proxies")
    cal, proxy = np.array(list(real.values())), np.array(list(fake.values()))
    if len(cal) == 0 or len(proxy) == 0:
        raise ClipflowError("reconstruction distance: none of the validation images could be read")
    labels = np.r_[np.zeros(len(cal)), np.ones(len(proxy))]
    threshold = calibrate_threshold(np.r_[cal, proxy], labels)
    return run(list(test_paths), None, "reconstruct test"), float(threshold), cal, 0
