"""A training run's state: the model, its EMA, the optimiser and the generator; checkpoints of it
that resume bit for bit, refused when made with other settings."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pndm.checks import one_line
from pndm.files.atomic import atomic_write
from pndm.files.tensorfile import read_torch
from pndm.runtime.devices import resolve_device
from pndm.train.config import LEGACY_NAMES, RUN_FIELDS, TrainConfig, unet_config


def _fingerprint(
    config: TrainConfig, classes: int | None, names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The config fields that decide the trajectory, as plain JSON-like values, and a
    conditional run's number of classes and their names (which its data decides: a renamed
    class folder would give a label another name)."""
    d = asdict(config)
    d = {k: v for k, v in d.items() if k not in RUN_FIELDS}
    d["block_out_channels"] = list(config.block_out_channels)
    if classes is None:
        return d
    return {**d, "classes": classes, **({} if names is None else {"class_names": list(names)})}


def _saved_fingerprint(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's fingerprint in today's names; fields added since take their defaults."""
    renamed = {LEGACY_NAMES.get(k, k): v for k, v in saved.items()}
    renamed = {k: v for k, v in renamed.items() if k not in RUN_FIELDS}
    skip = RUN_FIELDS | {"extra"}
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name not in skip}
    return {**defaults, "extra": {}, **renamed}


@dataclass
class TrainState:
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    classes: int | None = None  # a conditional run's; its "no class" label
    class_names: tuple[str, ...] | None = None  # a conditional run's, label by label


def build_unet(config: TrainConfig, classes: int | None = None) -> torch.nn.Module:
    """A freshly initialised UNet2DModel (with a label table for ``classes``); the seed decides
    it without touching global RNG state."""
    from pndm.models.unet_2d import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return UNet2DModel(**unet_config(config, classes))


def fresh_state(
    config: TrainConfig, classes: int | None = None, names: tuple[str, ...] | None = None
) -> TrainState:
    """Step 0 of a run; ``classes``, ``names``: a conditional run's number of classes and
    their names."""
    model = build_unet(config, classes).to(resolve_device(config.device)).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    return TrainState(model, ema, optimizer, generator, classes=classes, class_names=names)


def save_checkpoint(state: TrainState, config: TrainConfig, path: Path) -> None:
    """Model, EMA, optimizer, step and generator state in one file, written atomically."""
    payload = {
        "format": 1,
        "step": state.step,
        "config": _fingerprint(config, state.classes, state.class_names),
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _check_same_run(
    saved: Mapping[str, Any],
    config: TrainConfig,
    classes: int | None,
    names: tuple[str, ...] | None,
    path: Path,
) -> None:
    current = _fingerprint(config, classes, names)
    if "class_names" not in saved:  # written before names were recorded: checked by count
        current.pop("class_names", None)
    differ = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume from {path}: settings differ ({detail})")


def load_checkpoint(
    config: TrainConfig,
    path: Path,
    classes: int | None = None,
    names: tuple[str, ...] | None = None,
) -> TrainState:
    """The state saved at ``path``; refuses a checkpoint made with different settings (or, for a
    conditional run, other classes: another number, or other names)."""
    saved = _read_checkpoint(path)
    _check_same_run(_saved_fingerprint(saved["config"]), config, classes, names, path)
    state = fresh_state(config, classes, names)
    try:
        state.model.load_state_dict(saved["model"])
        state.ema.load_state_dict(saved["ema"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.generator.set_state(saved["generator"])
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"cannot resume from {path}: {one_line(err)}") from None
    state.step = int(saved["step"])
    return state


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents (`pndm.files.tensorfile.read_torch`); a truncated, foreign or
    incomplete file is one clear error."""
    saved = read_torch(path, what="checkpoint")
    keys = {"step", "config", "model", "ema", "optimizer", "generator"}
    if not isinstance(saved, dict) or not keys <= saved.keys():
        raise ValueError(f"{path} is not a pndm train checkpoint (it lacks {sorted(keys)})")
    if not isinstance(saved["config"], dict) or type(saved["step"]) is not int:
        raise ValueError(f"{path} is not a pndm train checkpoint (its config or step is not one)")
    return saved
