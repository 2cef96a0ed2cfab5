"""A calibration's bounds (issue 22): κ within [e^-5, e^5] whatever the schedule, and, where a
schedule meets it, every shifted time t + δ within the schedule's range [target, t_max]."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pndm.calibration import Calibration, check_calibration
from pndm.jobs.job import SampleJob
from pndm.jobs.plan import plan
from pndm.schedule import NoiseSchedule, VPSchedule
from pndm.tuning.search import called_times
from pndm.tuning.spaces import CalibrationSpace

DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
VP = VPSchedule()


@pytest.mark.parametrize("scale", [1e3, 1e-3, math.exp(5.01), math.exp(-5.01)])
def test_eps_scales_outside_the_band_are_refused(scale: float) -> None:
    with pytest.raises(ValueError, match=r"eps_scales must lie in \[e\^-5, e\^5\]") as err:
        Calibration((999.0,), (0.0,), (scale,))
    assert "\n" not in str(err.value)


def test_eps_scales_at_the_band_s_ends_are_taken() -> None:
    ends = (float(np.exp(5.0)), float(np.exp(-5.0)), 1.0)  # the tuner's own clip (numpy's exp)
    assert Calibration((999.0, 500.0, 10.0), (0.0,) * 3, ends).eps_scales == ends


@pytest.mark.parametrize(
    ("schedule", "shifts", "needle"),
    [
        (DDPM, (1e6, 0.0), "got t = 999, δ = 1e+06"),
        (DDPM, (0.0, -5000.0), "got t = 500, δ = -5000"),
        (DDPM, (1.0, 0.0), "range [-1, 999], got t = 999, δ = 1"),
        (VP, (0.0, -0.6), "got t = 0.5, δ = -0.6"),
    ],
)
def test_shifted_times_outside_the_schedule_are_refused(schedule, shifts, needle) -> None:
    times = (999.0, 500.0) if schedule is DDPM else (1.0, 0.5)
    calibration = Calibration(times, shifts, (1.0, 1.0))  # no schedule: nothing to check
    with pytest.raises(ValueError, match="calibration time_shifts must keep") as err:
        check_calibration(calibration, schedule)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_shifts_within_the_range_pass_down_to_the_target() -> None:
    """F-PNDM's last RK stage calls the model at the target -1 on a discrete schedule."""
    grid = torch.tensor([999.0, 600.0, 200.0, -1.0], dtype=torch.float64)
    times = called_times("f-pndm", grid, DDPM, {})
    assert times[-1] == -1.0
    check_calibration(Calibration.identity(times), DDPM)
    check_calibration(Calibration((999.0, -1.0), (-999.0, 1000.0), (1.0, 1.0)), DDPM)
    check_calibration(None, DDPM)


@pytest.mark.parametrize("z", [1e6, -1e6, 37.0, -0.3])
def test_every_calibration_the_tuner_searches_is_within_the_bounds(z: float) -> None:
    times = (999.0, 799.5, 600.0, 99.5, -1.0)
    calibration = CalibrationSpace(DDPM, times).calibration(np.full(2 * len(times), z))
    check_calibration(calibration, DDPM)
    vp = CalibrationSpace(VP, (1.0, 0.5, 1e-3)).calibration(np.full(6, z))
    check_calibration(vp, VP)


def test_the_job_plan_checks_the_calibration_against_the_model(tmp_path: Path) -> None:
    bad = Calibration((999.0, 500.0), (1e6, 0.0), (1.0, 1.0))
    job = SampleJob(out=tmp_path / "s.png", seeds=[0], method="ipndm",
                    timesteps=[999.0, 500.0, -1.0], calibration=bad)  # fmt: skip
    with pytest.raises(ValueError, match="calibration time_shifts must keep"):
        plan(job)
    assert list(tmp_path.iterdir()) == []
