"""Frozen image autoencoders for reconstructions: encode → decode, no denoising.

A reconstruction proxy (``proxy=recon``, Rajan et al., ICLR 2025) and the training-free
reconstruction distance (AEROBLADE, Ricker et al., CVPR 2024) both pass an image through a
latent-diffusion autoencoder. :func:`load_autoencoder` gives one that follows
:class:`AutoencoderProtocol`:

* ``tiny``: a random-weight ``diffusers`` ``AutoencoderKL`` built from a config, identical in
  every process (tests, the miniature; no download), as the ``tiny`` backbone;
* a Hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5`` with ``subfolder=vae``) or a local
  folder holding an ``AutoencoderKL`` (its ``config.json`` and weights);
* ``package.module:factory``: your own module, built by calling ``factory()``; it must follow
  :class:`AutoencoderProtocol` (``scale``, ``reconstruct``, ``describe``).

Offline, a Hub id that is not in the Hugging Face cache is refused at once in one line that
says what to fetch, the way a backbone's weights are.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..errors import BackboneError
from .weights import why_no_download

log = logging.getLogger(__name__)

TINY_AUTOENCODER = "tiny"
_TINY_SEED = 0
# Two down blocks (scale 2), 8 and 16 channels, 4 latent channels, no attention: ~40k
# parameters; the shape of SD's VAE, not its size.
_TINY_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 32,
    # SD's VAE attends over its 8x-downsampled latent; at this 2x one attention would cost
    # (H·W/4)² per image (minutes at 256 px on a CPU): the tiny model has none
    "mid_block_add_attention": False,
}


@runtime_checkable
class AutoencoderProtocol(Protocol):
    """What reconstructions need of an autoencoder.

    ``scale``: height and width are padded to a multiple of it (SD's VAE: 8).
    ``reconstruct``: float images (N, 3, H, W) in [-1, 1] -> their reconstructions, same shape.
    ``describe``: a JSON-able identity (name, weights): it keys the reconstruction cache.
    """

    scale: int

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict: ...


class DiffusersAutoencoder:
    """A ``diffusers`` ``AutoencoderKL``: decode(mode of encode(x)), deterministic, frozen."""

    def __init__(self, model, identity: dict):
        self.model = model.eval().requires_grad_(False)
        self.identity = identity
        self.scale = 2 ** (len(model.config.block_out_channels) - 1)

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 3, H, W): the latent's mode, decoded (no sampling)."""
        latent = self.model.encode(images).latent_dist.mode()
        return self.model.decode(latent).sample

    def describe(self) -> dict:
        return dict(self.identity)

    def to(self, device: str | torch.device) -> DiffusersAutoencoder:
        self.model.to(device)
        return self


def load_autoencoder(
    name: str, subfolder: str = "", device: str | torch.device = "cpu"
) -> AutoencoderProtocol:
    """The autoencoder ``name`` (see the module docstring) on ``device``, frozen."""
    check_autoencoder_available(name, subfolder)
    if _is_factory(name):
        return _factory(name, device)
    kl = _autoencoder_kl()
    if name == TINY_AUTOENCODER:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TINY_SEED)
            model = kl.from_config(_TINY_CONFIG)
        identity = {"name": TINY_AUTOENCODER, "config": _TINY_CONFIG, "seed": _TINY_SEED}
        return DiffusersAutoencoder(model, identity).to(device)
    folder = _local_folder(name, subfolder)
    if folder is not None:
        identity = {"name": str(folder.resolve()), "files": _file_stamps(folder)}
        return DiffusersAutoencoder(kl.from_pretrained(folder), identity).to(device)
    model = kl.from_pretrained(name, subfolder=subfolder or None)
    return DiffusersAutoencoder(model, {"name": name, "subfolder": subfolder}).to(device)


def check_autoencoder_available(name: str, subfolder: str = "") -> None:
    """The cheap checks of :func:`load_autoencoder`, run before a long scan of the training
    folders: diffusers installed, a folder with its config.json, a Hub id cached or
    downloadable. A factory is only imported when loaded."""
    if _is_factory(name):
        return
    _autoencoder_kl()
    if name != TINY_AUTOENCODER and _local_folder(name, subfolder) is None:
        _require_hub_files(name, subfolder)


def _is_factory(name: str) -> bool:
    return ":" in name and not Path(name).exists()


def _local_folder(name: str, subfolder: str) -> Path | None:
    """The folder ``name`` names (with ``subfolder``), checked; None for a Hub id."""
    local = Path(name).expanduser()
    if not (local.exists() or name.startswith((".", "/", "~"))):
        return None
    folder = local / subfolder if subfolder else local
    if not (folder / "config.json").is_file():
        raise BackboneError(
            f"autoencoder folder {folder} has no config.json — pass a folder saved by "
            "AutoencoderKL.save_pretrained (or set proxy.autoencoder_subfolder)"
        )
    return folder


def _autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise BackboneError(
            "reconstructions need the diffusers package: pip install diffusers"
        ) from None
    return AutoencoderKL


def _factory(spec: str, device: str | torch.device) -> AutoencoderProtocol:
    """``package.module:factory`` -> ``factory()``, checked against the protocol."""
    module, _, attr = spec.partition(":")
    try:
        made = getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as err:
        raise BackboneError(
            f"autoencoder {spec!r}: cannot import it ({err}); pass tiny, a Hub id, a folder or "
            "package.module:factory"
        ) from None
    if not isinstance(made, AutoencoderProtocol):
        raise BackboneError(
            f"autoencoder {spec!r} gave a {type(made).__name__}, which lacks scale, "
            "reconstruct(images) or describe() (clipflow.backbones.autoencoder."
            "AutoencoderProtocol)"
        )
    if hasattr(made, "to"):
        made.to(device)
    return made


def _file_stamps(folder: Path) -> list:
    """Name, size and mtime of each file: a changed weights file changes the cache key."""
    return [
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


def _require_hub_files(repo: str, subfolder: str) -> None:
    """One BackboneError line when the Hub autoencoder is neither cached nor downloadable."""
    from huggingface_hub import try_to_load_from_cache

    filename = f"{subfolder}/config.json" if subfolder else "config.json"
    if isinstance(try_to_load_from_cache(repo, filename), str):
        return
    why = why_no_download((repo, filename))
    if why is None:
        return
    where = f" --include '{subfolder}/*'" if subfolder else ""
    raise BackboneError(
        f"autoencoder {repo}{'/' + subfolder if subfolder else ''} is not on this machine and "
        f"cannot be downloaded ({why}): on a connected machine run "
        f"huggingface-cli download {repo}{where}, copy the folder here and pass "
        "proxy.autoencoder=/path/to/folder (or use proxy.autoencoder=tiny to try the pipeline)"
    )
