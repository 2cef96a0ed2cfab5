"""diffusers pipeline folders: load and save the UNet and scheduler of a PNDMPipeline.

Two layouts load: the pipeline layout (``model_index.json``, ``unet/``, ``scheduler/``) and the
flat hub layout (``config.json``, weights and ``scheduler_config.json`` at the root, as
google/ddpm-cifar10-32). Any scheduler config becomes a PNDMScheduler, as diffusers'
``PNDMScheduler.from_config`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pndm.compat.scheduler import PNDMScheduler
from pndm.config import DIFFUSERS_VERSION
from pndm.files import PathLike
from pndm.files.jsonfile import read_json, write_json
from pndm.files.layout import component_dir
from pndm.files.weights import find_weights
from pndm.models.loading import read_unet_config
from pndm.models.unet_2d import UNet2DModel

MODEL_INDEX_NAME = "model_index.json"
MODEL_INDEX = {
    "_class_name": "PNDMPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "PNDMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}


def load_components(
    folder: PathLike,
    torch_dtype: torch.dtype | str | None = None,
    variant: str | None = None,
    *,
    unet: Any = None,
    scheduler: Any = None,
) -> tuple[Any, Any]:
    """(unet, scheduler) of a local folder in either layout; a component given is not loaded.

    ``torch_dtype`` casts the loaded UNet.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pipeline folder not found: {folder} (local folders only)")
    _check_model_index(folder)
    if unet is None:
        unet = load_unet(folder, torch_dtype, variant)
    return unet, load_scheduler(folder) if scheduler is None else scheduler


def load_unet(
    folder: Path, torch_dtype: torch.dtype | str | None = None, variant: str | None = None
) -> UNet2DModel:
    return UNet2DModel.from_pretrained(
        unet_folder(folder), torch_dtype=torch_dtype, variant=variant
    )


def load_scheduler(folder: Path) -> PNDMScheduler:
    name = PNDMScheduler.config_name
    return scheduler_from_config(read_json(component_dir(folder, "scheduler", name) / name))


def save_components(
    folder: PathLike, unet: Any, scheduler: Any, safe_serialization: bool = True, variant=None
) -> None:
    """Write diffusers' layout: ``unet/``, ``scheduler/``, then ``model_index.json``.

    Every file is written atomically; ``model_index.json`` is removed first and written last,
    so a folder that has one is complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_INDEX_NAME).unlink(missing_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=safe_serialization, variant=variant)
    scheduler.save_pretrained(folder / "scheduler")
    write_json(folder / MODEL_INDEX_NAME, dict(MODEL_INDEX))


def _scheduler_keys() -> frozenset[str]:
    params = inspect.signature(PNDMScheduler.__init__).parameters
    return frozenset(name for name in params if name != "self")


def scheduler_from_config(config: Mapping[str, Any], source: str | None = None) -> PNDMScheduler:
    """``PNDMScheduler.from_config`` of any scheduler's config; ``source`` is its class name.

    The keys of another scheduler class (a DDPMScheduler's ``variance_type``, ``clip_sample``,
    ...) are dropped silently, as diffusers does; a PNDMScheduler config keeps its unknown keys,
    so that ``from_config`` warns about them.
    """
    source = config.get("_class_name", source)
    if source != "PNDMScheduler":
        keys = _scheduler_keys()
        config = {k: v for k, v in config.items() if k in keys or k.startswith("_")}
    return PNDMScheduler.from_config(dict(config))


def as_pndm_scheduler(scheduler: Any) -> PNDMScheduler:
    """diffusers' ``PNDMScheduler.from_config(scheduler.config)`` for any scheduler object."""
    config = getattr(scheduler, "config", None)
    if not isinstance(config, Mapping):
        raise ValueError(
            f"scheduler must be a scheduler with a .config mapping (e.g. a PNDMScheduler or a "
            f"diffusers DDPMScheduler), got {type(scheduler).__name__}"
        )
    return scheduler_from_config(config, source=type(scheduler).__name__)


def check_unet(unet: Any) -> None:
    """A pipeline's unet: a callable module with ``config.in_channels`` and ``sample_size``."""
    config = getattr(unet, "config", None)
    ok = callable(unet) and isinstance(config, Mapping) and hasattr(unet, "parameters")
    if not ok or "in_channels" not in config or "sample_size" not in config:
        raise ValueError(
            f"unet must be a UNet2DModel (a module with config.in_channels and "
            f"config.sample_size), got {type(unet).__name__}"
        )


def _check_model_index(folder: Path) -> None:
    """A model_index.json, where there is one, must name a UNet2DModel as its unet."""
    path = folder / MODEL_INDEX_NAME
    if not path.is_file():
        return
    entry = read_json(path).get("unet")
    if entry is not None and (not isinstance(entry, list) or entry[-1] != "UNet2DModel"):
        raise ValueError(f"{path} names unet {entry!r}; PNDMPipeline needs a UNet2DModel")


def unet_folder(folder: Path) -> Path:
    return folder / "unet" if (folder / "unet" / "config.json").is_file() else folder


def model_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The files that decide a pipeline folder's images: the UNet config and weights the loader
    reads, and the scheduler config (the identity `pndm.json` records as their hash).

    The UNet config is checked here (`read_unet_config`): this is the first read of a folder
    that `pndm sample` makes, so a broken config fails before any file is hashed or written.
    """
    unet = unet_folder(folder)
    scheduler = component_dir(folder, "scheduler", PNDMScheduler.config_name)
    unet_config = component_dir(unet, None, "config.json") / "config.json"
    read_unet_config(unet_config)
    return [
        unet_config,
        find_weights(unet, variant),
        scheduler / PNDMScheduler.config_name,
    ]
