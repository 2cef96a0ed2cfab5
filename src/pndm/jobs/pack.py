"""``pndm pack FOLDER OUT.npz``: a sample folder as the uint8 NHWC ``arr_0`` that FID tools read.

Images go in the manifest's seed order, with a ``seeds`` array (uint64, exact). The archive is
streamed image by image into an uncompressed zip entry (what ``np.savez`` writes, and what
``np.load`` reads), so packing 50,000 images needs memory for one, not for all of them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pndm.files.atomic import atomic_write
from pndm.files.destinations import check_new_file
from pndm.files.imagefile import read_png
from pndm.images import png_channels
from pndm.jobs import manifest as manifests
from pndm.jobs.destinations import missing_seeds, seed_filename

_SHOW = 5  # missing seeds named in an error


def pack(folder: Path, out: Path, overwrite: bool = False) -> int:
    """Write ``out`` from ``folder``; returns the number of images. Refuses, naming them, when
    any seed of the manifest has no complete PNG."""
    recorded = manifests.read(folder) if folder.is_dir() else None
    if recorded is None:
        raise FileNotFoundError(f"{folder} is not a pndm sample folder (no {manifests.NAME})")
    check_new_file(out, overwrite=overwrite, suffixes=(".npz",), what="OUT")
    image = recorded.image
    seeds = recorded.seeds
    missing = missing_seeds(folder, seeds, image["width"], image["height"], image["mode"])
    if missing:
        shown = ", ".join(map(str, missing[:_SHOW])) + (" ..." if len(missing) > _SHOW else "")
        raise ValueError(
            f"{len(missing)} of {len(seeds)} seeds in {folder} have no complete PNG ({shown}); "
            f"sample them first (rerun the same pndm sample command)"
        )
    shape = (len(seeds), image["height"], image["width"], png_channels(image["mode"]))
    atomic_write(
        out, lambda tmp: _write_npz(tmp, folder, seeds, shape, image["mode"]), replace=overwrite
    )
    return len(seeds)


def _write_npz(
    path: Path, folder: Path, seeds: Sequence[int], shape: tuple[int, ...], mode: str
) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        with archive.open("arr_0.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array_header_2_0(entry, header)
            for seed in seeds:
                entry.write(_pixels(folder / seed_filename(seed), shape[1:], mode).tobytes())
        with archive.open("seeds.npy", "w") as entry:
            np.lib.format.write_array(entry, np.asarray(seeds, dtype=np.uint64))


def _pixels(path: Path, hwc: tuple[int, ...], mode: str) -> np.ndarray:
    """The pixels of a seed's PNG, checked again as it is read (it may have changed since)."""
    return np.asarray(read_png(path, hwc[1], hwc[0], mode), dtype=np.uint8).reshape(hwc)
