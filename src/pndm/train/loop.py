"""A small DDPM trainer (Ho et al. 2020, eq. 14): ε-prediction MSE, EMA weights, diffusers output.

``train(TrainConfig(...))`` fits a `UNet2DModel` to an image folder or to scikit-learn's digits and
writes a diffusers pipeline folder (``model_index.json``, ``unet/`` holding the EMA weights,
``scheduler/``). All randomness after the model's initialisation comes from one CPU generator
whose state goes into each checkpoint, so ``resume=True`` continues bit for bit.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pndm.files import atomic_write
from pndm.runtime.devices import resolve_device, resolve_dtype
from pndm.schedule import NoiseSchedule
from pndm.train.config import (
    LEGACY_NAMES,
    RUN_FIELDS,
    TrainConfig,
    scheduler_config,
    unet_config,
)
from pndm.train.output import CHECKPOINT_NAME, check_output, work_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS_COUNT = 1797  # images in scikit-learn's digits
# PIL modes of 8 bits per sample, which PIL's convert() scales correctly to "L" / "RGB".
EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


class NonFiniteLossError(ValueError):
    """The loss or the weights became NaN or inf: training stops and nothing is saved."""


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The config fields that decide the trajectory, as plain JSON-like values."""
    d = asdict(config)
    d = {k: v for k, v in d.items() if k not in RUN_FIELDS}
    d["block_out_channels"] = list(config.block_out_channels)
    return d


def _saved_fingerprint(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's fingerprint in today's names; fields added since take their defaults."""
    renamed = {LEGACY_NAMES.get(k, k): v for k, v in saved.items()}
    renamed = {k: v for k, v in renamed.items() if k not in RUN_FIELDS}
    skip = RUN_FIELDS | {"extra"}
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name not in skip}
    return {**defaults, "extra": {}, **renamed}


# ----------------------------------------------------------------------------- data


def load_digits(resolution: int, upscale: str = "bicubic") -> torch.Tensor:
    """scikit-learn's 1797 digits (8x8, 17 grey levels) upscaled to (N, 1, res, res) in [-1, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ModuleNotFoundError(
            "the digits dataset needs scikit-learn; install it with: pip install 'pndm[train]'"
        ) from None
    images = torch.from_numpy(sk_load_digits().images).float().unsqueeze(1) / 16.0
    if resolution != 8:
        images = F.interpolate(images, size=resolution, mode=upscale, align_corners=False)
    return images.clamp(0, 1) * 2 - 1


def _image_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"--data {folder} is a file; give 'digits' or a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG or JPEG images in {folder}")
    return files


