"""Tuned time grids: the grid contract, exact NFE, never worse than the start, the optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import Counter

from pndm import grids
from pndm.analytic import GaussianMixture, PointMass, gaussian_flow
from pndm.grids import final_target, lowest_model_time
from pndm.samplers import SAMPLERS, nfe
from pndm.schedule import NoiseSchedule, VPSchedule
from pndm.tuning.api import tune, tune_timesteps
from pndm.tuning.nelder_mead import nelder_mead
from pndm.tuning.objective import Objective, rms, teacher
from pndm.tuning.search import option_combinations, refusal, screen, steps_for_nfe
from pndm.tuning.spaces import LogSigmaGrid, start_grids

VP = VPSchedule()
DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
ADAPTIVE = ("pf", "pec-adaptive")
FIXED = [name for name in SAMPLERS if name not in ADAPTIVE]
# A converted original-code checkpoint: t_min = -1 is also the target; model times stay >= 0.
OFFSET = NoiseSchedule.from_config(
    {"num_train_timesteps": 1000, "beta_schedule": "linear", "alpha_index_offset": 1}
)
MEAN, STD = 0.4, 0.3  # the single Gaussian N(MEAN, STD²), whose exact flow is known


def _noise(n: int, seed: int, shape=(3, 4, 4)) -> torch.Tensor:
    return torch.randn(
        n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(5)
    means = 0.5 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    return GaussianMixture([0.6, 0.4], means, [0.3, 0.2])


def _reachable_nfe(name: str) -> int:
    """An NFE the method reaches with a few steps (f-pndm and fon cost N + 9)."""
    return nfe(name, 4)


@pytest.mark.parametrize("schedule", [DDPM, VP, OFFSET], ids=["discrete", "vp", "offset"])
@pytest.mark.parametrize("name", FIXED)
def test_tuned_grid_contract_and_exact_nfe(name, schedule):
    """Strictly decreasing, t_max first, the final target last, exactly the requested calls."""
    eps_fn = _mixture().eps_fn(schedule)
    target_nfe = _reachable_nfe(name)
    times = tune_timesteps(eps_fn, schedule, _noise(4, 0), method=name, nfe=target_nfe, budget=6)
    assert times.dtype == torch.float64
    assert bool((times[1:] < times[:-1]).all())
    assert float(times[0]) == schedule.t_max
    assert float(times[-1]) == final_target(schedule)
    assert float(times[-2]) > lowest_model_time(schedule)  # free, never pinned at t = 0
    counter = Counter(eps_fn)
    SAMPLERS[name](counter, _noise(2, 1), times, schedule)
    assert counter.calls == target_nfe


def test_final_target_is_the_default_grids():
    assert final_target(DDPM) == float(grids.leading(DDPM, 10)[-1]) == -1.0
    assert final_target(VP) == float(grids.edm(VP, 10)[-1]) == VP.t_min


@pytest.mark.parametrize("name", ["ipndm", "pec-data", "dpmpp-2m"])
def test_option_search_keeps_the_nfe(name):
    eps_fn = _mixture().eps_fn(DDPM)
    counter = Counter(eps_fn)
    result = tune(counter, DDPM, _noise(4, 0), method=name, nfe=5, search_options=True, budget=4)
    assert counter.calls == result.model_calls
    run = Counter(eps_fn)
    SAMPLERS[name](run, _noise(2, 1), result.timesteps, DDPM, **result.options)
    assert run.calls == 5 == result.nfe


def test_option_combinations_cover_flags_and_orders():
    combos = option_combinations("ipndm", {"clip_sample": False})
    assert len(combos) == 8 and all(c["clip_sample"] is False for c in combos)
    assert {c["afs"] for c in combos} == {False, True}
    orders = {c["order"] for c in option_combinations("pec-data", {})}
    assert orders == {1, 2, 3, 4}  # 4 is refused by pec-data's dry run, kept for vab and pec
    assert refusal("pec-data", DDPM, 5, {"order": 4}) is not None
    assert refusal("vab", DDPM, 5, {"order": 4}) is None
    assert option_combinations("ddim", {}) == [{"clip_sample": False}, {"clip_sample": True}]
    # the extra call of denoise_to_zero would be at t = -1 on a discrete schedule: not searched
    assert all("denoise_to_zero" not in c for c in option_combinations("ipndm", {}, DDPM))
    assert any(c.get("denoise_to_zero") for c in option_combinations("ipndm", {}, VP))


class _ScriptedObjective:
    """An objective whose error is 1 everywhere except one option set on one start grid."""

    schedule = DDPM

    def __init__(self, best: dict, grid_name: str) -> None:
        self.best, self.grid = best, start_grids(DDPM, steps_for_nfe("ipndm", 5, best))[grid_name]
        self.seen: list[tuple[dict, torch.Tensor]] = []

    def __call__(self, method: str, grid: torch.Tensor, options: dict) -> float:
        self.seen.append((options, grid))
        hit = options == self.best and torch.equal(grid, self.grid)
        return 0.5 if hit else 1.0


def test_option_screen_scores_every_start_grid():
    """An option set whose only good start is the quadratic grid (as iPNDM afs + lower_order_final
    on the shipped model at NFE 5) must survive the screen: each set is scored at its best start."""
    combos = option_combinations("ipndm", {}, DDPM)
    best = {"afs": True, "lower_order_final": True, "clip_sample": False}
    objective = _ScriptedObjective(best, "time_quadratic")
    assert screen(objective, "ipndm", 5, combos)[0] == best
    for options in combos:
        starts = start_grids(DDPM, steps_for_nfe("ipndm", 5, options)).values()
        scored = [grid for o, grid in objective.seen if o == options]
        assert len(scored) == len(starts)
        assert all(any(torch.equal(grid, start) for grid in scored) for start in starts)


def test_the_objective_runs_each_grid_once():
    """The screen's start grids are tune_grid's starts: scored once, the model not called again;
    another grid, options or calibration is a new run."""
    from pndm.calibration import Calibration

    counter = Counter(_gaussian_eps)
    noise = _noise(2, 0)
    objective = Objective(counter, VP, noise, noise, None)
    grid = grids.edm(VP, 4)
    first = objective("ipndm", grid, {"afs": False})
    assert counter.calls == 4
    assert objective("ipndm", grid.clone(), {"afs": False}) == first and counter.calls == 4
    objective("ipndm", grid, {"afs": True})
    calibration = Calibration.identity([float(t) for t in grid[:4]])
    objective("ipndm", grid, {"afs": False}, calibration)
    objective("ipndm", grids.logsnr(VP, 4), {"afs": False})
    assert counter.calls == 4 + 3 + 4 + 4  # afs skips the call at t_max


def test_afs_and_denoise_change_the_steps_not_the_nfe():
    assert steps_for_nfe("ipndm", 5, {"afs": True}) == 6
    assert steps_for_nfe("ipndm", 5, {"denoise_to_zero": True}) == 4
    assert steps_for_nfe("plms", 5, {}) == 4


def _gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ε of data N(MEAN, STD²) at time t on VP: (x - sqrt(ᾱ)μ) sqrt(1-ᾱ)/(ᾱs² + 1 - ᾱ)."""
    a = VP.alpha_bar(t).reshape(-1, *([1] * (x.ndim - 1)))
    return (x - a.sqrt() * MEAN) * (1 - a).sqrt() / (a * STD**2 + 1 - a)


