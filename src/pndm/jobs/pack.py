"""``pndm pack FOLDER OUT.npz``: a sample folder as the uint8 NHWC ``arr_0`` that FID tools read.

Images go in the manifest's seed order (or a chosen subset's, in its order), with a ``seeds``
array (uint64, exact). The archive is
streamed image by image into an uncompressed zip entry (what ``np.savez`` writes, and what
``np.load`` reads), so packing 50,000 images needs memory for one, not for all of them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pndm.files.atomic import atomic_write
from pndm.files.destinations import check_new_file
from pndm.files.imagefile import read_png
from pndm.images import png_channels
from pndm.jobs import manifest as manifests
from pndm.jobs.destinations import missing_seeds, seed_filename

_SHOW = 5  # missing seeds named in an error


def pack(
    folder: Path, out: Path, overwrite: bool = False, seeds: Sequence[int] | None = None
) -> int:
    """Write ``out`` from ``folder``: every recorded seed in the manifest's order, or ``seeds``
    (recorded ones, in their order); returns the number of images. Refuses, naming them, seeds
    that are not recorded or have no complete PNG."""
    recorded = manifests.read(folder) if folder.is_dir() else None
    if recorded is None:
        raise FileNotFoundError(f"{folder} is not a pndm sample folder (no {manifests.NAME})")
    check_new_file(out, overwrite=overwrite, suffixes=(".npz",), what="OUT")
    chosen = recorded.seeds if seeds is None else _recorded(folder, recorded.seeds, seeds)
    if not chosen:
        raise ValueError(
            f"{folder / manifests.NAME} records no seeds yet: the folder's first run did not "
            "finish (rerun it)"
        )
    image = recorded.image
    missing = missing_seeds(folder, chosen, image["width"], image["height"], image["mode"])
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(chosen)} seeds in {folder} have no complete PNG "
            f"({_first(missing)}); sample them first (rerun the same pndm sample command)"
        )
    shape = (len(chosen), image["height"], image["width"], png_channels(image["mode"]))
    setting = recorded.settings.get("conditioning")
    labels = None if setting is None else _labels(setting, chosen, folder)
    atomic_write(
        out,
        lambda tmp: _write_npz(tmp, folder, chosen, shape, image["mode"], labels),
        replace=overwrite,
    )
    return len(chosen)


def _recorded(folder: Path, recorded: Sequence[int], seeds: Sequence[int]) -> list[int]:
    """``seeds``, refused where any is not recorded in the folder's manifest."""
    known = set(recorded)
    absent = [seed for seed in seeds if seed not in known]
    if absent:
        raise ValueError(
            f"{len(absent)} of these seeds are not recorded in {folder / manifests.NAME} "
            f"({_first(absent)}); pack only seeds sampled into the folder"
        )
    return list(seeds)


def _labels(setting: Any, seeds: Sequence[int], folder: Path) -> np.ndarray:
    """Each seed's class under the folder's recorded conditioning."""
    from pndm.guidance import recorded_labels  # imports torch: only for conditional folders

    return recorded_labels(setting, seeds, str(folder / manifests.NAME))


def _first(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds[:_SHOW])) + (" ..." if len(seeds) > _SHOW else "")


def _write_npz(
    path: Path,
    folder: Path,
    seeds: Sequence[int],
    shape: tuple[int, ...],
    mode: str,
    labels: np.ndarray | None,
) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        with archive.open("arr_0.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array_header_2_0(entry, header)
            for seed in seeds:
                entry.write(_pixels(folder / seed_filename(seed), shape[1:], mode).tobytes())
        with archive.open("seeds.npy", "w") as entry:
            np.lib.format.write_array(entry, np.asarray(seeds, dtype=np.uint64))
        if labels is not None:  # a class-conditional model's: each image's class
            with archive.open("labels.npy", "w") as entry:
                np.lib.format.write_array(entry, labels)


def _pixels(path: Path, hwc: tuple[int, ...], mode: str) -> np.ndarray:
    """The pixels of a seed's PNG, checked again as it is read (it may have changed since)."""
    return np.asarray(read_png(path, hwc[1], hwc[0], mode), dtype=np.uint8).reshape(hwc)
