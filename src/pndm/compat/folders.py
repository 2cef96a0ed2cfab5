"""diffusers pipeline folders: load and save the UNet and scheduler of a PNDMPipeline.

Two layouts load: the pipeline layout (``model_index.json``, ``unet/``, ``scheduler/``) and the
flat hub layout (``config.json``, weights and ``scheduler_config.json`` at the root, as
google/ddpm-cifar10-32). Any scheduler config becomes a PNDMScheduler, as diffusers'
``PNDMScheduler.from_config`` does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pndm.compat.scheduler import PNDMScheduler
from pndm.config import DIFFUSERS_VERSION
from pndm.files import PathLike
from pndm.files.jsonfile import read_json, write_json
from pndm.files.layout import (
    CONFIG_NAME,
    MODEL_INDEX_NAME,
    SCHEDULER_DIR,
    UNET_DIR,
    component_dir,
)
from pndm.files.weights import find_weights, read_weights
from pndm.guidance import CLASS_NAMES_KEY, NULL_LABEL_KEY, check_class_names, check_null_label
from pndm.models.legacy import convert_legacy_state_dict
from pndm.models.loading import read_unet_config
from pndm.models.unet_2d import UNet2DModel

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


def model_index(
    null_label: int | None = None, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """``model_index.json``'s content; a class-conditional model's "no class" label and class
    names under private keys (`pndm.guidance.NULL_LABEL_KEY`, `CLASS_NAMES_KEY`), which
    diffusers' loaders ignore."""
    extra = {} if null_label is None else {NULL_LABEL_KEY: null_label}
    extra |= {} if class_names is None else {CLASS_NAMES_KEY: list(class_names)}
    return {**MODEL_INDEX, **extra}


class ModelLabels(NamedTuple):
    """What a pipeline folder records of its model's class labels (None: nothing)."""

    null_label: int | None
    class_names: tuple[str, ...] | None


UNLABELLED = ModelLabels(None, None)  # an unconditional model's


def read_labels(folder: PathLike, unet_config: Mapping[str, Any]) -> ModelLabels:
    """The "no class" label and class names a pipeline folder's ``model_index.json`` records,
    checked against the UNet's config (`pndm.guidance`); a bad one is one line naming the file
    and its field."""
    path = Path(folder) / MODEL_INDEX_NAME
    index = read_json(path) if path.is_file() else {}
    null = check_null_label(unet_config, index.get(NULL_LABEL_KEY), f"{path}: {NULL_LABEL_KEY}")
    names, where = index.get(CLASS_NAMES_KEY), f"{path}: {CLASS_NAMES_KEY}"
    return ModelLabels(null, check_class_names(unet_config, null, names, where))


def save_components(
    folder: PathLike,
    unet: Any,
    scheduler: Any,
    safe_serialization: bool = True,
    variant: str | None = None,
    labels: ModelLabels = UNLABELLED,
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
    write_json(folder / MODEL_INDEX_NAME, model_index(*labels))


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
    """Where a pipeline folder's UNet lives: ``unet/``, else the folder itself (flat layout)."""
    return component_dir(folder, UNET_DIR, CONFIG_NAME)


class ModelFiles(NamedTuple):
    """The files that decide a pipeline folder's images."""

    unet_config: Path
    weights: Path
    scheduler_config: Path


def model_files(folder: Path, variant: str | None = None) -> ModelFiles:
    """The UNet config and weights the loader reads, and the scheduler config.

    The UNet config is checked here (`read_unet_config`): this is the first read of a folder
    that `pndm sample` makes, so a broken config fails before any file is hashed or written.
    """
    unet = unet_folder(folder)
    scheduler = component_dir(folder, SCHEDULER_DIR, PNDMScheduler.config_name)
    read_unet_config(unet / CONFIG_NAME)
    return ModelFiles(
        unet / CONFIG_NAME, find_weights(unet, variant), scheduler / PNDMScheduler.config_name
    )


def model_hash(source: PathLike | Any) -> str:
    """The one identity of a model, ``"sha256:<hex>"``, of a pipeline folder or a `PNDMPipeline`:
    its UNet weights by value (sorted names, shapes, floating weights as float32: a folder stored
    in float16 and the float32 model loaded from it hash alike, a bfloat16 cast does not), the
    UNet config and the scheduler config as the model and PNDMScheduler build them (every key,
    defaults included). Grid files and sample-folder manifests record it under "model"."""
    if isinstance(source, str | os.PathLike):
        files = model_files(Path(source))
        with torch.device("meta"):  # the config as the model registers it; no weights
            config = UNet2DModel.from_config(read_unet_config(files.unet_config)).config
        scheduler = scheduler_from_config(read_json(files.scheduler_config)).config
        levels = len(config["block_out_channels"])
        weights = convert_legacy_state_dict(read_weights(files.weights), levels)
        return _digest(weights, config, scheduler)
    return _digest(source.unet.state_dict(), source.unet.config, source.scheduler.config)


def _digest(
    weights: Mapping[str, Any], unet: Mapping[str, Any], scheduler: Mapping[str, Any]
) -> str:
    digest = hashlib.sha256()
    configs = {"unet": dict(unet), "scheduler": dict(scheduler)}
    digest.update(json.dumps(configs, sort_keys=True, default=list).encode())
    for name in sorted(weights):
        tensor = weights[name].detach().to("cpu")
        tensor = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()