@pytest.mark.parametrize("name", ["ddim", "ipndm", "vab", "pec-data"])
def test_tuning_on_a_gaussian_never_worsens_its_start(name):
    """Single Gaussian, exact flow as the reference. The tuned grid is judged on other noise: the
    flow and every solver are affine in x_T here, so the error generalises; 1 % slack covers the
    RMS of 64 fresh samples differing from that of the 64 tuning ones."""
    train, test = _noise(64, 0), _noise(64, 1)
    t0, t1 = torch.tensor(VP.t_max), torch.tensor(VP.t_min)
    exact = {
        k: gaussian_flow(x, t0, t1, VP, MEAN, STD) for k, x in (("train", train), ("test", test))
    }
    result = tune(_gaussian_eps, VP, train, method=name, nfe=5, reference=exact["train"], budget=60)
    assert result.error <= result.start_error
    start = LogSigmaGrid(VP, steps_for_nfe(name, 5, {}))
    from pndm.tuning.spaces import start_grid

    start_times = start_grid(result.start_grid, VP, start.steps)
    before = rms(SAMPLERS[name](_gaussian_eps, test, start_times, VP), exact["test"])
    after = rms(SAMPLERS[name](_gaussian_eps, test, result.timesteps, VP), exact["test"])
    assert after <= before * 1.01


