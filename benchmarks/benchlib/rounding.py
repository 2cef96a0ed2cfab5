"""How far a model's lower precision may move the images: the float32 sampler with ε given a
relative Gaussian error of one unit roundoff at every call, and pixel differences.

bfloat16 keeps 8 significant bits, so its unit roundoff is u = 2^-8 and a bfloat16 UNet's ε is off
by about u relative (the CIFAR-10 and digits UNets measure 0.3 %); a trained model's sampling
ODE carries such errors through to the images. Images of the float32 sampler whose ε carries a
random relative error of u at every call are thus what a bfloat16 run may differ by, and no more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

BF16_UNIT_ROUNDOFF = 2.0**-8


@contextlib.contextmanager
def perturbed_outputs(unet: Any, rel: float, seed: int = 0) -> Iterator[None]:
    """Within the block every forward of ``unet`` returns its output times ``1 + rel N(0, 1)``,
    per element (ε for an ε-predicting model), from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)

    def hook(module: Any, args: Any, output: Any) -> Any:
        out = output[0] if isinstance(output, tuple) else output.sample
        noisy = out * (1 + rel * torch.randn(out.shape, generator=gen).to(out))
        return (noisy, *output[1:]) if isinstance(output, tuple) else type(output)(sample=noisy)

    handle = unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def pixel_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, max) |a - b| of [0, 1] images on the 0-255 pixel scale (as speed.py's guard)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) * 255
    return float(diff.mean()), float(diff.max())