def _open_image(path: Path, channels: int) -> Any:
    """The image as PIL "L"/"RGB" (8-bit) or "F" in [0, 1] (16-bit grey); refuses other depths."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return _to_unit_range(img, path, channels)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def _to_unit_range(img: Any, path: Path, channels: int) -> Any:
    """8-bit modes convert as PIL does; 16-bit grey (PNG "I;16", or "I" read from a PNG, whose
    samples are at most 16 bits) becomes float "F" / 65535; float and 32-bit images are refused."""
    from PIL import Image

    if img.mode in EIGHT_BIT_MODES:
        return img.convert("L" if channels == 1 else "RGB")
    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
        pixels = np.asarray(img).astype(np.float32) / 65535
        return Image.fromarray(pixels.clip(0, 1))  # mode "F"
    raise ValueError(
        f"cannot use image {path}: PIL mode {img.mode!r} ({img.format}) has no known range; "
        "save it as an 8- or 16-bit PNG"
    )


def _load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """One image, centre-cropped to a square, resized, as (C, res, res) in [-1, 1]."""
    from PIL import Image

    img = _open_image(path, channels)
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
    if img.mode == "F":  # 16-bit grey, already in [0, 1]; bicubic may overshoot
        unit = torch.from_numpy(np.asarray(img).copy()).clamp(0, 1)
        return unit.expand(channels, -1, -1) * 2 - 1
    array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    array = array.view(resolution, resolution, channels).permute(2, 0, 1)
    return array.float() / 127.5 - 1


def load_image_folder(folder: Path, resolution: int, channels: int) -> torch.Tensor:
    """All PNG/JPEG images under ``folder`` (recursively, sorted) as (N, C, res, res) in [-1, 1]."""
    files = _image_files(Path(folder))
    return torch.stack([_load_image(p, resolution, channels) for p in files])


def dataset_size(config: TrainConfig) -> int:
    """How many training images ``config`` names, without reading them."""
    return DIGITS_COUNT if config.data == "digits" else len(_image_files(Path(config.data)))


def load_dataset(config: TrainConfig) -> torch.Tensor:
    """The training images of ``config`` as one in-memory tensor."""
    if config.data == "digits":
        if config.channels != 1:
            raise ValueError("the digits dataset is greyscale; use channels=1")
        return load_digits(config.resolution, config.upscale)
    return load_image_folder(Path(config.data), config.resolution, config.channels)


# ----------------------------------------------------------------------------- model state


@dataclass
class TrainState:
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0


def build_unet(config: TrainConfig) -> torch.nn.Module:
    """A freshly initialised UNet2DModel; the seed decides it without touching global RNG state."""
    from pndm.models.unet_2d import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return UNet2DModel(**unet_config(config))


def fresh_state(config: TrainConfig) -> TrainState:
    model = build_unet(config).to(resolve_device(config.device)).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    return TrainState(model, ema, optimizer, generator)


def save_checkpoint(state: TrainState, config: TrainConfig, path: Path) -> None:
    """Model, EMA, optimizer, step and generator state in one file, written atomically."""
    payload = {
        "format": 1,
        "step": state.step,
        "config": _fingerprint(config),
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _check_same_run(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    current = _fingerprint(config)
    differ = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume from {path}: settings differ ({detail})")


def load_checkpoint(config: TrainConfig, path: Path) -> TrainState:
    """The state saved at ``path``; refuses a checkpoint made with different settings."""
    saved = _read_checkpoint(path)
    _check_same_run(_saved_fingerprint(saved["config"]), config, path)
    state = fresh_state(config)
    try:
        state.model.load_state_dict(saved["model"])
        state.ema.load_state_dict(saved["ema"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.generator.set_state(saved["generator"])
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"cannot resume from {path}: {' '.join(str(err).split())}") from None
    state.step = int(saved["step"])
    return state


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; a truncated, foreign or incomplete file is one clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not our checkpoint"
        raise ValueError(f"cannot read checkpoint {path} (truncated or corrupt?): {err}") from None
    keys = {"step", "config", "model", "ema", "optimizer", "generator"}
    if not isinstance(saved, dict) or not keys <= saved.keys():
        raise ValueError(f"{path} is not a pndm train checkpoint (it lacks {sorted(keys)})")
    return saved


# ----------------------------------------------------------------------------- one step


def sample_batch(
    data: torch.Tensor, num_train_timesteps: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0, t, ε): images drawn with replacement, integer t ~ U{0..T-1}, ε ~ N(0, I)."""
    index = torch.randint(len(data), (batch_size,), generator=generator)
    t = torch.randint(num_train_timesteps, (batch_size,), generator=generator)
    x0 = data[index]
    return x0, t, torch.randn(x0.shape, generator=generator)


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """Ho et al. eq. 14: || ε - ε_θ(sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε, t) ||²."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(model(x_t, t).sample, noise)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    if config.warmup_steps == 0:
        return config.learning_rate
    return config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)


def ema_decay(config: TrainConfig, step: int) -> float:
    """The configured decay, lowered early on so the average forgets the initial weights."""
    return min(config.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def train_step(
    state: TrainState, data: torch.Tensor, alphas_cumprod: torch.Tensor, config: TrainConfig
) -> float:
    """One optimiser step on a fresh batch; returns the batch loss (before the step)."""
    x0, t, noise = sample_batch(
        data, config.num_train_timesteps, config.batch_size, state.generator
    )
    device, dtype = alphas_cumprod.device, resolve_dtype(config.dtype)  # the training device
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = diffusion_loss(
            state.model, x0.to(device), t.to(device), noise.to(device), alphas_cumprod
        )
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss is {value} at step {state.step + 1}; stopped, nothing "
            "saved (lower --lr, or check the data)"
        )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.max_grad_norm)
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(config, state.step)
    state.optimizer.step()
    update_ema(state.ema, state.model, ema_decay(config, state.step))
    state.step += 1
    return value


# ----------------------------------------------------------------------------- saving


def check_finite_weights(state: TrainState) -> None:
    """Refuse to save NaN or inf weights (an update can break them after a finite loss)."""
    for module in (state.model, state.ema):
        if not all(bool(p.isfinite().all()) for p in module.parameters()):
            raise NonFiniteLossError(
                f"the weights hold NaN or inf after step {state.step}; stopped, nothing saved "
                "(lower --lr)"
            )


def save_pipeline(unet: torch.nn.Module, config: TrainConfig, folder: Path) -> Path:
    """Write a diffusers PNDMPipeline folder; model_index.json goes last and marks completion."""
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.compat.scheduler import PNDMScheduler

    scheduler = PNDMScheduler(**scheduler_config(config))
    PNDMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return Path(folder)


# ----------------------------------------------------------------------------- the loop


def _progress(config: TrainConfig, start: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=config.train_steps,
        initial=start,
        file=sys.stderr,
        disable=not config.progress,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )


def run_training(
    state: TrainState, data: torch.Tensor, config: TrainConfig, folder: Path | None = None
) -> list[float]:
    """Train until ``config.train_steps``, checkpointing into ``folder`` (default: the output)
    and logging on the way; returns the batch losses. Stops at the first non-finite loss."""
    schedule = NoiseSchedule.from_config(scheduler_config(config))
    alphas_cumprod = schedule.alphas_cumprod.float().to(resolve_device(config.device))
    checkpoint = (folder or config.output_dir) / CHECKPOINT_NAME
    losses: list[float] = []
    with _progress(config, state.step) as bar:
        while state.step < config.train_steps:
            losses.append(train_step(state, data, alphas_cumprod, config))
            bar.update(1)
            bar.set_postfix(loss=f"{_mean(losses[-50:]):.4f}", refresh=False)
            if config.log_every and state.step % config.log_every == 0:
                bar.write(
                    f"step {state.step}: loss {_mean(losses[-config.log_every :]):.5f}", sys.stderr
                )
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                check_finite_weights(state)
                save_checkpoint(state, config, checkpoint)
    return losses


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _parameter_count(config: TrainConfig) -> int:
    from pndm.models.unet_2d import UNet2DModel

    with torch.device("meta"):  # shapes only: no memory
        return sum(p.numel() for p in UNet2DModel(**unet_config(config)).parameters())


def check_fits(config: TrainConfig, count: int) -> None:
    """Refuse, before loading anything, a run whose data, model and one batch cannot fit."""
    from pndm.runtime.fast import free_memory, image_bytes

    device = resolve_device(config.device)
    shape = (config.channels, config.resolution, config.resolution)
    data = count * math.prod(shape) * 4
    model = _parameter_count(config) * 4 * 5  # weights, EMA, gradients, two AdamW moments
    batch = config.batch_size * image_bytes(unet_config(config), shape, torch.float32)
    parts = {"images": data, "model, EMA and optimiser": model, "one batch": batch}
    on_cpu = data + (model + batch if device.type == "cpu" else 0)
    checks = [(torch.device("cpu"), on_cpu)]
    if device.type != "cpu":
        checks.append((device, model + batch))
    for where, need in checks:
        free = free_memory(where)
        if need > free:
            detail = ", ".join(f"{k} {v / 2**30:.3g}" for k, v in parts.items())
            raise ValueError(
                f"training needs at least {need / 2**30:.3g} GiB on {where} ({detail} GiB) but "
                f"only {free / 2**30:.3g} GiB are free; lower --resolution, --batch-size or "
                "--block-out-channels"
            )


def train(config: TrainConfig) -> Path:
    """Train a UNet2DModel as ``config`` says and write a diffusers pipeline folder; returns it.

    Everything that can be checked is checked before any work; nothing is saved when the loss
    turns non-finite; a replaced model stays in place until the new one is complete.
    """
    check_output(config)
    check_fits(config, dataset_size(config))
    data = load_dataset(config)  # fail on bad input before touching the output folder
    with work_folder(config) as folder:
        checkpoint = folder / CHECKPOINT_NAME
        state = load_checkpoint(config, checkpoint) if config.resume else fresh_state(config)
        if state.step > config.train_steps:
            raise ValueError(
                f"{checkpoint} is at step {state.step}, past --steps {config.train_steps}"
            )
        run_training(state, data, config, folder)
        check_finite_weights(state)
        _save_results(state, config, folder)
    return config.output_dir


def _save_results(state: TrainState, config: TrainConfig, folder: Path) -> None:
    """The pipeline, and the last checkpoint when one is kept (so a later run can extend it)."""
    checkpoint = folder / CHECKPOINT_NAME
    save_pipeline(state.ema, config, folder)
    if config.keep_checkpoint and config.checkpoint_every and state.step % config.checkpoint_every:
        save_checkpoint(state, config, checkpoint)
    elif not config.keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
