"""Images: solver output -> [0, 1] floats, uint8, PIL; contact sheets; PNG and .npz writers.

Every writer is atomic (`pndm.files.atomic_write`): a reader never sees a half-written file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image

from pndm.checks import check_choice
from pndm.files.atomic import atomic_write
from pndm.files.imagefile import read_png

if TYPE_CHECKING:  # torch-free at import: `pndm --help` builds the sample parser from here
    import torch

OUTPUT_TYPES = ("pil", "np", "pt")
CHANNELS = (1, 3)  # grey or RGB: the image channels pndm writes
SHEET_PADDING = 2


def image_shape(unet_config: Mapping[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of one image of a UNet config: ``in_channels``, and ``sample_size`` as an int
    (a square) or (H, W). The one reading of sample_size; a config without one is refused."""
    size = unet_config.get("sample_size")
    if size is None:
        raise ValueError("the UNet config has no sample_size, so the image size is unknown")
    height, width = (size, size) if isinstance(size, int) else size
    return int(unet_config["in_channels"]), int(height), int(width)


def check_output_type(output_type: str) -> None:
    check_choice("output_type", output_type, OUTPUT_TYPES)


def postprocess(
    x: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Samples in [-1, 1] -> images in [0, 1] of the requested ``output_type`` (float32)."""
    images = (x / 2 + 0.5).clamp(0, 1).float()
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).numpy()
    return array if output_type == "np" else numpy_to_pil(array)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 by rounding (as diffusers' ``numpy_to_pil``)."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
    """(B, H, W, C) or (H, W, C) floats in [0, 1] -> PIL images (mode "L" for one channel)."""
    if images.ndim == 3:
        images = images[None, ...]
    return [_to_pil(p) for p in to_uint8(images)]


def _to_pil(image: np.ndarray) -> PIL.Image.Image:
    """uint8 HWC with 1 or 3 channels -> PIL ("L" or "RGB")."""
    return PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def contact_sheet(images: np.ndarray, padding: int = SHEET_PADDING) -> np.ndarray:
    """uint8 NHWC -> one HWC image: near-square tiles (ceil(sqrt n) columns), black padding."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        sheet[top : top + h, left : left + w] = image
    return sheet


def save_png(path: Path, image: np.ndarray, *, replace: bool = True) -> None:
    """One uint8 HWC image (1 or 3 channels) as PNG, atomically (``replace``: see atomic_write)."""
    pil = _to_pil(image)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"), replace=replace)


def save_npz(
    path: Path,
    images: np.ndarray,
    seeds: Sequence[int],
    labels: np.ndarray | None = None,
    *,
    replace: bool = True,
) -> None:
    """``arr_0``: uint8 NHWC (what FID tools read); ``seeds``: one per image, exact (uint64);
    ``labels``: each image's class (int64), for a class-conditional model's images."""
    arrays = {"arr_0": images, "seeds": np.asarray(seeds, dtype=np.uint64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    atomic_write(path, write, replace=replace)


def is_complete_png(path: Path, width: int, height: int, mode: str) -> bool:
    """True if ``path`` is a whole PNG of this size and mode, every chunk to IEND intact and
    every row decoded (`pndm.files.imagefile.read_png`); a folder, FIFO, device, symlink loop or
    oversized header is not one, and is never opened for decoding."""
    try:
        read_png(path, width, height, mode)
    except (ValueError, FileNotFoundError):
        return False
    return True


def png_channels(mode: str) -> int:
    """The channels of a PNG of PIL mode "L" (1) or "RGB" (3): `png_mode`'s inverse."""
    return CHANNELS[("L", "RGB").index(mode)]


def png_mode(channels: int) -> str:
    """The PIL mode of a PNG with this many channels: "L" or "RGB"."""
    if channels not in CHANNELS:
        raise ValueError(f"PNG outputs need 1 or 3 channels; this model makes {channels}")
    return "L" if channels == 1 else "RGB"
