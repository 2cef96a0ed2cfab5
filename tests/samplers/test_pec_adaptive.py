"""pec-adaptive: the tolerance sets the error, it beats pf in model calls, counts and lands right.

Oracles: a 3-component Gaussian mixture on (8, 3, 4, 4) float64 samples, whose ε is exact, solved
from t_0 to t_N by scipy DOP853 at rtol = atol = 1e-13 in σ̃ (`pndm.analytic.reference_flow`;
its own error is far below every tolerance used here); a point mass and a single Gaussian, whose
flows are closed forms. Errors are the RMS over all samples and pixels, as in benchmarks/.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from conftest import Counter

from pndm.analytic import GaussianMixture, PointMass, gaussian_flow, reference_flow
from pndm.samplers import SAMPLERS, adaptive, nfe
from pndm.samplers import pec_adaptive as module
from pndm.samplers import pf as pf_module
from pndm.schedule import NoiseSchedule, VPSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

DISCRETE = NoiseSchedule.from_config({})  # the shipped model's: linear β 1e-4..0.02, T = 1000
VP = VPSchedule()
ENDS = {"discrete": (DISCRETE, 999.0, 0.0), "vp": (VP, 1.0, 1e-3)}
METHOD = SAMPLERS["pec-adaptive"]


@functools.cache
def _problem(name: str):
    """(eps_fn, x_T, [t_0, t_N], schedule, reference x at t_N) for the mixture."""
    schedule, t0, t1 = ENDS[name]
    g = torch.Generator().manual_seed(0)
    means = torch.rand(3, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    gmm = GaussianMixture([0.5, 0.3, 0.2], means, [0.05, 0.1, 0.2])
    x = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    eps_fn = gmm.eps_fn(schedule)
    ref = reference_flow(eps_fn, x, t0, t1, schedule)
    return eps_fn, x, torch.tensor([t0, t1], dtype=torch.float64), schedule, ref


def _run(method: str, name: str, tol: float) -> tuple[float, int]:
    """(RMS error, NFE) of ``method`` at rtol = atol = tol on problem ``name``."""
    eps_fn, x, times, schedule, ref = _problem(name)
    stats: dict = {}
    out = SAMPLERS[method](eps_fn, x, times, schedule, rtol=tol, atol=tol, stats=stats)
    return float((out - ref).square().mean().sqrt()), stats["nfe"]


# --- accuracy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ENDS))
def test_error_follows_the_tolerance(name):
    """The error shrinks with the tolerance and stays within [tol/20, 2 tol].

    Each accepted step holds the order-k predictor's local error |x^c - x^p| to about
    tol·(1 + |x|) per pixel while the corrected (one order higher) point is kept, and the flow
    contracts at low noise, so the global RMS error is of the order of tol itself: measured
    0.55-0.75 tol on both schedules from 1e-3 to 1e-8 (0.17 at 1e-2, where the cap on the step
    binds). The band leaves room for other data.
    """
    errors = []
    for tol in (1e-3, 1e-5, 1e-7):
        error, _ = _run("pec-adaptive", name, tol)
        assert tol / 20 < error < 2 * tol, (tol, error)
        errors.append(error)
    assert errors[0] > errors[1] > errors[2]


def _calls_to_reach(method: str, name: str, target: float, budget: float = float("inf")) -> int:
    """NFE of the loosest tolerance 10^(-j/2), j = 4..18, whose error is <= target; the sweep
    stops early (returning that NFE) once a run costs more than ``budget``."""
    for j in range(4, 19):
        error, calls = _run(method, name, 10 ** (-j / 2))
        if error <= target or calls > budget:
            return calls
    raise AssertionError(f"{method} did not reach {target:g} on {name}")


@pytest.mark.parametrize(("name", "target"), [("vp", 1e-4), ("vp", 1e-6), ("discrete", 1e-4)])
def test_fewer_model_calls_than_pf_at_equal_error(name, target):
    """One call a step against DOPRI5's six. On the smooth VP schedule pf is at its best; on the
    discrete one, log ᾱ is piecewise linear in t, so pf's drift in t has a kink at every integer,
    while pec-adaptive steps in σ̃, where the flow is smooth (measured: vp 1e-4: 48 vs 74 calls,
    1e-6: 113 vs 176; discrete 1e-4: 48 vs 4274). pf's sweep stops once it costs more than ours."""
    ours = _calls_to_reach("pec-adaptive", name, target)
    theirs = _calls_to_reach("pf", name, target, budget=ours)  # no need to sweep pf further
    assert ours < theirs, (ours, theirs)


