"""``.npz`` archives read without pickles and without unbounded allocation: the zip's members are
listed and each ``.npy`` header (dtype, shape) is read and checked against the member's size
before an array is read, so a 100-byte file cannot claim a terabyte; object arrays are refused
(pndm never unpickles). Anything else is one line naming the file."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from pndm.files.reading import MiB, open_regular, quoted, show_bytes

MAX_MEMBERS = 16  # pndm's archives hold 2-4 arrays
MAX_NPY_HEADER = 10_000  # numpy's own bound on a .npy header
MAX_READ = 16 * MiB  # one read of the archive's file: pndm's zip directories take < 1 KiB
PLAIN_KINDS = "biufcUS"  # booleans, numbers and strings: dtypes without Python objects
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError)


@dataclass(frozen=True)
class Member:
    """One array of an archive as its header declares it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Archive:
    """An open archive: its members' headers (`members`), and arrays read on demand (`read`)."""

    def __init__(self, path: Path, zipped: zipfile.ZipFile) -> None:
        self.path, self._zip = path, zipped
        self.members = {m.name: m for m in (self._header(i) for i in _infos(path, zipped))}

    def read(self, name: str, max_bytes: int) -> np.ndarray:
        """The array ``name`` once its declared size is at most ``max_bytes``."""
        member = self.members[name]
        if member.nbytes > max_bytes:
            got = f"{show_bytes(member.nbytes)} ({member.dtype} {member.shape})"
            raise ValueError(
                f"{self.path}: {name} must be at most {show_bytes(max_bytes)}, got {got}"
            )
        try:
            with self._zip.open(f"{name}.npy") as f:
                return np.lib.format.read_array(
                    f, allow_pickle=False, max_header_size=MAX_NPY_HEADER
                )
        except _ZIP_ERRORS as err:
            raise ValueError(f"cannot read {self.path} as .npz: {quoted(err)}") from None

    def _header(self, info: zipfile.ZipInfo) -> Member:
        name = info.filename.removesuffix(".npy")
        try:
            with self._zip.open(info) as f:
                shape, dtype, start = _npy_header(f)
        except _ZIP_ERRORS as err:
            raise ValueError(f"cannot read {self.path} as .npz: {name}: {quoted(err)}") from None
        member = Member(name, dtype, shape)
        if dtype.kind not in PLAIN_KINDS:
            raise ValueError(
                f"{self.path}: {name} must be an array of numbers, got {dtype} (Python objects "
                "are stored pickled, and pndm never unpickles); save plain arrays"
            )
        if start + member.nbytes != info.file_size:
            raise ValueError(f"{self.path}: {name} must hold the {member.nbytes} bytes its header "
                             f"declares, got {info.file_size - start}")  # fmt: skip
        return member


def _infos(path: Path, zipped: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zipped.infolist()
    names = [i.filename for i in infos]
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"{path} must hold at most {MAX_MEMBERS} arrays, got {len(infos)}")
    if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
        raise ValueError(f"{path} must hold .npy arrays, once each, got {', '.join(names)}")
    encrypted = [i.filename for i in infos if i.flag_bits & 1]
    if encrypted:
        raise ValueError(f"{path} must not be encrypted, got {', '.join(encrypted)}")
    return infos


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes before the data) of the .npy stream ``f`` (versions 1 and 2)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    if any(n < 0 for n in shape):
        raise ValueError(f"a .npy shape must not be negative, got {shape}")
    return tuple(int(n) for n in shape), dtype, f.tell()


class _ShortReads:
    """The archive's file for ``zipfile``, refusing any one read above `MAX_READ`: the zip's
    directory is read in one call of the size its last bytes claim (members are read in small
    chunks), so a sparse file cannot make ``zipfile`` allocate gigabytes."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.seek, self.tell, self.seekable = f.seek, f.tell, f.seekable

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            here = self._f.tell()
            n = self._f.seek(0, 2) - here
            self._f.seek(here)
        if n > MAX_READ:
            raise ValueError(f"the zip directory must be at most {show_bytes(MAX_READ)}")
        return self._f.read(n)


@contextmanager
def open_npz(path: Path, *, what: str, limit: int) -> Iterator[Archive]:
    """``path`` as an `Archive`, a regular file of at most ``limit`` bytes; ``what`` names it."""
    with open_regular(path, what=what, limit=limit) as f:
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ValueError(f"{path} is a single .npy array, not an .npz archive")
        f.seek(0)
        try:
            zipped = zipfile.ZipFile(_ShortReads(f))
        except _ZIP_ERRORS as err:
            raise ValueError(f"cannot read {path} as .npz: {quoted(err)}") from None
        with zipped:
            yield Archive(path, zipped)
