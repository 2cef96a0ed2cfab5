"""The offline digits metric: a small CNN classifier's features, shipped with the digits statistics.

The network sees what the shipped model makes: 16x16 greyscale uint8 images, mapped to [-1, 1].
Its 64-d feature layer (before the classifier's ReLU) plays the part of Inception's pool3; the
Fréchet distance between feature statistics is the metric. Numbers are comparable with each other
only, never with Inception FID. docs/digits-metric.md gives the training command and its accuracy.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pndm.files.weights import read_weights

NAME = "digits"
SIZE = 16
FEATURE_DIMS = 64
CLASSES = 10
_ASSET = "digits_metric"


def asset_path(filename: str) -> Path:
    """A file of the shipped digits metric (``features.safetensors``, ``digits_stats.npz``)."""
    return Path(str(files("pndm.assets") / _ASSET / filename))


class DigitsFeatures(nn.Module):
    """Four 3x3 convolutions (16 -> 8 -> 4 pixels), a 64-d feature layer and a 10-way classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.features = nn.Linear(64 * 4 * 4, FEATURE_DIMS)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIMS, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 16, 16) in [-1, 1] -> (N, 64) features."""
        return self.features(self.conv(x))


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 16, 16, 1) -> float32 (N, 1, 16, 16) in [-1, 1], the shipped model's range."""
    if images.shape[1:] != (SIZE, SIZE, 1):
        raise ValueError(
            f"the digits metric needs {SIZE}x{SIZE} greyscale images (the shipped model's); "
            f"got {'x'.join(map(str, images.shape[1:]))} (height x width x channels)"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().contiguous()
    return x / 127.5 - 1.0


def load_network(path: Path | None = None) -> DigitsFeatures:
    """The shipped (or given) weights in a DigitsFeatures, in eval mode."""
    net = DigitsFeatures()
    net.load_state_dict(read_weights(path or asset_path("features.safetensors")))
    return net.eval()
