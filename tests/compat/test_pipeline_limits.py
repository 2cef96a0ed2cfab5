"""PNDMPipeline's call refuses, before any allocation or model call, what it cannot run: a batch
larger than the free memory, a calibration whose shifted times leave the schedule, a schedule
config that would allocate without bound."""

from __future__ import annotations

import pytest
from conftest import tiny_unet

from pndm import PNDMPipeline, PNDMScheduler
from pndm.calibration import Calibration
from pndm.runtime import fast
from pndm.schedule import MAX_TRAIN_TIMESTEPS, NoiseSchedule


def pipeline() -> PNDMPipeline:
    pipe = PNDMPipeline(tiny_unet(), PNDMScheduler(skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_batch_beyond_the_free_memory_is_refused_naming_one_that_fits(monkeypatch) -> None:
    pipe = pipeline()
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("called the UNet"))
    with pytest.raises(ValueError, match=r"batch_size 1000000000 needs about .* GiB on cpu, but "
                       r"only .* GiB are free; use batch_size <= [0-9]+$"):  # fmt: skip
        pipe(batch_size=10**9, num_inference_steps=4, output_type="np")


def test_the_bound_is_the_free_memory(monkeypatch) -> None:
    pipe = pipeline()
    each = fast.per_image_bytes(pipe.unet, pipe.dtype, (3, 8, 8))
    monkeypatch.setattr(fast, "free_memory", lambda device: 3 * each)
    assert len(pipe(batch_size=3, num_inference_steps=2, output_type="np").images) == 3
    with pytest.raises(ValueError, match=r"use batch_size <= 3$"):
        pipe(batch_size=4, num_inference_steps=2, output_type="np")


@pytest.mark.parametrize("shifts", [(5.0, 0.0), (0.0, -600.0)], ids=["above t_max", "below -1"])
def test_a_calibration_shifting_a_time_out_of_the_schedule_is_refused(monkeypatch, shifts):
    """t_max is 999 and the target -1: 999 + 5 and 500 - 600 lie outside."""
    pipe = pipeline()
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("called the UNet"))
    calibration = Calibration((999.0, 500.0), shifts, (1.0, 1.0))
    with pytest.raises(ValueError, match=r"time_shifts must keep each shifted time t \+ δ"):
        pipe(timesteps=[999.0, 500.0, -1.0], calibration=calibration, output_type="np")


def test_a_schedule_of_unbounded_length_is_refused() -> None:
    with pytest.raises(ValueError, match=f"num_train_timesteps must be an integer in \\[2, "
                       f"{MAX_TRAIN_TIMESTEPS}\\], got 10000000000"):  # fmt: skip
        NoiseSchedule.from_config({"num_train_timesteps": 10**10})
    with pytest.raises(ValueError, match=f"trained_betas must hold at most {MAX_TRAIN_TIMESTEPS}"):
        NoiseSchedule.from_config({"trained_betas": [0.01] * (MAX_TRAIN_TIMESTEPS + 1)})