def test_single_gaussian_matches_its_closed_form():
    """N(μ, τ²I) data: the exact flow (algorithms.md §6). Tolerance 1e-7 gives an error below
    1e-6 (the band of test_error_follows_the_tolerance)."""
    mu, tau = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64), 0.1
    eps_fn = GaussianMixture([1.0], mu[None], [tau]).eps_fn(DISCRETE)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = METHOD(eps_fn, x, [999.0, 0.0], DISCRETE, rtol=1e-7, atol=1e-7)
    exact = gaussian_flow(x, 999.0, 0.0, DISCRETE, mu, tau)
    assert float((out - exact).abs().max()) < 1e-6


# --- counting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_stats_count_the_calls(set_alpha_to_one):
    """stats["nfe"] is the number of eps_fn calls: 1 at t_0 plus one per attempted step, the step
    onto the target needing none, so nfe = steps + rejected. No call at the target; with ᾱ = 1
    there, the last call is at the schedule's t_min."""
    schedule = NoiseSchedule.from_config({"set_alpha_to_one": set_alpha_to_one})
    gmm = GaussianMixture([0.6, 0.4], [[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], [0.1, 0.3])
    counter = Counter(gmm.eps_fn(schedule))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats: dict = {}
    METHOD(counter, x, [999.0, -1.0], schedule, rtol=1e-5, atol=1e-5, stats=stats)
    assert stats["nfe"] == len(counter.times) == stats["steps"] + stats["rejected"]
    assert 10 < stats["steps"] < 200 and stats["rejected"] < stats["steps"] / 2
    assert counter.times[0] == 999.0 and min(counter.times) > -1.0
    if set_alpha_to_one:
        assert counter.times[-1] == pytest.approx(0.0, abs=1e-9)
    assert nfe("pec-adaptive", 10) is None


def test_zero_length_interval_costs_nothing():
    """ᾱ(-1) = ᾱ(0) (set_alpha_to_one=False): t = 0 -> -1 is a zero-length step in σ̃, so
    999 -> -1 equals 999 -> 0 exactly, and 0 -> -1 alone returns x with no call. The times in
    between are ignored, like pf's."""
    eps_fn, x, _, _, _ = _problem("discrete")
    runs = [METHOD(eps_fn, x, times, DISCRETE) for times in ([999.0, 0.0], [999.0, 500.0, -1.0])]
    assert torch.equal(runs[0], runs[1])
    counter, stats = Counter(eps_fn), {}
    assert torch.equal(METHOD(counter, x, [0.0, -1.0], DISCRETE, stats=stats), x)
    assert counter.times == [] and stats == {"nfe": 0, "steps": 0, "rejected": 0}


# --- landing on the target ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ENDS))
def test_last_transfer_ends_at_the_target_alpha_bar(name, monkeypatch):
    """The final φ goes to ᾱ(t_N) exactly (the schedule's value, not one recomputed from σ̃)."""
    targets = []
    original = module.transfer

    def recording(x, eps, a, b):
        targets.append(b)
        return original(x, eps, a, b)

    monkeypatch.setattr(module, "transfer", recording)
    eps_fn, x, times, schedule, _ = _problem(name)
    METHOD(eps_fn, x, times, schedule)
    assert targets[-1] == float(schedule.alpha_bar(times[-1:])[0])


def test_point_mass_to_alpha_one_returns_the_point():
    """A point mass's flow is exact under φ; to ᾱ = 1 the result is μ (PointMass.eps raises if
    called at ᾱ = 1, i.e. at the target). Tolerance 1e-10: float64 rounding over ~10 steps."""
    schedule = NoiseSchedule.from_config({"set_alpha_to_one": True})
    mu = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = METHOD(PointMass(mu).eps_fn(schedule), x, [999.0, -1.0], schedule)
    torch.testing.assert_close(out, mu.expand(4, 3), rtol=0, atol=1e-10)


# --- bad options ----------------------------------------------------------------------------------


class NoInverse:
    """A schedule with ᾱ but no σ̃ -> t map."""

    def alpha_bar(self, t):
        return VP.alpha_bar(t)


@pytest.mark.parametrize(
    ("options", "schedule", "match"),
    [
        ({"rtol": 0.0}, VP, "rtol must be a positive finite number"),
        ({"rtol": -1e-3}, VP, "rtol must be a positive finite number"),
        ({"rtol": float("inf")}, VP, "rtol must be a positive finite number"),
        ({"atol": "1e-3"}, VP, "atol must be a positive finite number"),
        ({"order": 0}, VP, "order for method 'pec-adaptive' must be one of 1, 2, 3, 4, got 0"),
        ({"order": 5}, VP, "must be one of 1, 2, 3, 4, got 5"),
        ({"order": True}, VP, "must be one of 1, 2, 3, 4"),
        ({"order": 2.0}, VP, "must be one of 1, 2, 3, 4, got 2.0"),
        ({"stats": []}, VP, "stats must be a dict"),
        ({"tol": 1e-3}, VP, "valid options: order, rtol, atol, stats"),
        (
            {},
            NoInverse(),
            "needs a full Schedule .*; NoInverse lacks t_max, t_min, discrete, sigma_tilde, "
            "timestep_from_sigma; use NoiseSchedule or VPSchedule$",
        ),
    ],
)
def test_bad_options_raise_one_line_value_errors(options, schedule, match):
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=match) as info:
        METHOD(PointMass([0.0, 0.0, 0.0]).eps_fn(VP), x, [1.0, 1e-3], schedule, **options)
    assert "\n" not in str(info.value)


