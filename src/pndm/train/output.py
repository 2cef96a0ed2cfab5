"""Where `pndm train` writes: checks made before any work (`pndm.files.destinations`), and the
folder a run writes into.

A fresh run writes into OUTPUT itself (its periodic checkpoints there let an interrupted run
resume); ``--resume`` continues there. A run that replaces a model (``--overwrite``) builds the new
one in a hidden sibling that takes OUTPUT's place as a whole once it is complete
(`pndm.files.destinations.replacing`): an interrupted or failed run leaves the old model as it was
and no debris. Files in OUTPUT that are not the trainer's stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pndm.files.destinations import check_new_folder, is_non_empty, replacing
from pndm.files.layout import PIPELINE_ENTRIES

CHECKPOINT_NAME = "checkpoint.pt"
OUR_ENTRIES = (*PIPELINE_ENTRIES, CHECKPOINT_NAME)  # what a run writes; other files stay


def check_output(config: Any) -> None:
    """Refuse, before any work, an output that is a file, would be clobbered, or is read-only;
    ``--resume`` needs OUTPUT's checkpoint."""
    if config.resume:
        checkpoint = Path(config.output_dir) / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {checkpoint} does not exist")
    check_new_folder(config.output_dir, overwrite=config.overwrite or config.resume,
                     what="--output", other=" or --resume to continue its checkpoint")  # fmt: skip


@contextmanager
def work_folder(config: Any) -> Iterator[Path]:
    """The folder a run writes into: OUTPUT, or a staging sibling that replaces it."""
    out = Path(config.output_dir)
    if config.resume:
        yield out
    elif is_non_empty(out):  # check_output allowed it: --overwrite
        with replacing(out, owned=OUR_ENTRIES) as staging:
            yield staging
    else:
        with _fresh(out) as folder:
            yield folder


@contextmanager
def _fresh(out: Path) -> Iterator[Path]:
    """OUTPUT itself; a folder this run created and left empty is removed on failure."""
    created = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        yield out
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
