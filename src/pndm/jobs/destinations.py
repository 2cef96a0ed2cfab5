"""Where ``pndm sample`` writes: a contact sheet (.png), an .npz, or a folder of per-seed PNGs.

Everything here is checked before any sampling: the kind of output, that its folder exists and
can be written, that the images fit (in memory for a sheet or an .npz, on disk and in inodes for
a folder). Every file is written atomically, so no partial file is ever under a final name; a
folder's stale temporaries (left by a killed run) are removed when the next run starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pndm.files.destinations import check_new_file, check_new_folder
from pndm.images import contact_sheet, is_complete_png, save_npz, save_png

KINDS = ("sheet", "folder", "npz")
PNG_COMPRESSION_BOUND = 10  # a PNG is assumed at least 1/10 of its raw size (disk check)
_DEBRIS = (".seed*.png.*.tmp", ".pndm.json.*.tmp", ".pndm-probe.*")


@dataclass(frozen=True)
class Output:
    """``kind``: "sheet" (a .png contact sheet), "folder" (one PNG per seed) or "npz"."""

    path: Path
    kind: str


def seed_filename(seed: int) -> str:
    return f"seed{seed:06d}.png"


def resolve_output(path: str | os.PathLike, overwrite: bool = False) -> Output:
    """Decide the output kind from the path and refuse what cannot or must not be written (the
    shared policy, `pndm.files.destinations`): a folder is a path ending in "/", an existing
    folder or a name without a suffix; anything else is a .png sheet or an .npz."""
    text = os.fspath(path)
    if not text.strip():  # Path("") is the current folder: never a silent default
        raise ValueError(f"out must be a file or folder path, got {text!r}")
    out = Path(text)
    if out.is_dir() or text.endswith(("/", os.sep)) or (text.strip() and out.suffix == ""):
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} exists and is not a folder")
        check_new_folder(out, overwrite=True, what="--out")  # a folder resumes: never refused
        return Output(out, "folder")
    if out.suffix.lower() not in (".png", ".npz"):
        raise ValueError(
            f"unsupported output {text!r}: use a .png (contact sheet), an .npz (uint8 array) or "
            "a folder (ending in /)"
        )
    out = check_new_file(text, overwrite=overwrite, suffixes=(".png", ".npz"), what="--out")
    return Output(out, "sheet" if out.suffix.lower() == ".png" else "npz")


def check_room(output: Output, n: int, image_shape: Sequence[int], free_memory: int) -> None:
    """Refuse ``n`` images of ``image_shape`` (C, H, W) that cannot fit: all in memory for a
    sheet or an .npz; on disk (PNGs at best `PNG_COMPRESSION_BOUND` x smaller) and in free
    inodes for a folder."""
    raw = n * math.prod(image_shape)
    if output.kind != "folder":
        _need("memory", 2 * raw, free_memory)
        return
    folder = output.path if output.path.is_dir() else output.path.parent
    stats = os.statvfs(folder)
    _need("disk", raw // PNG_COMPRESSION_BOUND, stats.f_bavail * stats.f_frsize)
    if stats.f_files and n > stats.f_favail:  # f_files 0: no inode limit (e.g. some FUSE)
        raise ValueError(f"{n} PNG files need {n} free inodes; {folder} has {stats.f_favail}")


def _need(what: str, need: int, free: int) -> None:
    if need > free:
        raise ValueError(
            f"the images need about {need / 2**30:.3g} GiB of {what}; {free / 2**30:.3g} GiB "
            "are free (sample fewer images per run, or into a folder)"
        )


def remove_debris(folder: Path) -> None:
    """Remove the temporaries a killed run left in ``folder`` (never a final file)."""
    for pattern in _DEBRIS:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def missing_seeds(folder: Path, seeds: Sequence[int], width: int, height: int, mode: str) -> list:
    """The seeds without a complete PNG of this size and mode: a partial, corrupt or foreign
    file under a seed's name is redone, never trusted."""
    return [s for s in seeds if not is_complete_png(folder / seed_filename(s), width, height, mode)]


def check_replaceable(folder: Path, seeds: Sequence[int]) -> None:
    """Refuse, before sampling, seeds whose name is taken by something a PNG cannot replace: a
    folder, FIFO, socket or device, or a link to none of them (dangling, or a loop)."""
    taken = [
        path.name
        for path in (folder / seed_filename(seed) for seed in seeds)
        if os.path.lexists(path) and not path.is_file()
    ]
    if taken:
        raise ValueError(
            f"{len(taken)} seed names in {folder} are not files ({', '.join(taken[:5])}); "
            "move them away"
        )


def folder_writer(folder: Path, seeds: Sequence[int]) -> Callable[[list[int], np.ndarray], None]:
    """A writer of ``seeds``' PNGs that replaces only the files there now (checked and found
    incomplete, or to be overwritten): a file that appears while sampling is left as it is."""
    there = {seed for seed in seeds if (folder / seed_filename(seed)).exists()}

    def write(chunk: list[int], images: np.ndarray) -> None:
        for seed, image in zip(chunk, images, strict=True):
            save_png(folder / seed_filename(seed), image, replace=seed in there)

    return write


def write_all(
    output: Output, images: np.ndarray, seeds: Sequence[int], labels: Any, replace: bool
) -> None:
    """A sheet or an .npz of every image (with its class ``labels``, if any), written at once;
    ``replace`` an existing file or not."""
    if output.kind == "sheet":
        save_png(output.path, contact_sheet(images), replace=replace)
    else:
        save_npz(output.path, images, seeds, labels, replace=replace)
