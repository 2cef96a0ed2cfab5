"""The method form: every fixed-step method is a plan whose run asks for its model calls one by
one (`pndm.samplers.calls`); the pure loop and any other driver run the same arithmetic."""

from __future__ import annotations

import pytest
import torch

from pndm import grids
from pndm.samplers import SAMPLERS
from pndm.samplers.calls import dry_run, evaluate
from pndm.schedule import NoiseSchedule, VPSchedule

DDPM = NoiseSchedule.from_config({})
VP = VPSchedule()
FIXED = [name for name, method in SAMPLERS.items() if not method.adaptive]
OPTIONS = {  # a non-default option set per method, where it has options
    "ddim": {"clip_sample": True, "clip_sample_range": 0.5},
    "s-pndm": {"clip_sample": True, "clip_sample_range": 0.5},
    "f-pndm": {},
    "fon": {},
    "fon-orig": {"index_size": 2.0},
    "plms": {"lower_order_final": True},
    "ipndm": {"afs": True, "denoise_to_zero": True},
    "vab": {"order": 2, "lower_order_final": True},
    "pec": {"order": 4},
    "dpmpp-2m": {"lower_order_final": True},
    "pec-data": {"order": 3, "clip_sample": True},
}


def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)


def sample(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)).to(dtype)


def by_hand(name: str, x: torch.Tensor, grid: torch.Tensor, schedule, **options):
    """Another driver of the same plan: answers each request in turn, recording the times."""
    calls = SAMPLERS[name].plan(x, grid, schedule, **options)(x)
    times = []
    try:
        request = next(calls)
        while True:
            times.append(float(request[1]))
            request = calls.send((request[0], evaluate(eps, *request)))
    except StopIteration as done:
        return done.value, times


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_method_driven_by_hand_is_the_pure_sampler_bit_for_bit(name, dtype) -> None:
    x, grid = sample(dtype), grids.trailing(DDPM, 5)
    options = {} if name == "ipndm" else OPTIONS[name]  # ipndm's afs + denoise: next test
    out, times = by_hand(name, x, grid, DDPM, **options)
    assert torch.equal(out, SAMPLERS[name](eps, x, grid, DDPM, **options))
    assert len(times) == SAMPLERS[name].nfe(5, **options)


@pytest.mark.parametrize("name", FIXED)
def test_the_dry_run_lists_the_calls_of_the_plan(name) -> None:
    """The times of a plan do not depend on x or ε: a dry run lists them, as many as the NFE."""
    grid, options = grids.edm(VP, 6), OPTIONS[name]
    plan = SAMPLERS[name].plan(sample(), grid, VP, **options)
    times, scale = dry_run(plan, torch.zeros((), dtype=torch.float32))
    out, real_times = by_hand(name, sample(), grid, VP, **options)
    assert torch.equal(out, SAMPLERS[name](eps, sample(), grid, VP, **options))
    assert times == pytest.approx(real_times, rel=0, abs=1e-6)
    assert len(times) == SAMPLERS[name].nfe(6, **options)
    assert (scale is not None) == bool(options.get("afs"))  # iPNDM's analytic first step only


@pytest.mark.parametrize("name", FIXED)
def test_a_restarted_plan_calls_once_per_step(name) -> None:
    """A run started mid-schedule (diffusers' set_begin_index): no warm-up, one call per step."""
    grid = grids.leading(DDPM, 7)[2:-1]  # 714 to 0: a trained target, for denoise_to_zero
    times, scale = dry_run(
        SAMPLERS[name].plan(sample(), grid, DDPM, restart=True, **OPTIONS[name]), sample()
    )
    extra = [float(grid[-1])] if OPTIONS[name].get("denoise_to_zero") else []
    assert times == grid[:-1].tolist() + extra
    assert scale is None


def test_adaptive_methods_have_no_plan() -> None:
    for name in ("pf", "pec-adaptive"):
        with pytest.raises(ValueError, match="adaptive"):
            SAMPLERS[name].plan(sample(), grids.edm(VP, 4), VP)


def test_dpmpp_lower_order_final_on_a_zero_length_grid_is_the_identity() -> None:
    """A grid whose only step goes to the same ᾱ (t = 0 -> -1 with final ᾱ = ᾱ_0) used to crash
    with a torch reduction error under lower_order_final; the step is the identity."""
    x = sample(torch.float64)
    out = SAMPLERS["dpmpp-2m"](eps, x, grids.linspace(DDPM, 1), DDPM, lower_order_final=True)
    assert torch.allclose(out, x, rtol=1e-12, atol=0)
