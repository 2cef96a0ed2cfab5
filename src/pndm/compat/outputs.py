"""What the pipeline and the scheduler return, shaped like diffusers' (`pndm.config.BaseOutput`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pndm.config import BaseOutput

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image
    import torch


@dataclass
class ImagePipelineOutput(BaseOutput):
    """``images``: PIL images, a (B, H, W, C) numpy array or a (B, C, H, W) tensor, in [0, 1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class SchedulerOutput(BaseOutput):
    """``prev_sample``: the sample after this call, the next call's model input."""

    prev_sample: torch.Tensor
