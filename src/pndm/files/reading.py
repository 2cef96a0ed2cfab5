"""Opening a file pndm reads: a regular file of bounded size, checked before it is opened and
again on the opened descriptor, so a folder, FIFO, socket, device, symlink loop or oversized
file is refused in one line naming the file, and no read can block (a FIFO swapped in between
the check and the open is opened non-blocking and refused by ``fstat``)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from pndm.files import PathLike

KiB, MiB, GiB = 2**10, 2**20, 2**30
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def show_bytes(n: int) -> str:
    """``n`` bytes in the largest unit that keeps it >= 1 (B, KiB, MiB, GiB), e.g. "16 MiB"."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def quoted(err: BaseException | str) -> str:
    """A library's error as a refusal quotes it: its first line (torch's run on for paragraphs),
    or its type's name when it has no text."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _checked(st: os.stat_result, path: PathLike, what: str, limit: int) -> os.stat_result:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} must be a regular file, got {_kind(st.st_mode)}")
    if st.st_size > limit:
        raise ValueError(
            f"{what} {path} must be at most {show_bytes(limit)}, got {show_bytes(st.st_size)}"
        )
    return st


def _refusal(err: OSError, path: PathLike, what: str) -> Exception:
    """An ``OSError`` of stat or open as the one line pndm reports."""
    if err.errno == errno.ENOENT:
        return FileNotFoundError(f"{what} not found: {path}")
    if err.errno == errno.ELOOP:
        return ValueError(f"{what} {path} must be a regular file, got a symlink loop")
    return ValueError(f"cannot read {what} {path}: {err.strerror or err}")


def check_regular(path: PathLike, *, what: str, limit: int) -> os.stat_result:
    """``path``'s stat if it is a regular file of at most ``limit`` bytes (symlinks followed);
    ``what`` names the file in the refusal ("config file", "image", ...)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise _refusal(err, path, what) from None
    return _checked(st, path, what, limit)


@contextlib.contextmanager
def open_regular(path: PathLike, *, what: str, limit: int) -> Iterator[BinaryIO]:
    """``path`` opened for binary reading once `check_regular` holds, before and after the open."""
    check_regular(path, what=what, limit=limit)
    try:
        fd = os.open(path, _FLAGS)
    except OSError as err:
        raise _refusal(err, path, what) from None
    try:
        _checked(os.fstat(fd), path, what, limit)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        yield f


def read_regular(path: PathLike, *, what: str, limit: int) -> bytes:
    """The bytes of ``path`` (`open_regular`); a file that grew past ``limit`` meanwhile is
    refused too."""
    with open_regular(path, what=what, limit=limit) as f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise _refusal(err, path, what) from None
    if len(data) > limit:
        raise ValueError(f"{what} {path} must be at most {show_bytes(limit)}, got more")
    return data
