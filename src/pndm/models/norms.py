"""GroupNorm and the activation after it, in the kernel that is fast for the input.

PyTorch's channels-last GroupNorm for bfloat16, below 1024 pixels per image, parallelises over
(image, group) and reads each group's C/G channels with a stride of C per pixel; with fewer than
16 channels per group (half an AVX-512 register of bfloat16) it measured 2.5-4x slower than
normalising a float32 copy and rounding the result back (2-core Xeon with AMX, torch 2.14,
batch 8, norm + SiLU: 256 channels at 16x16 1.9 ms against 0.78 ms, at 8x8 0.49 against 0.15).
There the norm and its activation run in float32 and the result is rounded to bfloat16 once,
which is also closer to the float32 model (one rounding instead of two). Everywhere else, and
whenever autograd records, the module runs as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pndm.models.activations import activate
from pndm.models.inference import is_channels_last

FLOAT32_BELOW_PIXELS = 1024  # PyTorch's switch between its two channels-last kernels
FLOAT32_BELOW_GROUP_CHANNELS = 16


def float32_norm_pays(norm: nn.GroupNorm, x: torch.Tensor) -> bool:
    """Whether `group_norm_act` normalises x in float32 (see the module docstring)."""
    _, channels, height, width = x.shape
    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and height * width < FLOAT32_BELOW_PIXELS
        and channels // norm.num_groups < FLOAT32_BELOW_GROUP_CHANNELS
        and is_channels_last(x)
    )


def group_norm_act(
    norm: nn.GroupNorm, x: torch.Tensor, act: nn.Module | None = None
) -> torch.Tensor:
    """``act(norm(x))`` (``norm(x)`` without ``act``), in x's dtype and layout."""
    if not float32_norm_pays(norm, x):
        y = norm(x)
        return y if act is None else activate(act, y)
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    y = F.group_norm(x.float(), norm.num_groups, weight, bias, norm.eps)
    return (y if act is None else activate(act, y)).to(x.dtype)
