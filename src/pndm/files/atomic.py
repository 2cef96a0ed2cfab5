"""Atomic, durable writes: a reader never sees a half-written file, an interrupted write leaves no
debris under a final name, and a written file and its folder entry are on disk (fsync)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pndm.files import PathLike

PROBE_PREFIX = ".pndm-probe."  # check_writable's probe file


def temporary_glob(name: str) -> str:
    """The glob of `atomic_write`'s temporaries for final names matching ``name`` (a glob)."""
    return f".{name}.*.tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[Path], None], *, replace: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and move it into place, durably.

    A reader never sees a half-written file, an interrupted write leaves no debris, and the file
    and its folder entry are on disk when this returns (fsync before and after the rename).
    With ``replace=False`` a file that appeared at ``path`` meanwhile is left as it is: the new
    file is kept under a visible sibling name, which the ``FileExistsError`` names.
    """
    path = Path(path)
    if not path.parent.is_dir():  # e.g. removed while a long run was working
        raise FileNotFoundError(f"folder not found for {path.name}: {path.parent}")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        _fsync(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists (link(2) never replaces; where a
    file system has no hard links, a check just before the rename)."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError:  # no hard links here (e.g. FAT, some FUSE mounts)
        if not path.exists():
            os.replace(tmp, path)
            return
    kept = path.with_name(f"{path.stem}.new-{tmp.name.rsplit('.', 2)[-2]}{path.suffix}")
    os.replace(tmp, kept)
    raise FileExistsError(
        f"{path} appeared while pndm was writing it and was left as it is; the new file is "
        f"{kept} (pass --overwrite to replace existing files)"
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root and for
    read-only file systems, where permission bits say nothing."""
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder}: {err.strerror}") from None
