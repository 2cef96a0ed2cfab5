"""``.npz`` archives read without pickles and without unbounded allocation (`pndm.files.npz`)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_files import fifo, sparse_file

from pndm.files.npz import MAX_MEMBERS, open_npz

LIMIT = 2**20


def _read_all(path: Path, limit: int = LIMIT) -> dict[str, np.ndarray]:
    with open_npz(path, what="samples", limit=limit) as archive:
        return {name: archive.read(name, limit) for name in archive.members}


def _npy(header_shape: str, descr: str = "|u1", data: bytes = b"") -> bytes:
    """A .npy version 1.0 stream with a hand-written header (any shape it claims)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {header_shape}, }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_arrays_round_trip(tmp_path: Path) -> None:
    arrays = {"arr_0": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "seeds": np.arange(2)}
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("a.npz", "c.npz"):
        read = _read_all(tmp_path / name)
        assert read.keys() == arrays.keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(read[key], value)


def test_pickled_objects_are_refused_without_suggesting_allow_pickle(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", arr_0=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError) as err:
        _read_all(tmp_path / "o.npz")
    message = str(err.value)
    assert "o.npz: arr_0 must be an array of numbers, got object" in message
    assert "pndm never unpickles" in message and "allow_pickle" not in message


def test_a_header_that_claims_more_than_the_member_holds_is_refused_unread(tmp_path) -> None:
    """A few hundred bytes claiming 10^12 pixels: refused from the header, nothing allocated."""
    path = _zip(tmp_path / "huge.npz", {"arr_0.npy": _npy("(1000000, 1000, 1000)")})
    with pytest.raises(ValueError, match=r"arr_0 must hold the 1000000000000 bytes its header"):
        _read_all(path)


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"arr_0.npy": _npy("(-1, -2)", data=b"xx")}, "shape must not be negative"),
        ({"arr_0.npy": _npy("(2,)", "<V4", b"12345678")}, "must be an array of numbers, got"),
        ({"arr_0.npy": b"\x93NUMPY\x03\x00"}, "cannot read"),
        ({"arr_0": b"raw bytes"}, "must hold .npy arrays"),
        ({f"a{i}.npy": _npy("(0,)") for i in range(MAX_MEMBERS + 1)}, "at most 16 arrays"),
    ],
    ids=["negative shape", "void dtype", "npy version 3", "not .npy", "too many"],
)
def test_odd_archives_are_one_line_naming_the_file(tmp_path: Path, members, words) -> None:
    path = _zip(tmp_path / "odd.npz", members)
    with pytest.raises(ValueError, match=words) as err:
        _read_all(path)
    assert str(path) in str(err.value)


def test_not_an_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    (tmp_path / "a.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="a.npz is a single .npy array, not an .npz archive"):
        _read_all(tmp_path / "a.npz")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="cannot read .*g.npz as .npz"):
        _read_all(tmp_path / "g.npz")
    with pytest.raises(ValueError, match="samples .*f.npz must be a regular file, got a FIFO"):
        _read_all(fifo(tmp_path / "f.npz"))


def test_an_array_above_the_callers_bound_is_refused_unread(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", arr_0=np.zeros(4096, np.uint8))
    with (
        open_npz(tmp_path / "a.npz", what="samples", limit=LIMIT) as archive,
        pytest.raises(ValueError, match=r"arr_0 must be at most 1 KiB, got 4 KiB"),
    ):
        archive.read("arr_0", 1024)


def test_a_zip_directory_claimed_huge_is_refused_unread(tmp_path: Path) -> None:
    """A sparse file whose end record claims a 64 MiB directory: zipfile would read it in one."""
    size = 64 * 2**20
    path = sparse_file(tmp_path / "s.npz", size)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, size - 22, 0, 0)
    with open(path, "r+b") as f:
        f.seek(size - 22)
        f.write(end)
    with pytest.raises(ValueError, match="zip directory must be at most 16 MiB"):
        _read_all(path, limit=size)