def test_a_schedule_without_t_min_is_refused_before_any_call():
    """Without t_min there is no last time the model may be called before σ̃ = 0."""

    class NoTMin(NoInverse):
        def timestep_from_sigma(self, sigma):
            return VP.timestep_from_sigma(sigma)

    counter = Counter(PointMass([0.0, 0.0, 0.0]).eps_fn(VP))
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="NoTMin lacks t_max, t_min, discrete, sigma_tilde;"):
        METHOD(counter, x, [1.0, 0.0], NoTMin())
    assert counter.calls == 0


def test_alpha_one_at_t_min_and_at_the_target_is_refused():
    """ᾱ(t_min) = 1 leaves no time with ᾱ < 1 to call the model at before σ̃ = 0."""

    @dataclasses.dataclass(frozen=True)
    class FromZero(VPSchedule):
        t_min: float = 0.0

        def __post_init__(self) -> None:  # VPSchedule refuses t_min = 0, where ᾱ = 1
            pass

    x = torch.zeros(2, 3, dtype=torch.float64)
    match = "needs ᾱ < 1 at the target t_N or at the schedule's t_min"
    with pytest.raises(ValueError, match=match):
        METHOD(PointMass([0.0, 0.0, 0.0]).eps_fn(VP), x, [1.0, 0.0], FromZero())


# --- the step-size controller both adaptive methods share --------------------------------------


def test_pf_and_pec_adaptive_share_one_controller():
    """One controller and one error ratio (samplers.adaptive); each method passes its constants."""
    assert pf_module.step_factor is module.step_factor is adaptive.step_factor
    assert pf_module.error_ratio is module.error_ratio is adaptive.error_ratio
    assert (pf_module.LIMITS.factor_max, module.LIMITS.factor_max) == (10.0, 5.0)


def test_step_factor_is_scipys_rule():
    """0.9 ratio^(-1/(k+1)) clipped to [min, max], at most 1 at or right after a rejection."""
    limits = adaptive.StepLimits(safety=0.9, factor_min=0.2, factor_max=10.0)
    assert adaptive.step_factor(0.5, 4, False, limits) == 0.9 * 0.5**-0.2
    assert adaptive.step_factor(1e-12, 4, False, limits) == 10.0  # growth capped
    assert adaptive.step_factor(1e-12, 4, True, limits) == 1.0  # no growth right after a rejection
    assert adaptive.step_factor(1.5, 2, False, limits) == 0.9 * 1.5 ** (-1 / 3)  # shrink
    assert adaptive.step_factor(1e9, 1, False, limits) == 0.2  # shrink capped
    assert adaptive.step_factor(0.0, 1, False, limits) == 10.0  # a zero error: the cap, no 0**-x


def test_error_ratio_is_the_worst_samples_rms():
    x = torch.tensor([[1.0, -2.0], [0.0, 0.0]], dtype=torch.float64)
    x_new = torch.tensor([[3.0, 1.0], [0.0, 4.0]], dtype=torch.float64)
    error = torch.tensor([[0.1, 0.2], [0.3, 0.0]], dtype=torch.float64)
    scale = 0.01 + 0.1 * torch.tensor([[3.0, 2.0], [0.0, 4.0]], dtype=torch.float64)
    rms = (error / scale).square().mean(1).sqrt()
    assert adaptive.error_ratio(error, x, x_new, rtol=0.1, atol=0.01) == float(rms.max())
    error[1, 1] = float("nan")  # a blown-up stage is rejected, never accepted by a NaN compare
    assert adaptive.error_ratio(error, x, x_new, rtol=0.1, atol=0.01) == float("inf")
