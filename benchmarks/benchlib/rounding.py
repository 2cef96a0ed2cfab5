"""What one unit roundoff of ε per model call does to the images, and pixel differences.

bfloat16 keeps 8 significant bits: its unit roundoff is u = 2^-8, and a bfloat16 UNet's ε is
off by about u relative (the digits UNets: 0.8 u; the deeper random-weight CIFAR-10 network:
2.5 u). A trained model's sampling ODE carries such an error through to the images. The float32
sampler with ε times 1 + u z at every call, z ~ N(0, 1) per element drawn afresh at every call
("fresh": the errors partly cancel over the steps) or once for the run ("fixed": they add up),
shows how sensitive a model's images are to errors of that size. It is context, not a bound:
bfloat16's error depends on x and is correlated between calls in other ways (on digits-cond at
50 steps it moved the images 1.4x the larger of the two).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

BF16_UNIT_ROUNDOFF = 2.0**-8
ERROR_MODELS = ("fresh", "fixed")


@contextlib.contextmanager
def perturbed_outputs(unet: Any, rel: float, model: str, seed: int = 0) -> Iterator[None]:
    """Within the block every forward of ``unet`` returns its output times ``1 + rel z`` (ε for
    an ε-predicting model), z ~ N(0, 1) per element from one seeded generator: drawn at every
    call (``model`` "fresh") or once per output shape and kept ("fixed")."""
    if model not in ERROR_MODELS:
        raise ValueError(f"error model must be one of {', '.join(ERROR_MODELS)}, got {model!r}")
    gen = torch.Generator().manual_seed(seed)
    kept: dict[torch.Size, torch.Tensor] = {}

    def hook(module: Any, args: Any, output: Any) -> Any:
        out = output[0] if isinstance(output, tuple) else output.sample
        if model == "fresh" or out.shape not in kept:
            kept[out.shape] = torch.randn(out.shape, generator=gen)
        noisy = out * (1 + rel * kept[out.shape].to(out))
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
