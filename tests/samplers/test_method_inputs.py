"""Inputs every method checks before its first model call (issue 22): a grid of real numbers
only, at most `pndm.checks.MAX_STEPS` steps (the bound ``--steps`` has), a non-empty batch, and
no ``denoise_to_zero`` call below the trained times of a discrete schedule. The same grid
checks hold where a pipeline takes ``timesteps``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_unet

from pndm import grids
from pndm.compat.pipeline import PNDMPipeline
from pndm.compat.scheduler import PNDMScheduler
from pndm.samplers import SAMPLERS
from pndm.schedule import NoiseSchedule, VPSchedule

DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000})
VP = VPSchedule()


def no_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the model was called")


def zero_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


ODD_GRIDS = [
    ([True, False], "must hold real numbers only"),
    (torch.tensor([True, False]), "must hold real numbers only"),
    ([999, 500, True], "must hold real numbers only"),  # numpy would make True a 1
    (np.array([True, False]), "must hold real numbers only"),
    (["999", "-1"], "must hold real numbers only"),  # numpy would parse them
    ("999", "must hold real numbers only"),
    (torch.tensor([999 + 1j, -1 + 0j]), "must hold real numbers only"),  # .to(float64) drops 1j
    ([999 + 1j, -1], "must hold real numbers only"),
    ([None, 1], "must hold real numbers only"),
    ([[999, 500], [3]], "must hold real numbers only"),
    ([[999.0, 500.0], [10.0, -1.0]], "must be 1-D"),  # ravel() used to flatten it
    (np.array([[999.0, 500.0], [10.0, -1.0]]), "must be 1-D"),
    (5.0, "must be 1-D"),
]


@pytest.mark.parametrize(("timesteps", "needle"), ODD_GRIDS)
def test_odd_timesteps_are_refused_by_every_method(timesteps: Any, needle: str) -> None:
    for name in ("ddim", "ipndm", "f-pndm"):
        with pytest.raises(ValueError, match=f"timesteps {needle}") as err:
            SAMPLERS[name](no_model, torch.zeros(2, 3), timesteps, DDPM)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("timesteps", "needle"), ODD_GRIDS)
def test_odd_timesteps_are_refused_by_the_scheduler_grid(timesteps: Any, needle: str) -> None:
    """What ``pipe(timesteps=...)`` and ``set_timesteps(timesteps=...)`` build on."""
    with pytest.raises(ValueError, match=f"timesteps {needle}"):
        PNDMScheduler().grid(None, timesteps)


def test_one_bound_for_a_grid_s_length() -> None:
    """A grid of more than 1000 steps is refused by the samplers (any schedule) and by the
    scheduler (num_train_timesteps = 1000: as `--steps 2000`), fractional times or not."""
    long_grid = torch.linspace(1.0, 1e-3, 1002, dtype=torch.float64)  # 1001 steps
    with pytest.raises(ValueError, match=r"the steps of timesteps must be an integer in \[1, 1000"):
        SAMPLERS["ddim"](no_model, torch.zeros(1, 2), long_grid, VP)
    fine = SAMPLERS["ddim"](zero_model, torch.zeros(1, 2), long_grid[1:], VP)  # 1000 steps
    assert fine.shape == (1, 2)
    fractional = np.linspace(999.0, 0.0, 2000)  # 2000 distinct model times in [0, 999]
    with pytest.raises(ValueError, match=r"got 2000: more than num_train_timesteps=1000"):
        PNDMScheduler().grid(None, fractional)
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000"):
        PNDMScheduler().grid(2000)


def test_the_pipeline_refuses_odd_timesteps_before_any_model_call(monkeypatch) -> None:
    pipe = PNDMPipeline(unet=tiny_unet(0), scheduler=PNDMScheduler())
    monkeypatch.setattr(pipe.unet, "forward", no_model)
    for timesteps, needle in [
        ([True, False], "must hold real numbers only"),
        ([[999.0, 500.0], [10.0, -1.0]], "must be 1-D"),
        (["999", "10"], "must hold real numbers only"),
        (np.linspace(999.0, 0.0, 2000), "the steps of timesteps"),
    ]:
        with pytest.raises(ValueError, match=needle):
            pipe(seeds=[0], timesteps=timesteps, output_type="np")


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0,)])
def test_an_empty_batch_never_reaches_the_model(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="x must be a non-empty floating-point tensor"):
        SAMPLERS["ddim"](no_model, torch.zeros(shape), [999.0, -1.0], DDPM)


def test_denoise_to_zero_below_the_trained_times_is_refused() -> None:
    """Its extra call is at the target: t = -1 on a discrete schedule was never trained."""
    with pytest.raises(ValueError, match="denoise_to_zero must be False on a grid whose target"):
        SAMPLERS["ipndm"](no_model, torch.zeros(1, 2), [999.0, 500.0, -1.0], DDPM,
                          denoise_to_zero=True)  # fmt: skip
    offset = NoiseSchedule.from_config({"num_train_timesteps": 1000, "alpha_index_offset": 1})
    with pytest.raises(ValueError, match="denoise_to_zero"):  # t_min = -1, trained from 0
        SAMPLERS["ipndm"](no_model, torch.zeros(1, 2), [998.0, -1.0], offset,
                          denoise_to_zero=True)  # fmt: skip
    seen = []

    def record(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    SAMPLERS["ipndm"](record, torch.zeros(1, 2), [999.0, 500.0, 0.0], DDPM, denoise_to_zero=True)
    assert seen == [999.0, 500.0, 0.0]  # a grid ending at a trained time: allowed
    SAMPLERS["ipndm"](zero_model, torch.zeros(1, 2), grids.edm(VP, 3), VP, denoise_to_zero=True)
