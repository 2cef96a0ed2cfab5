"""Image files read bounded: a regular file of at most `MAX_IMAGE_BYTES`, its size in pixels
checked (at most `MAX_IMAGE_PIXELS`, or exactly the size expected) before any pixel is decoded,
and a PNG's chunk stream whole (`pndm.files.png`); anything else is one line naming the file.
PIL sees only bytes already read, so nothing it does can block or reach another file."""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import PIL.Image

from pndm.files.png import check_png, is_png
from pndm.files.reading import MiB, quoted, read_regular

MAX_IMAGE_BYTES = 256 * MiB
MAX_IMAGE_PIXELS = 2**26  # e.g. 8192 x 8192; below PIL's own bomb warning (89.5 M pixels)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)  # PIL's, per format


def read_image(path: Path, what: str = "image") -> PIL.Image.Image:
    """The decoded image in ``path`` (any format PIL reads; a PNG's chunks checked first)."""
    data = read_regular(path, what=what, limit=MAX_IMAGE_BYTES)
    where = f"cannot read {what} {path}:"
    if is_png(data):
        header = check_png(data, where)
        _check_pixels(header.width, header.height, where)
    return _decode(data, where, None)


def read_png(
    path: Path, width: int, height: int, mode: str, what: str = "image"
) -> PIL.Image.Image:
    """The decoded PNG in ``path`` if it is a whole PNG of exactly this size and PIL mode
    ("L" or "RGB", 8 bits); refused from its header, before any decoding, otherwise."""
    data = read_regular(path, what=what, limit=MAX_IMAGE_BYTES)
    where = f"cannot read {what} {path}:"
    header = check_png(data, where)
    got = f"{header.width}x{header.height} {header.mode or 'other pixel format'}"
    if (header.width, header.height, header.mode) != (width, height, mode):
        raise ValueError(f"{where} must be a {width}x{height} {mode} PNG, got {got}")
    return _decode(data, where, (width, height, mode))


def _check_pixels(width: int, height: int, where: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{where} must have at most {MAX_IMAGE_PIXELS} pixels, got {width}x{height}"
        )


def _decode(data: bytes, where: str, expected: tuple[int, int, str] | None) -> PIL.Image.Image:
    """PIL's decoding of ``data``, its size checked before ``load`` allocates the pixels."""
    with warnings.catch_warnings():  # PIL's bomb warning becomes the error it stands for
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            image = PIL.Image.open(io.BytesIO(data))
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
            raise ValueError(
                f"{where} must have at most {MAX_IMAGE_PIXELS} pixels, got more"
            ) from None
        except _DECODE_ERRORS as err:
            raise ValueError(f"{where} {quoted(err)}") from None
    _check_pixels(*image.size, where)
    if expected is not None and (*image.size, image.mode) != expected:
        raise ValueError(f"{where} must be a {expected[0]}x{expected[1]} {expected[2]} PNG")
    try:
        image.load()
    except _DECODE_ERRORS as err:  # a truncated or corrupt pixel stream
        raise ValueError(f"{where} {quoted(err)}") from None
    return image
