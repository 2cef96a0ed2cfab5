"""Sample sets for the metrics: a folder of images or an .npz ``arr_0``, as uint8 (N, H, W, C).

A folder is read as pytorch-fid reads one: the image files directly inside it, in sorted order;
each is read bounded (`pndm.files.imagefile`), and one that is not a whole image is refused by
name. Greyscale images keep one channel (the Inception network gets it repeated to three);
every image must have the same size and channel count, and there must be at least two. An
.npz's ``arr_0`` is checked from its header (uint8, at least 1x1 pixels, at most
`MAX_SAMPLE_BYTES` and the free memory) before it is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pndm.files.imagefile import MAX_IMAGE_PIXELS, read_image
from pndm.files.npz import Archive, open_npz
from pndm.files.reading import GiB, show_bytes

# pytorch-fid's IMAGE_EXTENSIONS, matched as it matches them (case-sensitive).
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
MAX_SAMPLE_BYTES = 64 * GiB  # a sample set's pixels, whatever the memory (e.g. 50k x 512² RGB)
SAMPLE_MEMBERS = ("arr_0", "seeds", "labels")  # the images; the seeds (and classes) pndm adds
_GREY_MODES = frozenset({"1", "L", "LA"})


def load_samples(path: Path) -> np.ndarray:
    """uint8 (N, H, W, C), C in {1, 3}, from a folder of images or an .npz with ``arr_0``."""
    return _load_folder(path) if path.is_dir() else _load_npz(path)


def _check_count(path: Path, n: int) -> None:
    if n < 2:
        raise ValueError(f"{path} holds {n} image(s); statistics need at least 2")


def _check_memory(path: Path, need: int) -> None:
    """The images must fit `MAX_SAMPLE_BYTES` and the memory free now."""
    import torch

    from pndm.runtime.fast import free_memory

    free = min(MAX_SAMPLE_BYTES, free_memory(torch.device("cpu")))
    if need > free:
        raise ValueError(f"the images of {path} need {show_bytes(need)} of memory; at most "
                         f"{show_bytes(free)} can be used (give fewer images)")  # fmt: skip


def _load_npz(path: Path) -> np.ndarray:
    with open_npz(path, what="samples", limit=MAX_SAMPLE_BYTES) as archive:
        _check_arr_0(path, archive)
        images = archive.read("arr_0", MAX_SAMPLE_BYTES)
    return images[..., None] if images.ndim == 3 else images


def _check_arr_0(path: Path, archive: Archive) -> None:
    """``arr_0``'s header: uint8 (N, H, W[, C]), N >= 2, 1 <= H x W <= `MAX_IMAGE_PIXELS`."""
    names = archive.members
    if "arr_0" not in names:
        raise ValueError(
            f"{path} has no arr_0 (it has {', '.join(names) or 'nothing'}); give a "
            f"sample .npz (arr_0: uint8 N, H, W, C) or a folder of images"
        )
    unknown = sorted(set(names) - set(SAMPLE_MEMBERS))
    if unknown:
        raise ValueError(f"{path} must hold only {', '.join(SAMPLE_MEMBERS)} (a sample set), "
                         f"got also {', '.join(unknown)}")  # fmt: skip
    member = names["arr_0"]
    shape = (*member.shape, 1) if len(member.shape) == 3 else member.shape
    if member.dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: arr_0 must be uint8 (N, H, W, C) with C 1 or 3; got {member.dtype} "
            f"{member.shape}"
        )
    _check_count(path, shape[0])
    if not 1 <= shape[1] * shape[2] <= MAX_IMAGE_PIXELS:
        raise ValueError(f"{path}: arr_0's images must have 1 to {MAX_IMAGE_PIXELS} pixels, got "
                         f"{shape[1]}x{shape[2]}")  # fmt: skip
    _check_memory(path, member.nbytes)


def _load_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    _check_count(folder, len(files))
    first = _read_image(files[0])
    _check_memory(folder, len(files) * first.nbytes)
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
    image = read_image(path)
    if image.mode not in _GREY_MODES and image.mode.startswith(("I", "F")):
        raise ValueError(f"{path} is a {image.mode} image; give 8-bit images")
    mode = "L" if image.mode in _GREY_MODES else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
