"""PNDMScheduler against diffusers' PNDMScheduler (0.42.1): config, files, timesteps, full loops.

Where diffusers' stride arithmetic and its own grid agree, ours equals diffusers (final samples to
1e-5 in relative norm, float32: diffusers' float32 ᾱ alone is 5e-6 off at n = 1000). Where they
disagree (linspace, trailing with T % n != 0, odd strides in PRK mode), ours follows the grid and
equals the pure sampler, and diffusers visibly does not.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import rel
from diffusers import PNDMScheduler as DiffusersPNDM

from pndm import PNDMScheduler
from pndm.samplers import SAMPLERS

T = 1000
SCHEDULES = {
    "linear": {},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "trained_betas": {"trained_betas": (np.linspace(1e-4, 0.02, T) ** 0.9).tolist()},
    "alpha_one": {"set_alpha_to_one": True},
    "offset": {"steps_offset": 1},
    "v_prediction": {"prediction_type": "v_prediction"},
}


def dummy_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic nonlinear model output (read as ε or v)."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)


def sample_tensor() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def dummy_sample_deter() -> torch.Tensor:
    """diffusers' test sample: arange(768) as (3, 8, 8, 4), / 768, permuted to (4, 3, 8, 8)."""
    return (torch.arange(768).reshape(3, 8, 8, 4) / 768).permute(3, 0, 1, 2)


def pair(**config) -> tuple[PNDMScheduler, DiffusersPNDM]:
    """Ours and diffusers' with one config; ours converts v as diffusers does (compat flag)."""
    ours = dict(config)
    if config.get("prediction_type") == "v_prediction":
        ours["v_prediction_compat"] = "diffusers"
    return PNDMScheduler(**ours), DiffusersPNDM(**config)


def run(scheduler, n: int, x: torch.Tensor | None = None) -> torch.Tensor:
    scheduler.set_timesteps(n)
    x = sample_tensor() if x is None else x
    for t in scheduler.timesteps:
        x = scheduler.step(dummy_model(x, t), t, x).prev_sample
    return x


def grid_agrees(s: PNDMScheduler, n: int) -> bool:
    """diffusers' stride arithmetic (t - T//n, mids at t - T//n//2) lands on our grid points."""
    grid, stride = s.grid(n).tolist(), T // n
    steps = list(zip(grid[:-1], grid[1:], strict=True))
    targets_agree = all(t - stride == u or (u < 0 and t - stride < 0) for t, u in steps)
    return targets_agree and (s.config.skip_prk_steps or stride % 2 == 0)


# ------------------------------------------------------------------------------------------------
# Config, attributes, files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_config_and_schedule_attributes_match(name: str) -> None:
    ours, theirs = pair(**SCHEDULES[name])
    expected = {k: v for k, v in theirs.config.items() if not k.startswith("_")}
    mine = {k: v for k, v in ours.config.items() if k != "v_prediction_compat"}
    assert mine == expected
    for attr in ("betas", "alphas", "alphas_cumprod"):
        torch.testing.assert_close(getattr(ours, attr), getattr(theirs, attr), rtol=2e-6, atol=0)
    torch.testing.assert_close(ours.final_alpha_cumprod, theirs.final_alpha_cumprod)
    assert ours._compatibles == theirs._compatibles
    for attr in ("order", "pndm_order", "init_noise_sigma"):  # diffusers' values, not ours again
        assert getattr(ours, attr) == getattr(theirs, attr)
    assert len(ours) == len(theirs)


@pytest.mark.parametrize("name", ["linear", "trained_betas", "offset"])
def test_saved_json_is_diffusers_json(tmp_path, name: str) -> None:
    ours, theirs = pair(**SCHEDULES[name])
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    upstream = json.loads((tmp_path / "theirs" / "scheduler_config.json").read_text())
    mine.pop("_diffusers_version")
    upstream.pop("_diffusers_version")
    assert mine == upstream


