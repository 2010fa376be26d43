"""Versions of the packages that shape a result, recorded in checkpoints and metrics.json."""

from __future__ import annotations

from importlib import metadata

PACKAGES = (
    "clipflow",
    "torch",
    "torchvision",
    "open_clip_torch",
    "FrEIA",
    "numpy",
    "scikit-learn",
    "pillow",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
