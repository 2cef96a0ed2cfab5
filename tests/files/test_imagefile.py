"""Image files read bounded (`pndm.files.imagefile`, `pndm.files.png`): the header's size
checked before any decoding, a PNG's chunk stream whole to IEND, one line naming the file."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from hostile_files import bomb_png, fifo, png_chunk, symlink_loop, without_iend

from pndm.files.imagefile import MAX_IMAGE_PIXELS, read_image, read_png
from pndm.images import is_complete_png


def _png(width: int = 8, height: int = 4, mode: str = "L") -> bytes:
    channels = 1 if mode == "L" else 3
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _bad_crc(png: bytes) -> bytes:
    data = bytearray(png)
    data[-20] ^= 0xFF  # a byte of the last IDAT chunk
    return bytes(data)


def _hostile(tmp_path: Path) -> dict[str, Path]:
    files = {
        "bomb": bomb_png(),
        "no IEND": without_iend(_png()),
        "bad CRC": _bad_crc(_png()),
        "after IEND": _png() + b"more",
        "cut short": _png()[:40],
        "wrong size": _png(4, 8),
        "wrong mode": _png(mode="RGB"),
        "16-bit": _sixteen_bit(),
        "not a PNG": b"GIF89a",
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(data)
    paths["fifo"] = fifo(tmp_path / "fifo.png")
    paths["loop"] = symlink_loop(tmp_path / "loop.png")
    paths["folder"] = tmp_path / "folder.png"
    paths["folder"].mkdir()
    return paths


def _sixteen_bit() -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.zeros((4, 8), np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_only_a_whole_png_of_the_size_and_mode_is_complete(tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(_png())
    assert is_complete_png(tmp_path / "good.png", 8, 4, "L")
    start = time.monotonic()
    for name, path in _hostile(tmp_path).items():
        assert not is_complete_png(path, 8, 4, "L"), name
    assert time.monotonic() - start < 5  # no FIFO blocked, no bomb decoded


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("bomb", f"must have at most {MAX_IMAGE_PIXELS} pixels, got 20000x10000"),
        ("no IEND", "must be a whole PNG, got one cut short (no IEND chunk)"),
        ("bad CRC", "must be a whole PNG, got a bad CRC in a IDAT chunk"),
        ("after IEND", "must end at its IEND chunk, got 4 more bytes"),
        ("cut short", "must be a whole PNG, got one cut short"),
        ("not a PNG", "cannot read image"),
        ("fifo", "must be a regular file, got a FIFO"),
        ("loop", "must be a regular file, got a symlink loop"),
        ("folder", "must be a regular file, got a folder"),
    ],
)
def test_read_image_refuses_in_one_line_naming_the_file(tmp_path: Path, name, words) -> None:
    path = _hostile(tmp_path)[name]
    with pytest.raises(ValueError, match=re.escape(words)) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_read_png_names_the_size_and_mode_it_wants(tmp_path: Path) -> None:
    paths = _hostile(tmp_path)
    with pytest.raises(ValueError, match=r"must be a 8x4 L PNG, got 4x8 L"):
        read_png(paths["wrong size"], 8, 4, "L")
    with pytest.raises(ValueError, match=r"must be a 8x4 L PNG, got 8x4 RGB"):
        read_png(paths["wrong mode"], 8, 4, "L")
    with pytest.raises(ValueError, match=r"must be a 8x4 L PNG, got 8x4 other pixel format"):
        read_png(paths["16-bit"], 8, 4, "L")


def test_a_bomb_in_another_format_is_refused_before_decoding(tmp_path: Path) -> None:
    """Not a PNG: the size comes from PIL's header parse, checked before ``load``."""
    header = b"P5\n9000 9000\n255\n"  # a PGM claiming 81 M pixels, 20 bytes long
    (tmp_path / "bomb.pgm").write_bytes(header)
    with pytest.raises(ValueError, match="bomb.pgm: must have at most .* pixels, got 9000x9000"):
        read_image(tmp_path / "bomb.pgm")


def test_many_tiny_chunks_are_bounded(tmp_path: Path) -> None:
    png = _png()
    junk = png_chunk(b"tEXt", b"") * 70_000
    (tmp_path / "many.png").write_bytes(png[:33] + junk + png[33:])
    with pytest.raises(ValueError, match="at most 65536 chunks"):
        read_image(tmp_path / "many.png")