def test_files_load_both_ways(tmp_path) -> None:
    PNDMScheduler(skip_prk_steps=True, steps_offset=1).save_pretrained(tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = DiffusersPNDM.from_pretrained(tmp_path / "a")
    assert loaded.config.skip_prk_steps and loaded.config.steps_offset == 1
    DiffusersPNDM(beta_schedule="scaled_linear").save_pretrained(tmp_path / "b")
    assert PNDMScheduler.from_pretrained(tmp_path / "b").config.beta_schedule == "scaled_linear"


def test_pipeline_style_from_config_of_diffusers_config() -> None:
    """PNDMPipeline does PNDMScheduler.from_config(scheduler.config) on any diffusers config."""
    config = DiffusersPNDM(steps_offset=1).config
    assert dict(PNDMScheduler.from_config(config).config) == {
        k: v for k, v in config.items() if not k.startswith("_")
    }


# ------------------------------------------------------------------------------------------------
# Timesteps
# ------------------------------------------------------------------------------------------------

STEPS = [4, 5, 7, 10, 27, 50, 100, 333, 500, 1000]


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("skip", [False, True])
def test_leading_timesteps_match(skip: bool, offset: int) -> None:
    """Same timesteps, except F-PNDM's mid times for odd strides: t_{n+1} + δ/2, not + ⌊δ/2⌋."""
    ours, theirs = pair(skip_prk_steps=skip, steps_offset=offset)
    for n in STEPS[:-1] if offset else STEPS:  # offset 1 with n = T would call the model at T
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        shift = torch.zeros(len(theirs.timesteps), dtype=torch.float64)
        if not skip and (T // n) % 2:
            shift[[1, 2, 5, 6, 9, 10]] = 0.5  # the mid-time entries of the 3 Runge-Kutta steps
        assert torch.equal(ours.timesteps.double(), theirs.timesteps.double() + shift)
        assert np.array_equal(
            ours.prk_timesteps,
            theirs.prk_timesteps + shift[:12].numpy()[: len(theirs.prk_timesteps)],
        )
        assert np.array_equal(ours.plms_timesteps, theirs.plms_timesteps)


def test_upstream_steps_offset_timesteps() -> None:
    s = PNDMScheduler(steps_offset=1)
    s.set_timesteps(10)
    expected = [901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301]
    assert s.timesteps.tolist() == [*expected, 201, 101, 1]
    assert s.timesteps.dtype == torch.int64


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_skip_mode_timesteps_match_for_every_spacing(spacing: str) -> None:
    ours, theirs = pair(skip_prk_steps=True, timestep_spacing=spacing)
    for n in STEPS:
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        assert torch.equal(ours.timesteps, theirs.timesteps)


# ------------------------------------------------------------------------------------------------
# Full loops
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("skip", [False, True], ids=["prk", "skip_prk"])
def test_full_loops_match_diffusers(name: str, skip: bool) -> None:
    ours, theirs = pair(skip_prk_steps=skip, **SCHEDULES[name])
    steps = STEPS if name in ("linear", "v_prediction") else [4, 5, 10, 50]
    compared = 0
    for n in steps:
        if grid_agrees(ours, n):
            assert rel(run(ours, n), run(theirs, n)) < 1e-5, n
            compared += 1
    assert compared >= 4


def test_trailing_full_loops_match_where_the_grid_is_even() -> None:
    for skip in (False, True):
        ours, theirs = pair(skip_prk_steps=skip, timestep_spacing="trailing")
        for n in (4, 10, 50, 100):  # T % n == 0: stride arithmetic lands on the grid
            assert grid_agrees(ours, n)
            assert rel(run(ours, n), run(theirs, n)) < 1e-5


@pytest.mark.parametrize(
    ("spacing", "skip", "n"),
    [
        ("linspace", True, 10),  # 999 -> 899 by stride, grid says 888 (#11347)
        ("linspace", False, 10),
        ("trailing", True, 7),  # T % n != 0: 999 -> 857 by stride, grid says 856 (#12633)
        ("trailing", False, 7),
        ("leading", False, 27),  # odd stride 37: stage 1 stepped to 944, model called at 943
    ],
)
def test_where_diffusers_leaves_its_grid_ours_follows_it(spacing: str, skip: bool, n: int) -> None:
    ours, theirs = pair(skip_prk_steps=skip, timestep_spacing=spacing)
    assert not grid_agrees(ours, n)
    method = "plms" if skip else "f-pndm"
    exact = SAMPLERS[method](dummy_model, sample_tensor(), ours.grid(n), ours.schedule)
    assert rel(run(ours, n), exact) < 1e-6
    assert rel(run(theirs, n), exact) > 1e-4


# ------------------------------------------------------------------------------------------------
# Upstream golden numbers (diffusers tests/schedulers/test_scheduler_pndm.py)
# ------------------------------------------------------------------------------------------------


def upstream_full_loop(**config) -> torch.Tensor:
    """diffusers' ``full_loop``: step_prk over prk_timesteps, then step_plms over plms_timesteps."""
    s = PNDMScheduler(
        **{"num_train_timesteps": T, "beta_start": 0.0001, "beta_end": 0.02, **config}
    )
    s.set_timesteps(10)
    x = dummy_sample_deter()
    model = lambda x, t: x * t / (t + 1)  # noqa: E731
    for t in s.prk_timesteps:
        x = s.step_prk(model(x, t), t, x).prev_sample
    for t in s.plms_timesteps:
        x = s.step_plms(model(x, t), t, x).prev_sample
    return x


@pytest.mark.parametrize(
    ("config", "total", "mean"),
    [
        ({}, 198.1318, 0.2580),
        ({"prediction_type": "v_prediction", "v_prediction_compat": "diffusers"}, 67.3986, 0.0878),
        ({"set_alpha_to_one": True, "beta_start": 0.01}, 230.0399, 0.2995),
        ({"set_alpha_to_one": False, "beta_start": 0.01}, 186.9482, 0.2434),
    ],
)
def test_upstream_full_loop_sums(config: dict, total: float, mean: float) -> None:
    x = upstream_full_loop(**config)
    assert abs(x.abs().sum().item() - total) < 1e-2
    assert abs(x.abs().mean().item() - mean) < 1e-3


@pytest.mark.parametrize(
    ("config", "n", "total"),
    [
        ({"skip_prk_steps": True}, 10, 197.7156),
        ({"steps_offset": 1}, 10, 199.3816),
        ({"timestep_spacing": "trailing"}, 10, 198.0860),
        ({"beta_schedule": "squaredcos_cap_v2"}, 10, 196.4030),
        ({}, 50, 197.7411),
    ],
)
def test_other_step_loop_sums(config: dict, n: int, total: float) -> None:
    s = PNDMScheduler(**config)
    s.set_timesteps(n)
    x = dummy_sample_deter()
    for t in s.timesteps:
        x = s.step(x * t / (t + 1), t, x).prev_sample
    assert abs(x.abs().sum().item() - total) < 1e-2


def test_v_prediction_default_is_not_the_diffusers_bug() -> None:
    """Converting each v at its own (x, t) changes upstream's 67.3986 (#14816)."""
    x = upstream_full_loop(prediction_type="v_prediction")
    assert abs(x.abs().sum().item() - 67.3986) > 1.0
