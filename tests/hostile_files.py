"""Hostile files for the tests of pndm's readers (import: ``from hostile_files import ...``).

Each builder makes one kind of file that once hung pndm, made it allocate without bound, or gave a
traceback: a FIFO, a symlink loop, a PNG whose header claims a huge size, a PNG cut before its
IEND chunk, JSON nested 100,000 deep, a sparse file larger than a reader's limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 20000, height: int = 10000) -> bytes:
    """A PNG of a few dozen bytes whose IHDR claims ``width`` x ``height`` grey pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def without_iend(png: bytes) -> bytes:
    """``png`` without its last 12 bytes: the IEND chunk (every row still decodes)."""
    assert png[-8:-4] == b"IEND"
    return png[:-12]


def fifo(path: Path) -> Path:
    """A named pipe at ``path``: opening it for reading blocks until a writer comes."""
    os.mkfifo(path)
    return path


def symlink_loop(path: Path) -> Path:
    """A symlink to itself at ``path`` (stat fails with ELOOP)."""
    os.symlink(path.name, path)
    return path


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space (reading it would take the time)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail the block if it runs past ``seconds`` (SIGALRM interrupts even a blocking open of a
    FIFO), so an in-process test of a reader that blocks fails instead of hanging the suite."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: something blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_pndm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m pndm.cli ARGS`` in a subprocess that is killed (and the test failed) if it
    runs past ``timeout`` seconds: a reader that blocks cannot hang the suite."""
    cmd = [sys.executable, "-m", "pndm.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2 with one ``pndm: error:`` line on stderr holding each needle; returns the line."""
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err)
    assert err.count("\n") == 1 and err.startswith("pndm: error: "), err
    for needle in needles:
        assert needle in err, err
    return err
