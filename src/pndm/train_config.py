"""What decides a training run: `TrainConfig`, its checks, and the configs it implies.

Free of torch, so the command line can read the defaults without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UPSCALE_MODES = ("bilinear", "bicubic")
# Fields that may change between a run and its resumption; all others must match the checkpoint.
RUN_FIELDS = frozenset(
    {"output_dir", "steps", "checkpoint_every", "keep_checkpoint", "resume", "overwrite"}
    | {"device", "progress", "log_every"}
)


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
    steps: int = 2500
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
    device: str = "cpu"
    progress: bool = True
    log_every: int = 0  # 0: no loss lines on stderr
    extra: dict[str, Any] = field(default_factory=dict)  # more UNet2DModel config keys

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        _validate(self)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _validate(c: TrainConfig) -> None:
    levels = len(c.block_out_channels)
    _require(c.channels in (1, 3), f"channels must be 1 or 3, got {c.channels}")
    modes = ", ".join(UPSCALE_MODES)
    _require(c.upscale in UPSCALE_MODES, f"unknown upscale {c.upscale!r}; choose one of {modes}")
    _require(levels >= 1 and min(c.block_out_channels) > 0, "block_out_channels must be positive")
    step = 2 ** (levels - 1)
    _require(
        c.resolution >= step and c.resolution % step == 0,
        f"resolution {c.resolution} must be a multiple of {step} for {levels} UNet levels",
    )
    bad = [ch for ch in c.block_out_channels if ch % c.norm_num_groups]
    _require(
        not bad,
        f"norm_num_groups {c.norm_num_groups} must divide every block_out_channels "
        f"entry; {bad} are not multiples",
    )
    for name in ("steps", "batch_size", "layers_per_block", "num_train_timesteps"):
        _require(getattr(c, name) >= 1, f"{name} must be at least 1, got {getattr(c, name)}")
    for name in ("warmup_steps", "checkpoint_every", "log_every", "weight_decay"):
        _require(getattr(c, name) >= 0, f"{name} must be >= 0, got {getattr(c, name)}")
    _require(c.learning_rate > 0, f"learning_rate must be positive, got {c.learning_rate}")
    _require(c.max_grad_norm > 0, f"max_grad_norm must be positive, got {c.max_grad_norm}")
    _require(0 <= c.ema_decay < 1, f"ema_decay must lie in [0, 1), got {c.ema_decay}")
    _require(not (c.resume and c.overwrite), "resume and overwrite exclude each other")
    from pndm.schedule import NoiseSchedule

    NoiseSchedule.from_config(scheduler_config(c))  # raises on a bad beta schedule


# ----------------------------------------------------------------------------- configs


def scheduler_config(config: TrainConfig) -> dict[str, Any]:
    """The training noise schedule as diffusers scheduler config keys."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": config.beta_schedule,
    }


def unet_config(config: TrainConfig) -> dict[str, Any]:
    """UNet2DModel constructor arguments: attention (if any) at the lowest resolution only."""
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
        **config.extra,
    }
