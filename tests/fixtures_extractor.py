"""A user's extractor as the CLIs load it: ``backbone.factory=fixtures_extractor:make_extractor``.

The tests folder is on ``sys.path`` under pytest (as the conftest's own imports need), so this
module is importable the way a user's package on ``PYTHONPATH`` is. The factories below are the
shapes a factory may take, and the ways one can be wrong.
"""

from __future__ import annotations

import torch
from torch import nn

CALLS: list[dict] = []  # the keyword arguments each factory call received (tests read them)


class SmallConvNet:
    """A frozen, seeded, random conv net: (N, 3, 32, 32) normalised images -> (N, 16)."""

    feature_dim = 16
    image_size = 32
    resize_to = 40
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, seed: int = 0, device: str = "cpu"):
        with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 5, stride=2),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        self.net = self.net.eval().requires_grad_(False).to(device)
        self.seed = seed
        self.inputs: list[torch.Tensor] = []  # what the pipeline handed over, for the tests

    def describe(self) -> dict:
        return {
            "name": "small-convnet",
            "weights_id": f"small-convnet:seed{self.seed}",
            "random_init": True,
        }

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images[:1].detach().clone())
        return self.net(images)


def make_extractor(device: str = "cpu") -> SmallConvNet:
    """The factory the tests name: takes the run's device, as the docs show."""
    CALLS.append({"device": device})
    return SmallConvNet(seed=0, device=device)


def make_plain() -> SmallConvNet:
    """A factory without a device argument: called with none."""
    CALLS.append({})
    return SmallConvNet(seed=0)


def make_other(device: str = "cpu") -> SmallConvNet:
    """Another extractor of the same name and size: its weights_id differs."""
    return SmallConvNet(seed=1, device=device)


def make_failing(device: str = "cpu") -> SmallConvNet:
    raise RuntimeError("weights file /nowhere/net.pt not found")


def make_nothing() -> object:
    """Returns something that is no extractor."""
    return object()


NOT_CALLABLE = 3


class Holder:
    @staticmethod
    def create(device: str = "cpu") -> SmallConvNet:
        """A dotted attribute: ``fixtures_extractor:Holder.create``."""
        return SmallConvNet(seed=0, device=device)