def test_tuning_a_point_mass_reaches_the_exact_answer():
    """On a point mass every φ-based method is exact on any grid: the tuned error is round-off."""
    mu = torch.full((3, 4, 4), 0.25, dtype=torch.float64)
    eps_fn = PointMass(mu).eps_fn(DDPM)
    x = _noise(4, 0)
    result = tune(eps_fn, DDPM, x, method="ipndm", nfe=5, budget=4)
    assert result.error < 1e-12 and result.start_error < 1e-12


def test_teacher_matches_the_exact_gaussian_flow():
    x = _noise(8, 0)
    exact = gaussian_flow(x, torch.tensor(VP.t_max), torch.tensor(VP.t_min), VP, MEAN, STD)
    assert rms(teacher(_gaussian_eps, VP, x), exact) < 2e-7  # measured 6e-8


@pytest.mark.parametrize("schedule", [DDPM, VP], ids=["discrete", "vp"])
def test_log_sigma_parametrisation_round_trips_and_stays_ordered(schedule):
    space = LogSigmaGrid(schedule, 6)
    rng = np.random.default_rng(0)
    for z in [np.zeros(5), rng.normal(size=5) * 3, np.array([30.0, -30.0, 0.0, 30.0, -30.0])]:
        times = space.times(z)
        assert times.numel() == 7 and bool((times[1:] < times[:-1]).all())
        assert float(times[0]) == schedule.t_max and float(times[-1]) == final_target(schedule)
        assert float(times[-2]) > lowest_model_time(schedule)  # never pinned at the lowest time
    z = rng.normal(size=5)
    np.testing.assert_allclose(space.params(space.times(z)), z, atol=1e-6)


def test_nelder_mead_finds_a_quadratic_minimum_within_budget():
    centre = np.array([1.0, -2.0, 0.5])
    calls = []

    def f(z):
        calls.append(1)
        return float(((z - centre) ** 2).sum())

    z, value, history = nelder_mead(f, np.zeros(3), budget=200)
    assert value < 1e-6 and np.allclose(z, centre, atol=1e-3)
    assert len(calls) <= 200 + 3 + 1 and len(history) == len(calls)  # budget + dim + 1 at most
    assert all(a >= b for a, b in zip(history, history[1:], strict=False))


