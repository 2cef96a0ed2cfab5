"""A small DDPM trainer (Ho et al. 2020, eq. 14): ε-prediction MSE, EMA weights, diffusers output.

``train(TrainConfig(...))`` fits a `UNet2DModel` to an image folder or to scikit-learn's digits and
writes a diffusers pipeline folder (``model_index.json``, ``unet/`` holding the EMA weights,
``scheduler/``). All randomness after the model's initialisation comes from one CPU generator
whose state goes into each checkpoint, so ``resume=True`` continues bit for bit.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pndm.io import PIPELINE_ENTRIES, atomic_write, remove_entries
from pndm.schedule import NoiseSchedule
from pndm.train_config import RUN_FIELDS, TrainConfig, scheduler_config, unet_config

CHECKPOINT_NAME = "checkpoint.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The config fields that decide the trajectory, as plain JSON-like values."""
    d = asdict(config)
    d = {k: v for k, v in d.items() if k not in RUN_FIELDS}
    d["block_out_channels"] = list(config.block_out_channels)
    return d


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
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG or JPEG images in {folder}")
    return files


def _load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """One image, centre-cropped to a square, resized, as (C, res, res) in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    array = array.view(resolution, resolution, channels).permute(2, 0, 1)
    return array.float() / 127.5 - 1


def load_image_folder(folder: Path, resolution: int, channels: int) -> torch.Tensor:
    """All PNG/JPEG images under ``folder`` (recursively, sorted) as (N, C, res, res) in [-1, 1]."""
    files = _image_files(Path(folder))
    return torch.stack([_load_image(p, resolution, channels) for p in files])


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
    model = build_unet(config).to(config.device).train()
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
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    _check_same_run(saved["config"], config, path)
    state = fresh_state(config)
    state.model.load_state_dict(saved["model"])
    state.ema.load_state_dict(saved["ema"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.generator.set_state(saved["generator"])
    state.step = int(saved["step"])
    return state


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
    """One optimiser step on a fresh batch; returns the batch loss."""
    x0, t, noise = sample_batch(
        data, config.num_train_timesteps, config.batch_size, state.generator
    )
    device = config.device
    loss = diffusion_loss(
        state.model, x0.to(device), t.to(device), noise.to(device), alphas_cumprod
    )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.max_grad_norm)
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(config, state.step)
    state.optimizer.step()
    update_ema(state.ema, state.model, ema_decay(config, state.step))
    state.step += 1
    return loss.item()


# ----------------------------------------------------------------------------- output folder


def prepare_output(config: TrainConfig) -> None:
    """Refuse to clobber a non-empty folder unless overwrite (then drop our entries) or resume."""
    out = config.output_dir
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path exists and is not a folder: {out}")
    if config.resume:
        return
    if out.is_dir() and any(out.iterdir()):
        if not config.overwrite:
            raise FileExistsError(
                f"output folder {out} already exists and is not empty; pass --overwrite to "
                "replace it or --resume to continue its checkpoint"
            )
        remove_entries(out, (*PIPELINE_ENTRIES, CHECKPOINT_NAME))
    out.mkdir(parents=True, exist_ok=True)


def save_pipeline(unet: torch.nn.Module, config: TrainConfig, folder: Path) -> Path:
    """Write a diffusers PNDMPipeline folder; model_index.json goes last and marks completion."""
    from pndm.pipeline import PNDMPipeline
    from pndm.scheduler import PNDMScheduler

    scheduler = PNDMScheduler(**scheduler_config(config))
    PNDMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return Path(folder)


# ----------------------------------------------------------------------------- the loop


def _progress(config: TrainConfig, start: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=config.steps,
        initial=start,
        file=sys.stderr,
        disable=not config.progress,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )


def run_training(state: TrainState, data: torch.Tensor, config: TrainConfig) -> list[float]:
    """Train until ``config.steps``, checkpointing and logging on the way; returns batch losses."""
    schedule = NoiseSchedule.from_config(scheduler_config(config))
    alphas_cumprod = schedule.alphas_cumprod.float().to(config.device)
    checkpoint = config.output_dir / CHECKPOINT_NAME
    losses: list[float] = []
    with _progress(config, state.step) as bar:
        while state.step < config.steps:
            losses.append(train_step(state, data, alphas_cumprod, config))
            bar.update(1)
            bar.set_postfix(loss=f"{_mean(losses[-50:]):.4f}", refresh=False)
            if config.log_every and state.step % config.log_every == 0:
                bar.write(
                    f"step {state.step}: loss {_mean(losses[-config.log_every :]):.5f}", sys.stderr
                )
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                save_checkpoint(state, config, checkpoint)
    return losses


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def train(config: TrainConfig) -> Path:
    """Train a UNet2DModel as ``config`` says and write a diffusers pipeline folder; returns it."""
    data = load_dataset(config)  # fail on bad input before touching the output folder
    prepare_output(config)
    checkpoint = config.output_dir / CHECKPOINT_NAME
    state = load_checkpoint(config, checkpoint) if config.resume else fresh_state(config)
    if state.step > config.steps:
        raise ValueError(f"{checkpoint} is at step {state.step}, past --steps {config.steps}")
    run_training(state, data, config)
    save_pipeline(state.ema, config, config.output_dir)
    if config.keep_checkpoint and config.checkpoint_every and state.step % config.checkpoint_every:
        save_checkpoint(state, config, checkpoint)  # the last step, so a later run can extend it
    elif not config.keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    return config.output_dir
