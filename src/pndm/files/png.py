"""The PNG chunk stream (ISO/IEC 15948), walked before any pixel is decoded: the signature, IHDR
first (the size and pixel format a decoder would allocate for), every chunk whole with a
matching CRC, and IEND last with nothing after it. A file that fails is not a whole PNG."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHUNKS = 2**16  # encoders write IDAT in 8-64 KiB chunks: 2**16 covers any allowed file
_MAX_LENGTH = 2**31 - 1  # the spec's bound on a chunk's length and on width and height
_MODES = {(0, 8): "L", (2, 8): "RGB"}  # (colour type, bit depth) -> PIL mode, those pndm writes


@dataclass(frozen=True)
class PngHeader:
    """The IHDR chunk: size in pixels, bit depth, colour type and interlace method."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int

    @property
    def mode(self) -> str | None:
        """The PIL mode of an 8-bit grey ("L") or RGB ("RGB") PNG, else None."""
        return _MODES.get((self.color_type, self.bit_depth))


def is_png(data: bytes) -> bool:
    return data.startswith(SIGNATURE)


def png_header(data: bytes, where: str) -> PngHeader:
    """The IHDR of ``data`` (a PNG's first chunk), checked against the spec's bounds."""
    if not is_png(data):
        raise ValueError(f"{where} must be a PNG, got no PNG signature")
    if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack_from(">I", data, 8)[0] != 13:
        raise ValueError(f"{where} must be a whole PNG, got no IHDR chunk first")
    header = PngHeader(*struct.unpack_from(">IIBBxxB", data, 16))
    if not (0 < header.width <= _MAX_LENGTH and 0 < header.height <= _MAX_LENGTH):
        raise ValueError(f"{where} must be a PNG of positive size, got {_size(header)}")
    return header


def check_png(data: bytes, where: str) -> PngHeader:
    """``data``'s header once its whole chunk stream checks out (module doc); else ValueError."""
    header = png_header(data, where)
    position, chunks = len(SIGNATURE), 0
    while chunks < MAX_CHUNKS:
        kind, end = _chunk(data, position, where)
        if kind == b"IEND":
            if end != len(data):
                raise ValueError(f"{where} must end at its IEND chunk, got {len(data) - end} "
                                 "more bytes")  # fmt: skip
            return header
        position, chunks = end, chunks + 1
    raise ValueError(f"{where} must be a PNG of at most {MAX_CHUNKS} chunks, got more")


def _chunk(data: bytes, position: int, where: str) -> tuple[bytes, int]:
    """(type, end) of the chunk at ``position``, once its length and CRC check out."""
    if position + 12 > len(data):
        raise ValueError(f"{where} must be a whole PNG, got one cut short (no IEND chunk)")
    length, kind = struct.unpack_from(">I4s", data, position)
    end = position + 12 + length
    if length > _MAX_LENGTH or end > len(data):
        raise ValueError(f"{where} must be a whole PNG, got one cut short in a {_name(kind)} chunk")
    crc = struct.unpack_from(">I", data, end - 4)[0]
    if zlib.crc32(memoryview(data)[position + 4 : end - 4]) != crc:
        raise ValueError(f"{where} must be a whole PNG, got a bad CRC in a {_name(kind)} chunk")
    return kind, end


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)


def _size(header: PngHeader) -> str:
    return f"{header.width}x{header.height}"
