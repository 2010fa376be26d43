"""CLIP-Flow: AI-generated image detection with a normalizing flow on frozen CLIP features."""

__version__ = "0.1.0"
