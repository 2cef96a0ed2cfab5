"""What pndm's diffusers schedulers share (PNDMScheduler, SamplerScheduler): the checks of the
schedule keys, diffusers' float32 schedule attributes, ``add_noise``, the timesteps' dtype rule,
and copies that plan afresh."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from pndm.checks import check_choice
from pndm.config import ConfigMixin
from pndm.grids import SCHEDULER_SPACINGS
from pndm.schedule import NoiseSchedule, make_betas
from pndm.wrapper import PREDICTION_TYPES

COMPATIBLES: list[str] = [
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
    "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler", "EDMEulerScheduler",
]  # fmt: skip


def check_schedule_keys(
    timestep_spacing: str,
    prediction_type: str,
    steps_offset: Any,
    trained_betas: np.ndarray | Sequence[float] | None,
) -> list[float] | None:
    """Check the schedule keys a scheduler takes; ``trained_betas`` as a list (or None)."""
    check_choice("timestep_spacing", timestep_spacing, SCHEDULER_SPACINGS)
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    if isinstance(steps_offset, bool) or int(steps_offset) != steps_offset or steps_offset < 0:
        raise ValueError(f"steps_offset must be an integer >= 0, got {steps_offset!r}")
    if trained_betas is None:
        return None
    return np.asarray(trained_betas, dtype=np.float64).ravel().tolist()


def timestep_array(times: Sequence[float]) -> np.ndarray:
    """Integer times as int64 (diffusers' dtype); fractional times keep float64."""
    array = np.asarray(times, dtype=np.float64)
    return array.astype(np.int64) if np.all(array == np.round(array)) else array


def timestep_tensor(times: np.ndarray, device: str | torch.device | None) -> torch.Tensor:
    """int64 as diffusers; fractional times as float32 (half-integers exactly; a UNet embeds its
    time in float32 anyway), valid on any device."""
    dtype = torch.int64 if times.dtype == np.int64 else torch.float32
    return torch.as_tensor(times, dtype=dtype, device=device)


class PlannedScheduler(ConfigMixin):
    """A diffusers scheduler whose ``set_timesteps`` plans a run: the shared attributes and API.

    A subclass registers its config, calls `_init_schedule`, keeps ``_planned`` (what
    ``_replan(*_planned)`` needs to plan the same run again) and ``_run_state`` (the run in
    progress, a generator: never copied).
    """

    config_name: ClassVar[str] = "scheduler_config.json"
    _compatibles: ClassVar[list[str]] = COMPATIBLES
    order: ClassVar[int] = 1
    _planned: tuple[Any, ...] | None = None

    def _init_schedule(self) -> None:
        """The float64 schedule used for stepping and diffusers' float32 attributes."""
        c = self.config
        self.schedule = NoiseSchedule.from_config(c)
        betas = make_betas(
            c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule, c.trained_betas
        )
        self.betas = betas.float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        final = torch.tensor(1.0) if c.set_alpha_to_one else self.alphas_cumprod[0]
        self.final_alpha_cumprod = final
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def _replan(self, *planned: Any) -> None:
        raise NotImplementedError

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """√ᾱ_t·x₀ + √(1-ᾱ_t)·noise, one t per sample (integer times read ``alphas_cumprod``,
        as diffusers; fractional ones the schedule's interpolated ᾱ)."""
        x = original_samples
        t = torch.as_tensor(timesteps, device=x.device)
        if t.is_floating_point():
            alpha_bar = self.schedule.alpha_bar(t).to(x.dtype)
        else:
            alpha_bar = self.alphas_cumprod.to(device=x.device, dtype=x.dtype)[t]
        alpha_bar = alpha_bar.flatten().reshape(-1, *([1] * (x.ndim - 1)))
        return alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the run in progress (a generator): a copy plans the same
        run afresh, as after ``set_timesteps``."""
        return {k: v for k, v in self.__dict__.items() if k != "_run_state"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._replan(*self._planned) if self._planned is not None else self._replan()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.config)})"
