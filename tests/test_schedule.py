"""NoiseSchedule and VPSchedule against diffusers (float32) and float64 closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler

from pndm.schedule import BETA_SCHEDULES, NoiseSchedule, VPSchedule, make_betas

U32 = 2.0**-24  # float32 unit round-off
T = 1000

CONFIGS = {
    "linear": {"beta_schedule": "linear"},
    # Stable Diffusion's scaled_linear range, as in its scheduler configs.
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}


def _abar_cosine(s: float) -> float:
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


@pytest.mark.parametrize("name", list(CONFIGS))
def test_alphas_cumprod_match_diffusers_to_float32_rounding(name):
    # diffusers rounds each β to float32 and multiplies in float32. Each factor 1 − β then carries
    # a relative error ≤ u(2 + β/(1 − β)) (β's rounding is amplified by 1/(1 − β) near the capped
    # end of the cosine schedule), and ᾱ_k's error is at most the running sum of those.
    d = PNDMScheduler(**CONFIGS[name])
    ours = NoiseSchedule.from_config(dict(d.config))
    betas = make_betas(**CONFIGS[name])
    bound = torch.cumsum(U32 * (2 + betas / (1 - betas)), 0)
    rel = (ours.alphas_cumprod - d.alphas_cumprod.double()).abs() / ours.alphas_cumprod
    assert ours.alphas_cumprod.dtype == torch.float64
    assert bool((rel <= bound).all()), float((rel / bound).max())


def test_trained_betas_match_diffusers():
    betas = np.linspace(1e-4, 0.03, 50) ** 1.5
    d = PNDMScheduler(trained_betas=betas.tolist(), num_train_timesteps=50)
    ours = NoiseSchedule.from_config(dict(d.config))
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-14)
    bound = np.cumsum(U32 * (2 + betas / (1 - betas)))
    rel = np.abs(ours.alphas_cumprod.numpy() - d.alphas_cumprod.double().numpy())
    assert np.all(rel / ours.alphas_cumprod.numpy() <= bound)


def test_linear_closed_form_float64():
    # ᾱ_k = exp(Σ_{j≤k} log1p(−β_j)), β_j = β_s + j(β_e − β_s)/(T − 1), summed exactly with fsum;
    # the cumprod's rounding grows like k·u ≤ 1000 · 1.1e-16.
    ours = NoiseSchedule.from_config({"beta_schedule": "linear"}).alphas_cumprod.numpy()
    logs = [math.log1p(-(1e-4 + j * (0.02 - 1e-4) / (T - 1))) for j in range(T)]
    expected = np.array([math.exp(math.fsum(logs[: k + 1])) for k in range(T)])
    np.testing.assert_allclose(ours, expected, rtol=2e-13)
    # Published defaults (diffusers-compat.md §1): ᾱ_0 = 0.99989998, ᾱ_999 = 4.0358e-05.
    assert ours[0] == pytest.approx(0.9999, abs=1e-15)
    assert ours[-1] == pytest.approx(4.0358e-05, rel=1e-4)


def test_scaled_linear_closed_form_float64():
    ours = NoiseSchedule.from_config(CONFIGS["scaled_linear"]).alphas_cumprod.numpy()
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    logs = [math.log1p(-((lo + j * (hi - lo) / (T - 1)) ** 2)) for j in range(T)]
    expected = np.array([math.exp(math.fsum(logs[: k + 1])) for k in range(T)])
    np.testing.assert_allclose(ours, expected, rtol=2e-13)


def test_cosine_closed_form_telescopes():
    # Uncapped, Π_{j≤k} ᾱc((j+1)/T)/ᾱc(j/T) = ᾱc((k+1)/T)/ᾱc(0). Only the last β hits the 0.999 cap.
    # Each factor 1 − β loses u/(1 − β) relative to rounding β, so the tolerance is that sum.
    sched = NoiseSchedule.from_config(CONFIGS["squaredcos_cap_v2"])
    betas = make_betas(beta_schedule="squaredcos_cap_v2").numpy()
    assert np.flatnonzero(betas >= 0.999).tolist() == [T - 1]
    ours = sched.alphas_cumprod.numpy()
    expected = np.array([_abar_cosine((k + 1) / T) / _abar_cosine(0.0) for k in range(T - 1)])
    bound = np.cumsum(4e-16 * (1 + 1 / (1 - betas)))[: T - 1]
    assert np.all(np.abs(ours[:-1] - expected) / expected <= bound)
    assert ours[-1] == pytest.approx(ours[-2] * (1 - 0.999), rel=1e-15)


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_final_alpha_cumprod(set_alpha_to_one):
    d = PNDMScheduler(set_alpha_to_one=set_alpha_to_one)
    ours = NoiseSchedule.from_config(dict(d.config))
    assert ours.final_alpha_cumprod == pytest.approx(float(d.final_alpha_cumprod), rel=U32)
    assert ours.final_alpha_cumprod == (1.0 if set_alpha_to_one else 0.9999)
    assert float(ours.alpha_bar(-1)) == ours.final_alpha_cumprod


def test_offset_zero_indexes_alphas_cumprod_directly():
    sched = NoiseSchedule.from_config({})
    t = torch.arange(T)
    assert torch.equal(sched.alpha_bar(t), sched.alphas_cumprod)
    assert (sched.t_min, sched.t_max) == (0.0, 999.0)


def test_offset_one_pairs_t_with_next_index():
    # Original PNDM code: model time t uses alphas_cump[t+1]; target t = −1 uses alphas_cump[0].
    base = NoiseSchedule.from_config({})
    sched = NoiseSchedule.from_config({"alpha_index_offset": 1})
    ac = base.alphas_cumprod
    assert torch.equal(sched.alpha_bar(torch.arange(T - 1)), ac[1:])
    assert float(sched.alpha_bar(-1)) == float(ac[0])
    assert float(sched.alpha_bar(-2)) == sched.final_alpha_cumprod
    assert (sched.t_min, sched.t_max) == (-1.0, 998.0)
    with pytest.raises(ValueError, match="past the end"):
        sched.alpha_bar(999)


def test_fractional_times_are_log_linear_and_exact_at_integers():
    sched = NoiseSchedule.from_config({"set_alpha_to_one": True})
    ac = sched.alphas_cumprod
    for t in (0.25, 17.5, 500.9, 998.999):
        k, w = math.floor(t), t - math.floor(t)
        expected = math.exp((1 - w) * math.log(ac[k]) + w * math.log(ac[k + 1]))
        assert float(sched.alpha_bar(t)) == pytest.approx(expected, rel=1e-14)
    # Between the final value (1.0 here) and ᾱ_0.
    assert float(sched.alpha_bar(-0.5)) == pytest.approx(math.sqrt(float(ac[0])), rel=1e-15)
    # Exact (bitwise) at integers, also when given as float tensors.
    assert torch.equal(sched.alpha_bar(torch.arange(T, dtype=torch.float64)), ac)


def test_python_floats_are_not_rounded_through_float32():
    # Regression: torch.as_tensor(0.3) is float32; 0.3 must reach the schedule as a float64.
    for sched in (NoiseSchedule.from_config({}), VPSchedule()):
        for t in (0.3, 1e-3):
            assert float(sched.alpha_bar(t)) == float(
                sched.alpha_bar(torch.tensor(t, dtype=torch.float64))
            )
    vp = VPSchedule()
    assert float(vp.alpha_bar(1e-3)) == math.exp(-0.1e-3 - 0.5 * 19.9e-6)


def test_past_the_end_raises():
    sched = NoiseSchedule.from_config({})
    assert float(sched.alpha_bar(999)) == float(sched.alphas_cumprod[-1])
    for t in (999.5, 1000, torch.tensor([10.0, 1000.0])):
        with pytest.raises(ValueError, match="past the end of the schedule"):
            sched.alpha_bar(t)
    with pytest.raises(ValueError, match="finite"):
        sched.alpha_bar(float("nan"))


@pytest.mark.parametrize("offset", [0, 1])
def test_timestep_from_sigma_is_the_exact_inverse(offset):
    # log ᾱ is linear between integers, so the inverse is exact up to rounding; the
    # conditioning |log ᾱ| u / Δlog ᾱ ≤ 10 · 1.1e-16 / 1e-4 bounds the error in t by ~1e-11.
    sched = NoiseSchedule.from_config({"alpha_index_offset": offset})
    t = torch.cat([torch.linspace(sched.t_min, sched.t_max, 37, dtype=torch.float64)])
    t = torch.cat([t, torch.tensor([0.5, 3.25, 998.75], dtype=torch.float64) - offset])
    torch.testing.assert_close(
        sched.timestep_from_sigma(sched.sigma_tilde(t)), t, rtol=0, atol=1e-9
    )
    sig = torch.logspace(-1.99, 2.19, 25, dtype=torch.float64)  # inside [0.0100, 157.4]
    torch.testing.assert_close(
        sched.sigma_tilde(sched.timestep_from_sigma(sig)), sig, rtol=1e-12, atol=0
    )
    with pytest.raises(ValueError, match="sigma_tilde must lie in"):
        sched.timestep_from_sigma(1000.0)


def test_sigma_tilde_range_of_ddpm_schedule():
    # algorithms.md §5: σ̃(ᾱ_999) = 157.41 and σ̃(ᾱ_0) = 0.0100 for the linear DDPM schedule.
    sched = NoiseSchedule.from_config({})
    assert float(sched.sigma_tilde(999)) == pytest.approx(157.41, abs=0.01)
    assert float(sched.sigma_tilde(0)) == pytest.approx(math.sqrt(1e-4 / 0.9999), rel=1e-12)


def test_vp_schedule_closed_forms_and_inverse():
    vp = VPSchedule()
    for t in (1.0, 0.5, 0.1, 1e-3):
        log_a = -0.1 * t - 0.5 * 19.9 * t * t
        assert float(vp.alpha_bar(t)) == pytest.approx(math.exp(log_a), rel=1e-15)
        assert float(vp.sigma_tilde(t)) == pytest.approx(math.sqrt(math.expm1(-log_a)), rel=1e-15)
    # algorithms.md §6: t = 1 → 1e-3 spans σ̃ ≈ 152 → 0.0105.
    assert float(vp.sigma_tilde(1.0)) == pytest.approx(152.17, abs=0.01)
    assert float(vp.sigma_tilde(1e-3)) == pytest.approx(0.010486, abs=1e-6)
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    torch.testing.assert_close(vp.timestep_from_sigma(vp.sigma_tilde(t)), t, rtol=1e-13, atol=0)
    # t(σ̃) = (−β₀ + sqrt(β₀² + 2(β₁ − β₀) ln(1 + σ̃²)))/(β₁ − β₀)
    s = 3.0
    closed = (-0.1 + math.sqrt(0.01 + 2 * 19.9 * math.log1p(s * s))) / 19.9
    assert float(vp.timestep_from_sigma(s)) == pytest.approx(closed, rel=1e-15)


@pytest.mark.parametrize(
    "kwargs", [{"beta_min": 1.0, "beta_max": 0.5}, {"t_min": 0.0}, {"t_min": 2.0}]
)
def test_vp_schedule_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="VPSchedule needs"):
        VPSchedule(**kwargs)


def test_unknown_beta_schedule_lists_choices():
    with pytest.raises(ValueError, match="beta_schedule must be one of .*, got 'cosine'") as info:
        NoiseSchedule.from_config({"beta_schedule": "cosine"})
    assert all(name in str(info.value) for name in BETA_SCHEDULES)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.tensor([0.9, 0.0]), 1.0), r"alphas_cumprod must lie in \(0, 1\]"),
        ((torch.tensor([0.9]), 1.0), "at least 2 entries"),
        ((torch.tensor([0.9, 0.5]), 1.5), "final_alpha_cumprod"),
        ((torch.tensor([0.9, 0.5]), 1.0, 2), "alpha_index_offset"),
    ],
)
def test_noise_schedule_validation(args, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule(*args)


def test_bad_trained_betas_and_timesteps():
    with pytest.raises(ValueError, match="trained_betas"):
        make_betas(trained_betas=[0.1, 1.2])
    with pytest.raises(ValueError, match="num_train_timesteps"):
        make_betas(num_train_timesteps=1)
