"""CLIP-Flow: AI-generated image detection with a normalizing flow on frozen CLIP features."""

from .core.versions import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy: `import clipflow` stays light (no torch/open_clip) until the Detector is used.
    if name == "Detector":
        from .detect import Detector

        return Detector
    raise AttributeError(f"module 'clipflow' has no attribute {name!r}")
