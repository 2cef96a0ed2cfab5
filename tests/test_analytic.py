"""Weight-free oracles (pndm.analytic) against closed forms and scipy.

Golden values never come from pndm itself: the GMM score is checked against a finite-difference
gradient of the closed-form log-density written here with scipy.stats, the Gaussian flow against
scipy's DOP853 and against the t-form of the ODE, the point mass against its straight-line solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from pndm.analytic import GaussianMixture, PointMass, gaussian_flow, reference_flow
from pndm.samplers.core import transfer
from pndm.schedule import NoiseSchedule, VPSchedule

# The 2-D, 3-component mixture of reference/algorithms.md §6.
PI = [0.5, 0.3, 0.2]
MU = [[-1.0, 0.5], [1.0, 1.0], [0.3, -1.2]]
TAU = [0.3, 0.2, 0.4]
VP = VPSchedule()


@pytest.fixture(scope="module")
def gmm() -> GaussianMixture:
    return GaussianMixture(PI, MU, TAU)


def _x(n: int = 16, d: int = 2, seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, dtype=torch.float64, generator=g)


def _log_density(x: np.ndarray, alpha_bar: float) -> np.ndarray:
    """log p_t(x) = log Σ_k π_k N(x; aμ_k, (a²τ_k² + s²) I), written with scipy only."""
    a, s2 = math.sqrt(alpha_bar), 1 - alpha_bar
    terms = [
        math.log(p)
        + multivariate_normal(a * np.array(m), (a * a * t * t + s2) * np.eye(2)).logpdf(x)
        for p, m, t in zip(PI, MU, TAU, strict=True)
    ]
    return logsumexp(np.stack(terms, -1), axis=-1)


def _fd_gradient(f, x: np.ndarray, h: float) -> np.ndarray:
    """Five-point central difference: error h⁴ f⁽⁵⁾/30 plus rounding ~ 1e-16 |f| / h."""
    grad = np.zeros_like(x)
    for i in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, i] = h
        grad[:, i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return grad


@pytest.mark.parametrize("alpha_bar", [0.999, 0.9, 0.5, 0.05, 1e-3])
def test_gmm_eps_is_minus_s_times_finite_difference_score(gmm, alpha_bar):
    # ε* = -s ∇log p_t. With h = 1e-3 the five-point stencil's truncation error is ~h⁴/var^2.5
    # ≈ 1e-12 · 1e4 = 1e-8 at the sharpest component (var ≈ 0.04) and rounding ~1e-13, so 2e-8.
    x = _x(32)
    a = math.sqrt(alpha_bar)
    x = x * math.sqrt(1 - alpha_bar + alpha_bar * 0.25) + a * torch.tensor([0.2, 0.1]).double()
    expected = -math.sqrt(1 - alpha_bar) * _fd_gradient(
        lambda y: _log_density(y, alpha_bar), x.numpy(), 1e-3
    )
    got = gmm.eps(x, alpha_bar).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-8)


def test_gmm_log_prob_matches_scipy(gmm):
    x = _x(8)
    for ab in (0.99, 0.3):
        np.testing.assert_allclose(gmm.log_prob(x, ab).numpy(), _log_density(x.numpy(), ab), 1e-13)


def test_gmm_eps_far_from_data_is_finite(gmm):
    # log-sum-exp keeps responsibilities finite where every N_k underflows (|x| ~ 1e3 at ᾱ ≈ 1).
    x = torch.tensor([[1e3, -1e3], [-40.0, 25.0]], dtype=torch.float64)
    eps = gmm.eps(x, 0.9999)
    assert torch.isfinite(eps).all()


def test_gmm_per_sample_alpha_bar_equals_scalar_calls(gmm):
    x = _x(5)
    ab = torch.tensor([0.9, 0.5, 0.1, 0.99, 1e-3], dtype=torch.float64)
    batched = gmm.eps(x, ab)
    single = torch.cat([gmm.eps(x[i : i + 1], float(ab[i])) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-15)


def test_gmm_float32_agrees_with_float64(gmm):
    # Computation is float64 internally; the only float32 error is rounding x and the result.
    x = _x(16)
    e32 = gmm.eps(x.float(), 0.7)
    assert e32.dtype == torch.float32
    torch.testing.assert_close(e32.double(), gmm.eps(x.float().double(), 0.7), rtol=1e-6, atol=1e-6)


def test_gmm_event_shape_images():
    # (K, C, H, W) means: ε is computed over the flattened event, returned in x's shape.
    mu = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    mu[1] += 1
    g = GaussianMixture([1.0, 1.0], mu, [0.5, 0.5])
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert g.eps(x, 0.5).shape == x.shape


def test_gmm_k1_and_duplicated_components_equal_single_gaussian():
    # A single isotropic Gaussian: ε* = s (x − aμ)/(a²τ² + s²), written out here.
    x, ab, mu, tau = _x(8), 0.3, torch.tensor([0.4, -0.7], dtype=torch.float64), 0.6
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    expected = s * (x - a * mu) / (a * a * tau * tau + s * s)
    one = GaussianMixture([1.0], mu[None], [tau])
    two = GaussianMixture([0.2, 0.8], torch.stack([mu, mu]), [tau, tau])
    torch.testing.assert_close(one.eps(x, ab), expected, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(two.eps(x, ab), expected, rtol=1e-14, atol=1e-15)


def test_gmm_eps_fn_uses_schedule_alpha_bar(gmm):
    x = _x(4)
    t = torch.tensor([1.0, 0.5, 0.1, 1e-3], dtype=torch.float64)
    expected = gmm.eps(x, torch.exp(-0.1 * t - 0.5 * 19.9 * t**2))
    torch.testing.assert_close(gmm.eps_fn(VP)(x, t), expected, rtol=1e-14, atol=1e-15)


def test_gmm_sample_moments_and_reproducibility(gmm):
    a = gmm.sample(20000, torch.Generator().manual_seed(1))
    b = gmm.sample(20000, torch.Generator().manual_seed(1))
    assert a.shape == (20000, 2) and a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # mean Σπμ; the per-coordinate standard deviation of p₀ is < 1.1, so 5 SE ≈ 0.04.
    mean = torch.tensor(PI, dtype=torch.float64) @ torch.tensor(MU, dtype=torch.float64)
    assert (a.mean(0) - mean).abs().max() < 0.04


def test_gaussian_flow_matches_dop853():
    # scipy DOP853 at rtol = atol = 1e-13 over σ̃ ∈ [152, 0.0105] is accurate to ~1e-13.
    x, mu, tau = _x(16), [0.3, -0.2], 0.5
    exact = gaussian_flow(x, 1.0, 1e-3, VP, mu, tau)
    single = GaussianMixture([1.0], [mu], [tau])
    ref = reference_flow(single.eps_fn(VP), x, 1.0, 1e-3, VP)
    torch.testing.assert_close(ref, exact, rtol=0, atol=1e-10)


def test_gaussian_flow_solves_the_t_form_of_the_ode():
    # dx/dt = ᾱ'/(2ᾱ) [x − ε/sqrt(1 − ᾱ)], ᾱ'/ᾱ = −(β₀ + (β₁ − β₀) t) for the VP schedule: an
    # independent check of both the closed form and the σ̃-form used by reference_flow.
    # Central difference with h = 1e-6: truncation ~h² |x'''| ≈ 1e-10, rounding ~1e-16/h.
    x, mu, tau, h = _x(8), torch.tensor([0.3, -0.2], dtype=torch.float64), 0.5, 1e-6
    for t in (0.9, 0.3, 0.05):
        xt = gaussian_flow(x, 1.0, t, VP, mu, tau)
        dx = gaussian_flow(x, 1.0, t + h, VP, mu, tau) - gaussian_flow(x, 1.0, t - h, VP, mu, tau)
        ab = math.exp(-0.1 * t - 0.5 * 19.9 * t * t)
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        eps = s * (xt - a * mu) / (a * a * tau * tau + s * s)
        drift = -0.5 * (0.1 + 19.9 * t) * (xt - eps / s)
        torch.testing.assert_close(dx / (2 * h), drift, rtol=1e-7, atol=1e-7)


def test_gaussian_flow_identity_and_composition():
    x, mu, tau = _x(4), [1.0, 2.0], 0.3
    torch.testing.assert_close(gaussian_flow(x, 0.7, 0.7, VP, mu, tau), x, rtol=0, atol=1e-15)
    mid = gaussian_flow(x, 1.0, 0.4, VP, mu, tau)
    torch.testing.assert_close(
        gaussian_flow(mid, 0.4, 0.01, VP, mu, tau),
        gaussian_flow(x, 1.0, 0.01, VP, mu, tau),
        rtol=1e-13,
        atol=1e-13,
    )


def test_reference_flow_on_discrete_schedule():
    # The σ̃-form sees a smooth ᾱ = 1/(1+σ̃²) even though log ᾱ(t) is piecewise linear in t.
    sched = NoiseSchedule.from_config({"beta_schedule": "linear"})
    x, mu, tau = _x(8), [0.5, -0.5], 0.4
    exact = gaussian_flow(x, 999, 0, sched, mu, tau)
    ref = reference_flow(GaussianMixture([1.0], [mu], [tau]).eps_fn(sched), x, 999, 0, sched)
    torch.testing.assert_close(ref, exact, rtol=0, atol=1e-10)


def test_point_mass_eps_and_solution():
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    pm, x = PointMass(mu), _x(8)
    ab = 0.2
    expected = (x - math.sqrt(ab) * mu) / math.sqrt(1 - ab)
    torch.testing.assert_close(pm.eps(x, ab), expected, rtol=1e-15, atol=1e-15)
    # Straight line in (x̄, σ̃): x(t₁) = sqrt(ᾱ₁)μ + sqrt(1 − ᾱ₁) ε*(x, t₀); DOP853 agrees.
    sol = pm.solution(x, 1.0, 1e-3, VP)
    a1 = math.exp(-0.1e-3 - 0.5 * 19.9e-6)
    e0 = (x - math.sqrt(VP.alpha_bar(1.0).item()) * mu) / math.sqrt(1 - VP.alpha_bar(1.0).item())
    torch.testing.assert_close(sol, math.sqrt(a1) * mu + math.sqrt(1 - a1) * e0, rtol=0, atol=1e-13)
    ref = reference_flow(pm.eps_fn(VP), x, 1.0, 1e-3, VP)
    torch.testing.assert_close(ref, sol, rtol=0, atol=1e-10)


def test_point_mass_single_transfer_step_is_exact():
    # φ(x, ε*, a→b) stays on the manifold (algorithms.md §2): one DDIM step from t=1 to 1e-3.
    pm, x = PointMass([0.3, -0.2]), _x(8)
    a, b = VP.alpha_bar(1.0), VP.alpha_bar(1e-3)
    stepped = transfer(x, pm.eps(x, a), a, b)
    torch.testing.assert_close(stepped, pm.solution(x, 1.0, 1e-3, VP), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.5, -0.5], MU[:2], TAU[:2]), "positive"),
        (([1.0, 1.0], MU, TAU[:2]), "means must have shape"),
        ((PI, MU, TAU[:2]), "stds must have shape"),
        ((PI, MU, [0.3, 0.0, 0.4]), "stds must be finite and positive"),
        (([], MU, TAU), "non-empty"),
        ((PI, [0.0, 1.0, 2.0], TAU), "means must have shape"),
        ((PI, [[0.0, math.nan], [1.0, 1.0], [0.0, 0.0]], TAU), "means must be finite"),
    ],
)
def test_gmm_bad_construction(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


def test_bad_calls(gmm):
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        gmm.eps(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \(0, 1\]"):
        gmm.eps(torch.zeros(4, 2), 0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        gmm.eps(torch.zeros(4, 2), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="alpha_bar < 1"):
        PointMass([0.0, 0.0]).eps(torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="std must be a positive scalar"):
        gaussian_flow(torch.zeros(2, 2), 1.0, 0.5, VP, [0.0, 0.0], -1.0)
    with pytest.raises(
        ValueError, match="reference_flow needs a full Schedule .* lacks .*timestep_from_sigma"
    ):
        reference_flow(gmm.eps_fn(VP), torch.zeros(2, 2), 1.0, 0.5, object())
    with pytest.raises(ValueError, match="one time for the whole batch"):
        reference_flow(gmm.eps_fn(VP), torch.zeros(2, 2), torch.tensor([1.0, 0.9]), 0.5, VP)
