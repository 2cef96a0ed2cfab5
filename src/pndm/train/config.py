"""What decides a training run: `TrainConfig`, its checks, and the configs it implies.

Free of torch, so the command line can read the defaults without importing it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pndm.checks import MAX_SEED, check_choice, check_count, check_flag, check_number
from pndm.images import CHANNELS

UPSCALE_MODES = ("bilinear", "bicubic")
# float16 would need loss scaling, which this trainer does not do.
TRAIN_DTYPES = ("float32", "bfloat16")
# T beyond this is no DDPM anyone trains, and its schedule alone would take gigabytes.
MAX_TRAIN_TIMESTEPS = 10**6
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: rates above 0
# Fields that may change between a run and its resumption; all others must match the checkpoint.
RUN_FIELDS = frozenset(
    {"output_dir", "train_steps", "checkpoint_every", "keep_checkpoint", "resume", "overwrite"}
    | {"device", "progress", "log_every"}
)
DEFAULT_LABEL_DROPOUT = 0.1  # Ho & Salimans 2022 found 0.1 to 0.2 best
# Old field names -> current ones, for training configs saved before a rename.
LEGACY_NAMES = {"steps": "train_steps"}


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``data`` is ``"digits"`` or an image folder."""

    output_dir: Path
    data: str = "digits"
    resolution: int = 16
    channels: int = 1
    upscale: str = "bicubic"  # digits only: 8x8 -> resolution
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 2
    attention: bool = True  # attention blocks at the lowest resolution
    norm_num_groups: int = 16
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    train_steps: int = 2500  # optimiser steps (CLI --steps); not sampling steps
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    keep_checkpoint: bool = True  # keep checkpoint.pt after the last step
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"  # as pndm sample's: auto, cpu, cuda, cuda:N
    dtype: str = "float32"  # autocast dtype of the forward pass; weights stay float32
    progress: bool = True
    log_every: int = 0  # 0: no loss lines on stderr
    conditional: bool = False  # a class label per image, for classifier-free guidance
    label_dropout: float = DEFAULT_LABEL_DROPOUT  # conditional: P(label -> "no class")
    extra: dict[str, Any] = field(default_factory=dict)  # more UNet2DModel config keys

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        _validate(self)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


FLAGS = ("attention", "keep_checkpoint", "resume", "overwrite", "progress", "conditional")
# The UNet keys --conditional sets itself (a label table of the data's classes plus "no class").
CLASS_KEYS = ("num_class_embeds", "class_embed_type")


def _validate(c: TrainConfig) -> None:
    for name in FLAGS:
        check_flag(name, getattr(c, name))
    _validate_numbers(c)
    _validate_model(c)
    _validate_conditioning(c)
    _require(not (c.resume and c.overwrite), "resume and overwrite exclude each other")
    _validate_device(c)
    from pndm.schedule import NoiseSchedule

    NoiseSchedule.from_config(scheduler_config(c))  # raises on a bad beta schedule


def _validate_numbers(c: TrainConfig) -> None:
    """Counts are integers in range, rates finite: a NaN or inf here would train a NaN model."""
    for name in ("train_steps", "batch_size", "layers_per_block", "norm_num_groups"):
        check_count(name, getattr(c, name))
    for name in ("warmup_steps", "checkpoint_every", "log_every"):
        check_count(name, getattr(c, name), minimum=0)
    check_count("seed", c.seed, minimum=0, maximum=MAX_SEED)
    check_count("num_train_timesteps", c.num_train_timesteps, 2, MAX_TRAIN_TIMESTEPS)
    # rates in float32's range: torch's optimiser converts them (NaN or inf trains a NaN model)
    check_number("learning_rate", c.learning_rate, FLOAT32_TINY, FLOAT32_MAX)
    check_number("max_grad_norm", c.max_grad_norm, FLOAT32_TINY, FLOAT32_MAX)
    check_number("weight_decay", c.weight_decay, 0, FLOAT32_MAX)
    check_number("beta_start", c.beta_start, 0, 1)
    check_number("beta_end", c.beta_end, 0, 1)
    _require(c.ema_decay != 1, "ema_decay must lie in [0, 1), got 1")
    check_number("ema_decay", c.ema_decay, 0, 1)


def _validate_model(c: TrainConfig) -> None:
    levels = len(c.block_out_channels)
    check_choice("channels", c.channels, CHANNELS)
    check_choice("upscale", c.upscale, UPSCALE_MODES)
    _require(levels >= 1 and min(c.block_out_channels) > 0, "block_out_channels must be positive")
    step = 2 ** (levels - 1)
    _require(
        isinstance(c.resolution, int) and c.resolution >= step and c.resolution % step == 0,
        f"resolution {c.resolution} must be a positive multiple of {step} for {levels} UNet levels",
    )
    bad = [ch for ch in c.block_out_channels if ch % c.norm_num_groups]
    _require(
        not bad,
        f"norm_num_groups {c.norm_num_groups} must divide every block_out_channels "
        f"entry; {bad} are not multiples",
    )
    if c.data == "digits":
        _require(c.channels == 1, "the digits dataset is greyscale; use channels=1")


def _validate_conditioning(c: TrainConfig) -> None:
    """Label dropout in [0, 1) (1 would never show a label); set without --conditional it would
    train nothing, so it is refused rather than ignored."""
    p = c.label_dropout
    ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and 0 <= p < 1  # NaN is not
    _require(ok, f"label_dropout must be a number in [0, 1), got {p!r}")
    _require(
        c.conditional or p == DEFAULT_LABEL_DROPOUT,
        f"label_dropout {p} needs --conditional (TrainConfig.conditional)",
    )
    taken = [key for key in CLASS_KEYS if key in c.extra]
    _require(
        not (c.conditional and taken),
        f"conditional sets the UNet's {' and '.join(taken)} from the data; drop it from extra",
    )


def _validate_device(c: TrainConfig) -> None:
    """The same names and errors as pndm sample (`pndm.runtime.devices`); float16 is not trained."""
    from pndm.runtime.devices import resolve_device, resolve_dtype

    resolve_device(c.device)
    resolve_dtype(c.dtype)
    check_choice("dtype", c.dtype, TRAIN_DTYPES, why="float16 needs loss scaling to train")


# ----------------------------------------------------------------------------- configs


def scheduler_config(config: TrainConfig) -> dict[str, Any]:
    """The training noise schedule as diffusers scheduler config keys."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": config.beta_schedule,
    }


def unet_config(config: TrainConfig, classes: int | None = None) -> dict[str, Any]:
    """UNet2DModel constructor arguments: attention (if any) at the lowest resolution only; a
    conditional run's label table has a row per class and a last, "no class" row."""
    if config.conditional != (classes is not None):
        raise ValueError("a conditional run's UNet needs its number of classes (and only it)")
    table = {} if classes is None else {"num_class_embeds": classes + 1}
    levels = len(config.block_out_channels)
    attn = config.attention
    down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D" if attn else "DownBlock2D"]
    up = ["AttnUpBlock2D" if attn else "UpBlock2D"] + ["UpBlock2D"] * (levels - 1)
    return {
        "sample_size": config.resolution,
        "in_channels": config.channels,
        "out_channels": config.channels,
        "block_out_channels": config.block_out_channels,
        "layers_per_block": config.layers_per_block,
        "down_block_types": tuple(down),
        "up_block_types": tuple(up),
        "norm_num_groups": config.norm_num_groups,
        **table,
        **config.extra,
    }
