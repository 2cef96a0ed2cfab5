"""Training data: scikit-learn's digits or a folder of PNG/JPEG images, as (N, C, res, res) in
[-1, 1]; 8- and 16-bit images are scaled by their own range, others refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pndm.train.config import TrainConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS_COUNT = 1797  # images in scikit-learn's digits
# PIL modes of 8 bits per sample, which PIL's convert() scales correctly to "L" / "RGB".
EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def sklearn_digits() -> Any:
    """scikit-learn's digits dataset (``.images``, ``.target``), or a clear error without it."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ModuleNotFoundError(
            "the digits dataset needs scikit-learn; install it with: pip install 'pndm[train]'"
        ) from None
    return sk_load_digits()


def load_digits(resolution: int, upscale: str = "bicubic") -> torch.Tensor:
    """scikit-learn's 1797 digits (8x8, 17 grey levels) upscaled to (N, 1, res, res) in [-1, 1]."""
    images = torch.from_numpy(sklearn_digits().images).float().unsqueeze(1) / 16.0
    if resolution != 8:
        images = F.interpolate(images, size=resolution, mode=upscale, align_corners=False)
    return images.clamp(0, 1) * 2 - 1


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under ``folder``, recursively, sorted: the training images' order."""
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"--data {folder} is a file; give 'digits' or a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG or JPEG images in {folder}")
    return files


def _open_image(path: Path, channels: int) -> Any:
    """The image as PIL "L"/"RGB" (8-bit) or "F" in [0, 1] (16-bit grey), read bounded
    (`pndm.files.imagefile.read_image`); refuses other depths."""
    from pndm.files.imagefile import read_image

    return _to_unit_range(read_image(path), path, channels)


def _to_unit_range(img: Any, path: Path, channels: int) -> Any:
    """8-bit modes convert as PIL does; 16-bit grey (PNG "I;16", or "I" read from a PNG, whose
    samples are at most 16 bits) becomes float "F" / 65535; float and 32-bit images are refused."""
    from PIL import Image

    if img.mode in EIGHT_BIT_MODES:
        return img.convert("L" if channels == 1 else "RGB")
    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
        pixels = np.asarray(img).astype(np.float32) / 65535
        return Image.fromarray(pixels.clip(0, 1))  # mode "F"
    raise ValueError(
        f"cannot use image {path}: PIL mode {img.mode!r} ({img.format}) has no known range; "
        "save it as an 8- or 16-bit PNG"
    )


def load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """One image, centre-cropped to a square, resized, as (C, res, res) in [-1, 1]."""
    from PIL import Image

    img = _open_image(path, channels)
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
    if img.mode == "F":  # 16-bit grey, already in [0, 1]; bicubic may overshoot
        unit = torch.from_numpy(np.asarray(img).copy()).clamp(0, 1)
        return unit.expand(channels, -1, -1) * 2 - 1
    array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    array = array.view(resolution, resolution, channels).permute(2, 0, 1)
    return array.float() / 127.5 - 1


def load_image_folder(folder: Path, resolution: int, channels: int) -> torch.Tensor:
    """All PNG/JPEG images under ``folder`` (recursively, sorted) as (N, C, res, res) in [-1, 1]."""
    files = image_files(Path(folder))
    return torch.stack([load_image(p, resolution, channels) for p in files])


def dataset_size(config: TrainConfig) -> int:
    """How many training images ``config`` names, without reading them."""
    return DIGITS_COUNT if config.data == "digits" else len(image_files(Path(config.data)))


def load_dataset(config: TrainConfig) -> torch.Tensor:
    """The training images of ``config`` as one in-memory tensor."""
    if config.data == "digits":
        if config.channels != 1:
            raise ValueError("the digits dataset is greyscale; use channels=1")
        return load_digits(config.resolution, config.upscale)
    return load_image_folder(Path(config.data), config.resolution, config.channels)
