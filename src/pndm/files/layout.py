"""The diffusers pipeline folder layout: ``model_index.json`` (written last: a folder that has it is
complete), ``unet/`` and ``scheduler/``, or the flat hub layout with every file at the root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pndm.files import PathLike

MODEL_INDEX_NAME = "model_index.json"
CONFIG_NAME = "config.json"  # a model's config (ConfigMixin's default name)
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
PIPELINE_ENTRIES = (MODEL_INDEX_NAME, UNET_DIR, SCHEDULER_DIR)


def component_dir(folder: PathLike, subfolder: str | None, filename: str) -> Path:
    """The directory holding ``filename`` for a component.

    Looks in ``folder/subfolder`` (the pipeline layout), then in ``folder`` itself (the flat hub
    layout of e.g. google/ddpm-cifar10-32), and names both places when neither has it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    candidates = [folder / subfolder, folder] if subfolder else [folder]
    for candidate in candidates:
        if os.path.lexists(candidate / filename):  # not a regular file: its reader says what
            return candidate
    looked = " or ".join(str(c / filename) for c in candidates)
    raise FileNotFoundError(f"no {filename} in {folder}: looked for {looked}")


def remove_entries(folder: PathLike, names: tuple[str, ...] = PIPELINE_ENTRIES) -> None:
    """Remove the named files or folders of ``folder`` (ours only; other files stay)."""
    for name in names:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
