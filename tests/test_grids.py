"""Timestep grids against diffusers' set_timesteps, the original codes' formulas, closed forms."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from pndm import PNDMScheduler as OurPNDMScheduler
from pndm.checks import MAX_STEPS
from pndm.grids import (
    FINAL_TIME,
    GRIDS,
    check_num_steps,
    default_method,
    make_grid,
    scheduler_grid,
)
from pndm.samplers import nfe
from pndm.schedule import NoiseSchedule, VPSchedule

T = 1000
DDPM = NoiseSchedule.from_config({})
VP = VPSchedule()
# Includes n where a torch formula equal on paper rounds differently from diffusers' numpy one
# (trailing 48, 61, 96; linspace 27, 31, 47).
STEPS = [1, 2, 7, 10, 20, 27, 31, 47, 48, 50, 61, 96, 100, 250, 333, 999, 1000]


def _ddim_timesteps(spacing: str, n: int, steps_offset: int = 0) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = DDIMScheduler(timestep_spacing=spacing, steps_offset=steps_offset)
    d.set_timesteps(n)
    return d.timesteps.tolist()


def _grid_times(name: str, n: int, **options) -> list[int]:
    """The model times (target dropped) as ints, after checking the end point is FINAL_TIME."""
    grid = make_grid(name, DDPM, n, **options)
    assert grid.dtype == torch.float64 and grid[-1] == FINAL_TIME
    assert torch.equal(grid, grid.round())
    return grid[:-1].long().tolist()


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_integer_grids_equal_diffusers_ddim(spacing, n):
    assert _grid_times(spacing, n) == _ddim_timesteps(spacing, n)


@pytest.mark.parametrize("n", [1, 10, 20, 50, 999])
def test_leading_steps_offset_equals_diffusers(n):
    assert _grid_times("leading", n, steps_offset=1) == _ddim_timesteps("leading", n, 1)


@pytest.mark.parametrize("n", [2, 10, 27, 50])
@pytest.mark.parametrize(("spacing", "offset"), [("leading", 0), ("leading", 1), ("trailing", 0)])
def test_integer_grids_equal_diffusers_pndm_skip_mode(spacing, offset, n):
    # PLMS mode repeats the second time ([g_{n-1}, g_{n-2}, g_{n-2}, ...]); its distinct times are
    # the grid. linspace is covered by the DDIM comparison (PNDM uses the same expression).
    s = PNDMScheduler(timestep_spacing=spacing, steps_offset=offset, skip_prk_steps=True)
    s.set_timesteps(n)
    expected = torch.unique_consecutive(s.timesteps).tolist()
    options = {"steps_offset": offset} if spacing == "leading" else {}
    assert _grid_times(spacing, n, **options) == expected


def test_documented_n10_examples():
    # diffusers-compat.md §2 and algorithms.md §5, T = 1000, n = 10.
    assert _grid_times("leading", 10) == list(range(900, -1, -100))
    assert _grid_times("leading", 10, steps_offset=1) == list(range(901, 0, -100))
    assert _grid_times("trailing", 10) == list(range(999, 98, -100))
    assert _grid_times("linspace", 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    # n = 27 leading: δ = 37, first time 26·37 = 962; SD-1.5 n = 20, offset 1: 951 ... 1.
    assert _grid_times("leading", 27)[:2] == [962, 925]
    assert _grid_times("leading", 20, steps_offset=1) == list(range(951, 0, -50))


def test_uniform_skip_of_the_original_code():
    # range(0, T, floor(T/S)): S = 30 gives skip 33 and 31 model times 990, ..., 0.
    times = _grid_times("uniform", 30)
    assert len(times) == 31 and times == list(range(990, -1, -33))
    assert _grid_times("uniform", 50)[0] == 980
    assert _grid_times("uniform", 50) == list(range(0, T, T // 50))[::-1]


def _ddim_quadratic_original(n: int) -> list[int]:
    # ermongroup/ddim runners/diffusion.py, skip_type == "quad".
    seq = np.linspace(0, np.sqrt(T * 0.8), n) ** 2
    return [int(s) for s in list(seq)]


# 16, 26: numpy's rounding puts a time on the other side of an integer than exact arithmetic.
@pytest.mark.parametrize("n", [10, 16, 20, 26])
def test_ddim_quadratic_equals_ddim_where_distinct(n):
    raw = _ddim_quadratic_original(n)
    assert len(set(raw)) == n
    assert _grid_times("ddim_quadratic", n) == raw[::-1]


@pytest.mark.parametrize(("n", "distinct"), [(50, 49), (100, 96)])
def test_ddim_quadratic_moves_repeats_up(n, distinct):
    # DDIM's floor repeats low times (algorithms.md §5: S = 50 has 49 distinct, S = 100 has 96).
    raw = _ddim_quadratic_original(n)
    assert len(set(raw)) == distinct
    ours = _grid_times("ddim_quadratic", n)[::-1]
    assert len(set(ours)) == n and all(b > a for a, b in zip(ours, ours[1:], strict=False))
    # Each repeat moves to the next free integer: ours_i = max(raw_i, ours_{i-1} + 1).
    expected = [raw[0]]
    for r in raw[1:]:
        expected.append(max(r, expected[-1] + 1))
    assert ours == expected
    assert ours[-1] == raw[-1] == 800  # sqrt(0.8 T)² must not floor to 799
    if n == 50:
        assert raw[:5] == [0, 0, 1, 2, 5]


@pytest.mark.parametrize("schedule", [VP, DDPM], ids=["vp", "ddpm"])
@pytest.mark.parametrize("n", [1, 10, 37])
def test_edm_grid(schedule, n):
    grid = make_grid("edm", schedule, n)
    assert grid[0] == schedule.t_max and grid[-1] == schedule.t_min  # exact end points
    sig = schedule.sigma_tilde(grid).numpy()
    lo, hi = (
        float(schedule.sigma_tilde(schedule.t_min)),
        float(schedule.sigma_tilde(schedule.t_max)),
    )
    i = np.arange(n + 1) / n
    expected = (hi ** (1 / 7) + i * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7  # EDM eq. (5), ρ = 7
    np.testing.assert_allclose(sig, expected, rtol=1e-11)


def test_edm_explicit_sigmas_and_rho():
    # EDM's CIFAR-10 range 0.002..80 does not fit the DDPM schedule; use the VP one.
    grid = make_grid("edm", VP, 8, sigma_min=0.05, sigma_max=80.0, rho=3.0)
    sig = VP.sigma_tilde(grid).numpy()
    expected = (80 ** (1 / 3) + np.arange(9) / 8 * (0.05 ** (1 / 3) - 80 ** (1 / 3))) ** 3
    np.testing.assert_allclose(sig, expected, rtol=1e-12)


@pytest.mark.parametrize("schedule", [VP, DDPM], ids=["vp", "ddpm"])
def test_logsnr_grid(schedule):
    n = 12
    grid = make_grid("logsnr", schedule, n)
    assert grid[0] == schedule.t_max and grid[-1] == schedule.t_min
    log_sig = schedule.sigma_tilde(grid).log().numpy()
    np.testing.assert_allclose(np.diff(log_sig), (log_sig[-1] - log_sig[0]) / n, rtol=1e-9)


def test_time_grids_closed_forms():
    # algorithms.md §5: uniform t_i = 1 − (i/N)(1 − ε); quad t_i = ε + (1 − ε)(1 − i/N)²; ε = 1e-3.
    i = torch.arange(11, dtype=torch.float64) / 10
    torch.testing.assert_close(
        make_grid("time_uniform", VP, 10), 1 - i * (1 - 1e-3), rtol=1e-15, atol=1e-15
    )
    torch.testing.assert_close(
        make_grid("time_quadratic", VP, 10),
        1e-3 + (1 - 1e-3) * (1 - i) ** 2,
        rtol=1e-15,
        atol=1e-15,
    )
    rho2 = (1 + i * (math.sqrt(1e-3) - 1)) ** 2
    torch.testing.assert_close(
        make_grid("time_uniform", VP, 10, rho=2.0), rho2, rtol=1e-14, atol=1e-15
    )


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("n", [1, 4, 25, 100])
def test_every_grid_strictly_decreasing_with_n_plus_1_entries(name, n):
    continuous = name in ("edm", "logsnr", "time_uniform", "time_quadratic")
    schedules = [DDPM, VP] if continuous else [DDPM]
    for schedule in schedules:
        grid = make_grid(name, schedule, n)
        assert grid.ndim == 1 and grid.dtype == torch.float64
        assert bool((grid[1:] < grid[:-1]).all()), (name, n, grid)
        if name == "uniform":  # ceil(T / floor(T/n)) model times, which can exceed n
            assert len(grid) == math.ceil(T / (T // n)) + 1
        else:
            assert len(grid) == n + 1
        # Every time is inside the schedule, target included.
        schedule.alpha_bar(grid)


def test_unknown_grid_lists_choices():
    with pytest.raises(
        ValueError, match="timestep spacing must be one of .*, got 'leadin'"
    ) as info:
        make_grid("leadin", DDPM, 10)
    assert all(name in str(info.value) for name in GRIDS)


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_step_counts(name, n):
    with pytest.raises(ValueError, match="integer >= 1"):
        make_grid(name, DDPM, n)


@pytest.mark.parametrize("name", ["leading", "trailing", "linspace", "uniform", "ddim_quadratic"])
def test_integer_grids_reject_too_many_steps_and_continuous_schedules(name):
    with pytest.raises(ValueError, match="more than num_train_timesteps=1000"):
        make_grid(name, DDPM, 1001)
    with pytest.raises(ValueError, match="discrete schedule"):
        make_grid(name, VP, 10)


def test_other_bad_options():
    with pytest.raises(ValueError, match="steps_offset"):
        make_grid("leading", DDPM, 1000, steps_offset=1)  # would need ᾱ[1000]
    with pytest.raises(ValueError, match="rho must be a positive finite number"):
        make_grid("edm", VP, 10, rho=0.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        make_grid("logsnr", VP, 10, sigma_min=2.0, sigma_max=1.0)


# --- the step-count rule and the scheduler-config rule ------------------------------------------


@pytest.mark.parametrize("n", [0, -3, 2.5, 10.0, True, None, "10"])
def test_one_step_count_rule_everywhere(n):
    """grids, samplers.nfe and the scheduler reject the same step counts with one wording."""
    checks = [
        lambda: check_num_steps(n),
        lambda: make_grid("leading", DDPM, n),
        lambda: make_grid("edm", VP, n),
        lambda: nfe("ddim", n),
        lambda: OurPNDMScheduler().set_timesteps(n),
    ]
    for check in checks:
        with pytest.raises(
            ValueError, match=f"num_inference_steps must be an integer >= 1, got {n!r}"
        ):
            check()


def test_step_count_upper_bound_is_num_train_timesteps():
    assert check_num_steps(np.int64(1000), 1000) == 1000
    assert check_num_steps(MAX_STEPS) == MAX_STEPS  # no schedule: pndm's own bound (issue 22)
    with pytest.raises(ValueError, match=r"in \[1, 1000\], got 5000: more than pndm's limit"):
        check_num_steps(5000, 10_000)  # a longer schedule does not lift it
    message = (
        r"num_inference_steps must be an integer in \[1, 1000\], got 1001: more than num_train"
    )
    for check in (
        lambda: check_num_steps(1001, 1000),
        lambda: make_grid("trailing", DDPM, 1001),
        lambda: OurPNDMScheduler().set_timesteps(1001),
    ):
        with pytest.raises(ValueError, match=message):
            check()


def test_default_method():
    assert default_method({"skip_prk_steps": True}) == "plms"
    assert default_method({"skip_prk_steps": False}) == default_method({}) == "f-pndm"


@pytest.mark.parametrize(
    ("config", "n", "expected"),
    [
        ({}, 10, [*range(900, -1, -100), -1]),
        ({"steps_offset": 1}, 10, [*range(901, 0, -100), -1]),
        ({"timestep_spacing": "trailing"}, 10, [*range(999, 98, -100), -1]),
        ({"timestep_spacing": "linspace"}, 4, [999, 666, 333, 0, -1]),
    ],
)
def test_scheduler_grid_reads_the_config(config, n, expected):
    grid = scheduler_grid(config, DDPM, n)
    assert grid.dtype == torch.float64 and grid.device.type == "cpu"
    assert grid.tolist() == expected
    assert torch.equal(OurPNDMScheduler(**config).grid(n), grid)


def test_scheduler_grid_explicit_timesteps_and_errors():
    assert scheduler_grid({}, DDPM, timesteps=[999, 500.5, 3]).tolist() == [999, 500.5, 3, -1]
    # a full grid (a tuned grid file's) already ends at the target: no second -1
    assert scheduler_grid({}, DDPM, timesteps=[999, 500.5, 3, -1]).tolist() == [999, 500.5, 3, -1]
    for bad in ([10, 20], [], [1000, 5], [5, -2], [-1], [5, float("nan")], [5, -1, -1]):
        with pytest.raises(ValueError, match=r"timesteps must be strictly decreasing values in"):
            scheduler_grid({}, DDPM, timesteps=bad)
    with pytest.raises(ValueError, match="num_train_timesteps=10; they must agree"):
        scheduler_grid({"num_train_timesteps": 10}, DDPM, 5)
    with pytest.raises(
        ValueError,
        match="timestep_spacing must be one of linspace, leading, trailing, got 'uniform'",
    ):
        scheduler_grid({"timestep_spacing": "uniform"}, DDPM, 5)
    with pytest.raises(ValueError, match="steps_offset"):
        scheduler_grid({"steps_offset": 1}, DDPM, 1000)
