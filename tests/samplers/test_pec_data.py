"""pec-data: the exponential-integrator Adams weights in closed form, exactness, ends, options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pndm import grids
from pndm.analytic import GaussianMixture, PointMass
from pndm.samplers import SAMPLERS
from pndm.samplers.adams import data_adams_tables, lagrange_integrals
from pndm.schedule import NoiseSchedule, VPSchedule

VP = VPSchedule()
DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
ONE = NoiseSchedule.from_config({"num_train_timesteps": 1000, "set_alpha_to_one": True})
PEC_DATA = SAMPLERS["pec-data"]


def _x(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_two_node_exponential_weights_match_the_closed_form():
    """Linear x̂_0 in λ through (λ_{n-1}, d_{n-1}), (λ_n, d_n), averaged under e^λ over [λ_n,
    λ_n + h]: weight of d_n - d_{n-1} is c = (h e^h - e^h + 1)/(h_prev (e^h - 1)) (integrate
    s e^s by parts). In s = -λ the table integrates from s_n to s_n - h."""
    for h, h_prev in [(0.3, 0.5), (2.0, 1.0), (5.0, 0.2)]:
        lam = np.array([0.0, h_prev, h_prev + h])  # λ_{n-1}, λ_n, λ_{n+1}
        s = -lam
        w = lagrange_integrals(s[[1, 0]], s[1], s[2], exponential=True) / (s[2] - s[1])
        c = (h * math.exp(h) - math.exp(h) + 1) / (h_prev * math.expm1(h))
        np.testing.assert_allclose(w, [1 + c, -c], rtol=1e-13)


def test_exponential_rows_sum_to_one_and_reproduce_polynomials():
    """Each row averages x̂_0: weights sum to 1, and for x̂_0 = λ^m (m < width) the row gives
    the exact e^λ-weighted mean (checked against an independent fine trapezoid rule)."""
    log_sigma = torch.log(torch.tensor([80.0, 20.0, 3.0, 0.7, 0.1, 0.02], dtype=torch.float64))
    predictor, corrector = data_adams_tables(log_sigma, 3, [3] * 5)
    np.testing.assert_allclose(predictor.sum(1).numpy(), 1, rtol=1e-12)
    np.testing.assert_allclose(corrector[:-1].sum(1).numpy(), 1, rtol=1e-12)
    lam = -log_sigma.numpy()
    n = 3  # predictor row 3 uses nodes λ_3, λ_2, λ_1
    fine = np.linspace(lam[n], lam[n + 1], 200001)
    for m in range(3):
        exact = _trapezoid(np.exp(fine) * fine**m, fine) / _trapezoid(np.exp(fine), fine)
        got = sum(predictor[n, j].item() * lam[n - j] ** m for j in range(3))
        assert abs(got - exact) < 1e-8 * max(1, abs(exact))


def _trapezoid(f: np.ndarray, s: np.ndarray) -> float:
    return float(((f[1:] + f[:-1]) / 2 * np.diff(s)).sum())


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("schedule", [VP, DDPM, ONE], ids=["vp", "discrete", "alpha-one"])
def test_exact_on_a_point_mass_on_any_grid(order, schedule):
    """x̂_0 = μ everywhere: every weighted average of it is μ, so φ is exact (a 3-step grid)."""
    mu = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    times = grids.time_uniform(schedule, 3) if schedule is VP else grids.leading(schedule, 3)
    x = _x()
    out = PEC_DATA(PointMass(mu).eps_fn(schedule), x, times, schedule, order=order)
    a = schedule.alpha_bar(times[[0, -1]])
    eps = (x - a[0].sqrt() * mu) / (1 - a[0]).sqrt()  # constant along a point mass's flow
    expected = a[1].sqrt() * mu + (1 - a[1]).sqrt() * eps
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_a_target_at_alpha_one_returns_the_data_estimate():
    """ᾱ(-1) = 1: the last step is first order and lands on x̂_0 (finite, no call at the target)."""
    gmm = GaussianMixture([0.5, 0.5], [[0.5, 0.0, -0.5], [-0.5, 0.2, 0.1]], [0.2, 0.3])
    calls = []

    def eps_fn(x, t):
        calls.append(float(t[0]))
        return gmm.eps_fn(ONE)(x, t)

    out = PEC_DATA(eps_fn, _x(), grids.leading(ONE, 10), ONE, order=3, lower_order_final=False)
    assert bool(torch.isfinite(out).all()) and len(calls) == 10 and min(calls) >= 0


def test_lower_order_final_and_clip_change_only_what_they_say():
    gmm = GaussianMixture([0.5, 0.5], [[0.9, 0.0, -0.9], [-0.9, 0.2, 0.1]], [0.3, 0.3])
    eps_fn, times, x = gmm.eps_fn(DDPM), grids.logsnr(DDPM, 6), _x(8) * 3
    plain = PEC_DATA(eps_fn, x, times, DDPM)
    assert not torch.equal(plain, PEC_DATA(eps_fn, x, times, DDPM, lower_order_final=True))
    clipped = PEC_DATA(eps_fn, x, times, DDPM, clip_sample=True, clip_sample_range=0.5)
    assert not torch.equal(plain, clipped)
    wide = PEC_DATA(eps_fn, x, times, DDPM, clip_sample=True, clip_sample_range=1e6)
    torch.testing.assert_close(wide, plain, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": 4}, "order for method 'pec-data' must be one of 1, 2, 3, got 4"),
        ({"lower_order_final": "yes"}, "lower_order_final must be True or False"),
        ({"clip_sample_range": -1.0}, "clip_sample_range must be a positive finite number"),
        ({"eta": 0.0}, "unknown option(s) 'eta' for method 'pec-data'"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    eps_fn = PointMass(torch.zeros(3, dtype=torch.float64)).eps_fn(VP)
    with pytest.raises(ValueError) as err:
        PEC_DATA(eps_fn, _x(), grids.edm(VP, 4), VP, **options)
    assert message in str(err.value) and "\n" not in str(err.value)
