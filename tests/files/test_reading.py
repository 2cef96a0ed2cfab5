"""The regular-file check every reader makes before it opens a file (`pndm.files.reading`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_files import fifo, sparse_file, symlink_loop

from pndm.files.reading import MiB, check_regular, read_regular, show_bytes


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.mkdir() or p, "must be a regular file, got a folder"),
        (fifo, "must be a regular file, got a FIFO"),
        (_socket, "must be a regular file, got a socket"),
        (symlink_loop, "must be a regular file, got a symlink loop"),
        (lambda p: sparse_file(p, MiB + 1), "must be at most 1 MiB, got 1 MiB"),
    ],
    ids=["folder", "fifo", "socket", "symlink loop", "too big"],
)
def test_what_is_not_a_bounded_regular_file_is_refused_naming_it(tmp_path, make, words) -> None:
    path = make(tmp_path / "f.json")
    with pytest.raises(ValueError, match=words) as err:
        read_regular(path, what="config file", limit=MiB)
    assert str(err.value).startswith(f"config file {path} ")


def test_a_device_is_refused() -> None:
    with pytest.raises(ValueError, match="/dev/null must be a regular file, got a character dev"):
        check_regular("/dev/null", what="image", limit=MiB)


def test_missing_files_and_dangling_links_are_not_found(tmp_path: Path) -> None:
    os.symlink("nowhere", tmp_path / "dangling")
    for path in (tmp_path / "none", tmp_path / "dangling"):
        with pytest.raises(FileNotFoundError, match=f"grid file not found: {path}"):
            read_regular(path, what="grid file", limit=MiB)


def test_an_unreadable_file_is_one_line_not_a_permission_traceback(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(ValueError, match="cannot read config file .*secret.json: Permission"):
        read_regular(path, what="config file", limit=MiB)


def test_a_link_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"ok")
    os.symlink("a", tmp_path / "b")
    assert read_regular(tmp_path / "b", what="file", limit=2) == b"ok"


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path: Path) -> None:
    """The race the first check cannot close: the open is non-blocking, fstat refuses."""
    code = (
        "import os, sys\n"
        "from pndm.files import reading\n"
        "reading.check_regular = lambda *a, **k: None  # the check passed; then the swap\n"
        "path = sys.argv[1]\n"
        "os.mkfifo(path)\n"
        "try:\n"
        "    reading.read_regular(path, what='image', limit=1024)\n"
        "except ValueError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "must be a regular file, got a FIFO" in result.stdout


def test_sizes_are_shown_in_their_unit() -> None:
    assert [show_bytes(n) for n in (5, 2048, 16 * MiB, 3 * 2**30)] == [
        "5 B", "2 KiB", "16 MiB", "3 GiB",
    ]  # fmt: skip