def test_nelder_mead_ignores_non_finite_points():
    z, value, _ = nelder_mead(lambda z: math.inf if z[0] > 0.2 else float((z**2).sum()),
                              np.array([0.1, 0.1]), budget=80)  # fmt: skip
    assert value <= 0.02 and z[0] <= 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pndmm", "nfe": 5}, "method must be one of ddim, s-pndm"),
        ({"method": "ipndm", "nfe": 0}, "nfe must be an integer >= 1"),
        ({"method": "ipndm", "nfe": 5.0}, "nfe must be an integer >= 1"),
        ({"method": "f-pndm", "nfe": 5}, "cannot make exactly 5 model calls; reachable"),
        ({"method": "pf", "nfe": 5}, "is adaptive"),
        ({"method": "ipndm", "nfe": 5, "reference": torch.zeros(3)}, "reference must be a tensor"),
        ({"method": "ipndm", "nfe": 5, "bogus": 1}, "unknown option(s) 'bogus'"),
    ],
)
def test_bad_requests_are_one_line_errors(kwargs, message):
    eps_fn = _mixture().eps_fn(DDPM)
    with pytest.raises(ValueError) as err:
        tune(eps_fn, DDPM, _noise(2, 0), budget=2, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_schedule_without_sigma_is_refused():
    class Bare:
        def alpha_bar(self, t):
            return VP.alpha_bar(t)

    with pytest.raises(ValueError, match="tuning needs a full Schedule"):
        tune(_gaussian_eps, Bare(), _noise(2, 0), method="ddim", nfe=3)


class _Delegating:
    """A schedule's members under another type, with ``discrete`` given (left out when None)."""

    def __init__(self, schedule: NoiseSchedule, discrete: bool | None) -> None:
        self.schedule = schedule
        if discrete is not None:
            self.discrete = discrete

    def __getattr__(self, name: str):
        if name in ("alpha_bar", "sigma_tilde", "timestep_from_sigma", "t_max", "t_min"):
            return getattr(self.schedule, name)
        raise AttributeError(name)


def test_a_schedule_is_the_schedule_protocol_and_discrete_decides_the_target():
    """`Schedule` (with ``discrete``) is what the tuner checks and reads: a schedule without
    ``discrete`` is refused in one line; ``discrete`` alone decides the target and lowest time."""
    with pytest.raises(ValueError) as err:
        tune(_gaussian_eps, _Delegating(DDPM, None), _noise(2, 0), method="ddim", nfe=3)
    message = str(err.value)
    assert "tuning needs a full Schedule" in message and "discrete" in message
    assert "_Delegating lacks discrete" in message and "\n" not in message
    assert final_target(_Delegating(DDPM, True)) == final_target(DDPM) == -1
    assert final_target(_Delegating(DDPM, False)) == DDPM.t_min == 0
    assert lowest_model_time(_Delegating(OFFSET, True)) == lowest_model_time(OFFSET) == 0
    assert lowest_model_time(_Delegating(OFFSET, False)) == OFFSET.t_min == -1


def test_two_step_ddim_on_a_gaussian_finds_the_scanned_optimum():
    """A known optimum: DDIM with 2 calls has one free time. A scan of 2001 interior times (in
    log σ̃) on the exact Gaussian flow finds the best; the tuner must reach it within 1 %, from
    its own starts, and never end above the best start grid."""
    x = _noise(32, 0)
    t0, t1 = torch.tensor(VP.t_max), torch.tensor(VP.t_min)
    exact = gaussian_flow(x, t0, t1, VP, MEAN, STD)
    space = LogSigmaGrid(VP, 2)
    scan = [rms(SAMPLERS["ddim"](_gaussian_eps, x, space.times(np.array([z])), VP), exact)
            for z in np.linspace(-8, 8, 2001)]  # fmt: skip
    result = tune(_gaussian_eps, VP, x, method="ddim", nfe=2, reference=exact, budget=40)
    assert result.error <= min(scan) * 1.01
    assert result.error < result.start_error  # the optimum is not a start grid here


def test_bad_option_values_fail_before_any_model_call():
    counter = Counter(_mixture().eps_fn(DDPM))
    for options in ({"order": 7}, {"clip_sample": "yes"}, {"lower_order_final": 1}):
        with pytest.raises(ValueError) as err:
            tune(counter, DDPM, _noise(2, 0), method="vab", nfe=4, **options)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="budget must be an integer"):
        tune(counter, DDPM, _noise(2, 0), method="vab", nfe=4, budget="5")
    assert counter.calls == 0


def test_a_model_returning_nan_is_an_error_not_a_grid():
    def nan_eps(x, t):
        return torch.full_like(x, math.nan)

    with pytest.raises(ValueError, match="non-finite result on every grid"):
        tune(nan_eps, DDPM, _noise(2, 0), method="ddim", nfe=3, reference=_noise(2, 1), budget=3)
