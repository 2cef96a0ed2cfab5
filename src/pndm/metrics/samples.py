"""Sample sets for the metrics: a folder of images or an .npz ``arr_0``, as uint8 (N, H, W, C).

A folder is read as pytorch-fid reads one: the image files directly inside it, in sorted order.
Greyscale images keep one channel (the Inception network gets it repeated to three); every image
must have the same size and channel count, and there must be at least two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from pndm.metrics.frechet import open_npz

# pytorch-fid's IMAGE_EXTENSIONS, matched as it matches them (case-sensitive).
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
_GREY_MODES = frozenset({"1", "L", "LA"})


def load_samples(path: Path) -> np.ndarray:
    """uint8 (N, H, W, C), C in {1, 3}, from a folder of images or an .npz with ``arr_0``."""
    if path.is_dir():
        images = _load_folder(path)
    elif path.is_file():
        images = _load_npz(path)
    else:
        raise FileNotFoundError(f"samples not found: {path}")
    if images.shape[0] < 2:
        raise ValueError(f"{path} holds {images.shape[0]} image(s); statistics need at least 2")
    return images


def _load_npz(path: Path) -> np.ndarray:
    with open_npz(path) as f:
        if "arr_0" not in f.files:
            raise ValueError(
                f"{path} has no arr_0 (it has {', '.join(f.files) or 'nothing'}); give a "
                f"sample .npz (arr_0: uint8 N, H, W, C) or a folder of images"
            )
        images = f["arr_0"]
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: arr_0 must be uint8 (N, H, W, C) with C 1 or 3; got {images.dtype} "
            f"{images.shape}"
        )
    return images


def _load_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    first = _read_image(files[0])
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    out[0] = first
    for i, file in enumerate(files[1:], start=1):
        image = _read_image(file)
        if image.shape != first.shape:
            raise ValueError(
                f"mixed image sizes in {folder}: {file.name} is {_hwc(image.shape)}, "
                f"{files[0].name} is {_hwc(first.shape)}; every image must have the same size"
            )
        out[i] = image
    return out


def _read_image(path: Path) -> np.ndarray:
    try:
        with PIL.Image.open(path) as image:
            if image.mode not in _GREY_MODES and image.mode.startswith(("I", "F")):
                raise ValueError(f"{path} is a {image.mode} image; give 8-bit images")
            mode = "L" if image.mode in _GREY_MODES else "RGB"
            array = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, PIL.UnidentifiedImageError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return array[..., None] if array.ndim == 2 else array


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
