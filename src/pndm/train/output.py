"""Where `pndm train` writes: checks made before any work, and the swap of a replaced model.

A fresh run writes into OUTPUT (its periodic checkpoints there let an interrupted run resume). A
run that replaces a model (``--overwrite``) writes into a hidden sibling folder and swaps it in
only once the new model is complete: an interrupted or failed run leaves the old model as it was
and no debris.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pndm.files.atomic import check_writable
from pndm.files.layout import PIPELINE_ENTRIES

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_INDEX = PIPELINE_ENTRIES[0]  # written last, so a folder that has it is complete
# Our entries, model_index.json last: moved in in this order, it marks the swap complete.
OUR_ENTRIES = (*PIPELINE_ENTRIES[1:], CHECKPOINT_NAME, MODEL_INDEX)


def check_output(config: Any) -> None:
    """Refuse, before any work, an output that is a file, would be clobbered, or is read-only."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path exists and is not a folder: {out}")
    if config.resume and not (out / CHECKPOINT_NAME).is_file():
        missing = out / CHECKPOINT_NAME
        raise FileNotFoundError(f"no checkpoint to resume from: {missing} does not exist")
    if not config.resume and _non_empty(out) and not config.overwrite:
        raise FileExistsError(
            f"output folder {out} already exists and is not empty; pass --overwrite to "
            "replace it or --resume to continue its checkpoint"
        )
    check_writable(_existing_ancestor(out))


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def work_folder(config: Any) -> Iterator[Path]:
    """The folder a run writes into: OUTPUT, or a sibling swapped in when a model is replaced."""
    out = Path(config.output_dir)
    if config.resume:
        yield out
    elif _non_empty(out):  # check_output allowed it: --overwrite
        with _staging(out) as staging:
            yield staging
    else:
        with _fresh(out) as folder:
            yield folder


@contextmanager
def _fresh(out: Path) -> Iterator[Path]:
    """OUTPUT itself; a folder this run created and left empty is removed on failure."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A hidden sibling of ``out``; swapped in on success, deleted on any failure or interrupt."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, out)


def swap_in(staging: Path, out: Path) -> None:
    """Replace our entries of ``out`` by those of ``staging`` (other files stay), by renames.

    The old model_index.json goes first and the new one comes last, so ``out`` never looks
    complete while it holds a mix of the two models.
    """
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    for name in (MODEL_INDEX, *OUR_ENTRIES[:-1]):
        if (out / name).exists() or (out / name).is_symlink():
            os.replace(out / name, old / name)
    for name in OUR_ENTRIES:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    shutil.rmtree(old)
    shutil.rmtree(staging)
