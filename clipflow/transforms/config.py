"""Image transforms as settings: the proxy (:class:`ProxyConfig`), random degradation chains
(:class:`ChainConfig`) and the choices and ranges of their fields, each written once.

Kept free of torch (only the standard library): the settings layer builds and checks these
before any image code is imported; :mod:`.proxy` and :mod:`.chains` apply them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BANDS = ("low", "mid", "high", "all")
MASK_MODES = ("compat", "clean")
PROXY_NAMES = (
    "freq_mask",
    "freq_phase",
    "smoothing",
    "sharpening",
    "gaussian_noise",
    "color_jitter",
    "recon",
    "none",
)
# proxy=recon: the frequency band in which recon_mix of the original replaces the reconstruction
RECON_BANDS = ("all", "low", "high")
# proxy.ratio=null: the masked share per training mode (SPEC §4.1.8: 1.0 for P, 0.1 for N+P;
# N trains without proxies, its value only names the unused proxy in metadata).
DEFAULT_RATIO = {"N": 0.1, "P": 1.0, "N+P": 0.1}
_DEFAULT_SIGMA = {"smoothing": 1.0, "sharpening": 1.0, "gaussian_noise": 5.0}
CHAIN_OPS = ("jpeg", "webp", "resize", "blur", "noise", "crop")
# The paper's validation proxies mask "the frequency band (30, 100)" (SPEC §4.3). Readings
# (data.val_band): ``open`` (SPEC's, the default) zeroes the bins whose distance from DC in the
# centred spectrum lies strictly in (30, 100), radii given for a 256-px image and scaled with
# its size; ``closed`` the same with [30, 100] inclusive; ``pixels`` (30, 100) in bins of the
# image as it is (no scaling to 256); ``square`` the max-norm distance max(|ky|, |kx|) in
# (30, 100), the square bands the training masks use.
VAL_BANDS = ("open", "closed", "pixels", "square")


def ratio_problem(ratio: float) -> str | None:
    """Why ``ratio`` is no masked share, or None: it must be in (0, 1]. 0 would mask no bin
    (the proxy would be the natural image itself); the settings and the library share this."""
    return None if 0.0 < ratio <= 1.0 else "must be in (0, 1]"


@dataclass
class ProxyConfig:
    """Proxy choice (Hydra group ``proxy``); fields = YAML keys = function kwargs.

    ``ratio=None`` takes the training mode's default (:data:`DEFAULT_RATIO`, SPEC §4.1.8);
    ``sigma=None`` takes 1.0 for smoothing/sharpening and 5.0 for Gaussian noise.
    ``pair_crop=True`` gives each proxy the random crop of its natural image (same file, same
    view) while its mask draw stays its own; ``False`` (default) draws the two crops
    independently. It only changes training (test and validation crops are centred).
    """

    name: str = "freq_mask"
    band: str = "low"
    ratio: float | None = None
    mask_mode: str = "compat"
    sigma: float | None = None
    amount: float = 1.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    pair_crop: bool = False
    # proxy=recon (configs/proxy/recon.yaml): an autoencoder's reconstruction of each image
    autoencoder: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # tiny | Hub id | folder
    autoencoder_subfolder: str = "vae"
    recon_band: str = "high"
    recon_mix: float = 0.0  # 0 = the reconstruction itself
    recon_cutoff: float = 0.5  # radius of the low band, 1 = Nyquist
    recon_batch_size: int = 8
    freq_share: float = 0.0  # share of draws that are a freq_mask (band, ratio) instead

    def ratio_for(self, mode: str | None) -> float | None:
        """The masked share for training ``mode``: ``ratio``, or the mode's default."""
        if self.ratio is not None:
            return self.ratio
        return DEFAULT_RATIO[mode] if mode is not None else None

    def describe(self, mode: str | None = None) -> dict:
        """The parameters that actually shape the proxy for training ``mode``, defaults
        resolved (for result metadata and feature-cache keys).

        ``pair_crop`` appears only when on: the default's description (a feature-cache key)
        stays what it was before the option existed.
        """
        if self.name not in PROXY_NAMES:
            raise ValueError(f"unknown proxy {self.name!r}: use one of {PROXY_NAMES}")
        if not isinstance(self.pair_crop, bool):
            raise ValueError(f"pair_crop must be true or false, got {self.pair_crop!r}")
        paired = {"pair_crop": True} if self.pair_crop else {}
        if self.name in ("freq_mask", "freq_phase"):
            ratio = self.ratio_for(mode)
            return {
                "name": self.name,
                "band": self.band,
                "ratio": ratio,
                "mask_mode": self.mask_mode,
                **paired,
            }
        if self.name == "recon":
            return {"name": "recon", **self._recon_params(mode), **paired}
        sigma = self.sigma if self.sigma is not None else _DEFAULT_SIGMA.get(self.name)
        keys = {
            "smoothing": {"sigma": sigma},
            "sharpening": {"sigma": sigma, "amount": self.amount},
            "gaussian_noise": {"sigma": sigma},
            "color_jitter": {
                k: getattr(self, k) for k in ("brightness", "contrast", "saturation", "hue")
            },
            "none": {},
        }[self.name]
        return {"name": self.name, **keys, **paired}

    def _recon_params(self, mode: str | None) -> dict:
        """proxy=recon's parameters that shape the proxy (band and cutoff only with a mix; the
        frequency mask's only with a freq_share); the autoencoder's identity is added by
        whoever loads it (clipflow.features.recon)."""
        out: dict = {
            "autoencoder": self.autoencoder,
            "autoencoder_subfolder": self.autoencoder_subfolder,
            "recon_mix": self.recon_mix,
        }
        if self.recon_mix > 0:
            out |= {"recon_band": self.recon_band, "recon_cutoff": self.recon_cutoff}
        if self.freq_share > 0:
            mask = {"band": self.band, "ratio": self.ratio_for(mode), "mask_mode": self.mask_mode}
            out |= {"freq_share": self.freq_share, "freq_mask": mask}
        return out


@dataclass
class ChainConfig:
    """``chain.*`` of configs/eval.yaml (read only with ``perturb=chain``)."""

    max_len: int = 5
    ops: list[str] = field(default_factory=lambda: list(CHAIN_OPS))


def check_chain_config(cfg: ChainConfig) -> str | None:
    """The problem with a chain setting as one line (None: fine)."""
    if not cfg.ops:
        return "chain.ops must name at least one op"
    unknown = [op for op in cfg.ops if op not in CHAIN_OPS]
    if unknown:
        return f"chain.ops: unknown op {unknown[0]!r}; choose from {', '.join(CHAIN_OPS)}"
    if len(set(cfg.ops)) != len(cfg.ops):
        return "chain.ops lists an op twice (a chain uses each op at most once)"
    if not 1 <= cfg.max_len <= len(cfg.ops):
        return (
            f"chain.max_len={cfg.max_len}: must be in 1..{len(cfg.ops)} (a chain uses each of "
            f"the {len(cfg.ops)} chain.ops at most once)"
        )
    return None
