"""Versions of the packages that shape a result, recorded in checkpoints and metrics.json."""

from __future__ import annotations

from importlib import metadata

# This package's version (pyproject.toml says the same); here, at the bottom layer, so that the
# checkpoint and hub code can record it without importing the package root.
__version__ = "0.1.0"

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
