"""Loading a UNet2DModel from a local diffusers folder: layout, checked config.json, dtype, weights.

`UNet2DModel.from_pretrained` is `load_pretrained`; `read_unet_config` is also the first read of a
folder that ``pndm sample`` makes, so a broken config fails before any weight is read.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pndm.files.jsonfile import read_json
from pndm.files.layout import CONFIG_NAME, UNET_DIR, component_dir
from pndm.files.weights import check_state_dict, find_weights, read_weights
from pndm.models.legacy import convert_legacy_state_dict
from pndm.models.unet_2d import UNet2DModel, config_keys
from pndm.models.unet_config import validate_config


def load_pretrained(
    cls: type[UNet2DModel],
    pretrained_model_name_or_path: str | Path,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    variant: str | None = None,
    **config_overrides: Any,
) -> UNet2DModel:
    """``cls`` from a local folder (see `UNet2DModel.from_pretrained`), in eval mode."""
    dtype = as_dtype(torch_dtype)
    folder = model_folder(Path(pretrained_model_name_or_path), subfolder)
    config = read_unet_config(folder / CONFIG_NAME)
    with torch.device("meta"):
        model = cls.from_config(config, **config_overrides)
    weights = find_weights(folder, variant)
    load_weights(model, read_weights(weights), weights, dtype)
    return model.eval()


def load_weights(
    model: UNet2DModel, state: dict[str, Any], source: Path, dtype: torch.dtype
) -> None:
    """Put ``state`` into ``model`` (built on any device, meta too) as ``dtype``, in place.

    Older key layouts are renamed first (`pndm.models.legacy`); then keys and shapes must match
    exactly, and a mismatch names ``source`` and the keys missing, extra or misshapen.
    """
    state = convert_legacy_state_dict(state, len(model.config.block_out_channels))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state, expected, source)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_buffers(device=model.device)


def model_folder(folder: Path, subfolder: str | None) -> Path:
    """``folder/subfolder`` or flat ``folder``; no subfolder: ``folder``, then ``folder/unet``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder} (pndm reads local folders only)")
    if subfolder is None and (folder / CONFIG_NAME).is_file():
        return folder
    return component_dir(folder, subfolder or UNET_DIR, CONFIG_NAME)


def read_unet_config(path: Path) -> dict[str, Any]:
    """A UNet ``config.json``, checked (class name, every field) before any model is built.

    Errors name the file; a broken config thus fails before weights are read or work starts.
    """
    config = read_json(path)
    _check_class_name(config, path)
    params = inspect.signature(UNet2DModel.__init__).parameters
    full = {k: config.get(k, params[k].default) for k in config_keys()}
    try:
        validate_config(full)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return config


def _check_class_name(config: Mapping[str, Any], path: Path) -> None:
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ValueError(f"{path} describes a {name}, not a UNet2DModel")


def as_dtype(torch_dtype: torch.dtype | str | None) -> torch.dtype:
    """float32 by default; a floating ``torch.dtype`` or its name ("float16", "bfloat16", ...)."""
    if torch_dtype is None:
        return torch.float32
    dtype = getattr(torch, torch_dtype, None) if isinstance(torch_dtype, str) else torch_dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"torch_dtype must be a floating torch.dtype, got {torch_dtype!r}")
    return dtype
