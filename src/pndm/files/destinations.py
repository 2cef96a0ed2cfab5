"""What an output path may be, and how an existing folder is replaced: one policy for every command
that writes (``pndm sample``, ``pack``, ``tune --out``, ``fid --save-stats``, ``train``,
``convert``), checked before any work.

A file: the suffix the command writes, not a folder, an existing file only with ``overwrite``
(then replaced atomically, `pndm.files.atomic`), in an existing folder that can be written.

A folder: new or empty, or with ``overwrite`` one whose contents are replaced as a whole
(`replacing`): the new contents are built in a hidden sibling and exchanged with the old folder in
one system call (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader, and a run killed at any
moment, finds the old folder or the new one, never a mix and never neither. Entries of the old
folder that the writer does not own are carried into the new one (hard links). Where the kernel
or file system cannot exchange, two renames with signals held between them take its place: a
SIGKILL exactly between them leaves the old folder complete under a hidden ``.NAME.old-*`` name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pndm.files import PathLike
from pndm.files.atomic import check_writable

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def check_new_file(path: PathLike, *, overwrite: bool, suffixes: Iterable[str], what: str) -> Path:
    """``path`` as a file a command may write, or the one error that says why not.

    ``what`` names the destination in messages (e.g. "--out"); ``suffixes`` the file types the
    command writes (lower case, with the dot).
    """
    out = _named(path, what)
    suffixes = tuple(suffixes)
    if out.is_dir():
        raise FileExistsError(f"{what} {out} is a folder; give a file name ending in {suffixes[0]}")
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{what} writes {' or '.join(suffixes)} files; got {out}")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{what} {out} exists; pass --overwrite to replace it")
        if not out.is_file():
            raise FileExistsError(f"{what} {out} exists and is not a regular file; move it away")
    _check_parent(out, what)
    return out


def check_new_folder(path: PathLike, *, overwrite: bool, what: str, other: str = "") -> Path:
    """``path`` as a folder a command may fill: absent, empty, or (``overwrite``) to be replaced;
    ``other`` adds the command's other choice to the refusal (e.g. " or --resume to continue")."""
    out = _named(path, what)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{what} {out} exists and is not a folder")
    if is_non_empty(out) and not overwrite:
        raise FileExistsError(
            f"{what} {out} exists and is not empty; pass --overwrite to replace it{other}"
        )
    _check_parent(out, what)
    if out.is_dir():
        check_writable(out)
    return out


def is_non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _named(path: PathLike, what: str) -> Path:
    text = os.fspath(path)
    if not text.strip():
        raise ValueError(f"{what} is empty; give a path")
    return Path(text)


def _check_parent(out: Path, what: str) -> None:
    parent = out.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"folder not found for {what}: {parent}")
    check_writable(parent)


@contextlib.contextmanager
def replacing(out: Path, owned: Iterable[str]) -> Iterator[Path]:
    """A hidden staging sibling of ``out`` to build the new contents in; when the block ends
    without an error it takes ``out``'s place at once (entries of ``out`` not in ``owned`` are
    carried over), else it is deleted and ``out`` stays as it was."""
    out = Path(os.path.realpath(out))
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield staging
        _carry(out, staging, frozenset(owned))
        _match_mode(out, staging)
        swap(staging, out)  # from here on `staging` names the old contents
        _rescue(staging, out, frozenset(owned))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out`` in one step; the old ``out``, if any, goes to ``new``."""
    if not out.exists():
        os.rename(new, out)
        return
    try:
        _exchange(new, out)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        _two_renames(new, out)


def _exchange(a: Path, b: Path) -> None:
    """renameat2(a, b, RENAME_EXCHANGE): both names stay, their folders trade places."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    args = (_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if renameat2(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def _two_renames(new: Path, out: Path) -> None:
    """``out`` -> a hidden old name, ``new`` -> ``out``, then old -> ``new``; SIGINT and SIGTERM
    wait until the two renames that leave ``out`` briefly absent are done."""
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    with _signals_held():
        os.replace(out, old)
        os.rename(new, out)
    os.rename(old, new)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _carry(out: Path, staging: Path, owned: frozenset[str]) -> None:
    """Hard-link (or copy) the entries of ``out`` that the writer does not own into staging."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name not in owned and not (staging / entry.name).exists():
            _link_tree(entry, staging / entry.name)


def _link_tree(source: Path, target: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        target.mkdir()
        for entry in source.iterdir():
            _link_tree(entry, target / entry.name)
    else:
        try:
            os.link(source, target)
        except OSError:  # no hard links on this file system
            shutil.copy2(source, target)


def _match_mode(out: Path, staging: Path) -> None:
    """The new folder gets the old one's permissions (mkdtemp makes 0700), or the umask's."""
    if out.is_dir():
        mode = stat.S_IMODE(out.stat().st_mode)
    else:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o777 & ~mask
    os.chmod(staging, mode)


def _rescue(old: Path, out: Path, owned: frozenset[str]) -> None:
    """Entries that appeared in the old folder after they were carried move to the new one."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if entry.name not in owned and not (out / entry.name).exists():
            os.replace(entry, out / entry.name)
