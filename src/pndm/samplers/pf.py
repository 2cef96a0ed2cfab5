"""The probability-flow ODE solved by adaptive Dormand-Prince 5(4) in torch (the paper's PF method).

The original code integrates dx/dt = -β(t)/2 [x - ε/sqrt(1-ᾱ)] with scipy's RK45 from t = 1 to 1e-3;
this is the same embedded pair (Dormand & Prince 1980, FSAL) with scipy's step-size control and
starting step, written in torch so that the state never leaves the device. Each step decides
accept/reject on the host: an adaptive solver syncs once per step by nature.
"""

from __future__ import annotations

import torch

from pndm.samplers.adaptive import StepLimits, error_norm, error_ratio, step_factor
from pndm.samplers.calls import evaluate
from pndm.samplers.drift import check_noisy, vp_drift_coefficients
from pndm.samplers.method import Method
from pndm.samplers.options import ADAPTIVE_OPTIONS
from pndm.samplers.steps import Grid
from pndm.schedule import SupportsAlphaBar
from pndm.wrapper import EpsFn

# Butcher tableau of DOPRI5: nodes c, stages a (the last row is the 5th-order solution, FSAL) and
# the error weights e = b5 - b4.
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
# scipy's RK45 controller: 0.9 ratio^(-1/5) within [0.2, 10]; the error is the 4th-order solution's
LIMITS, ERROR_ORDER = StepLimits(safety=0.9, factor_min=0.2, factor_max=10.0), 4


def _drift(eps_fn: EpsFn, schedule: SupportsAlphaBar, x: torch.Tensor, t: float) -> torch.Tensor:
    """dx/dt = ᾱ'/(2ᾱ)[x - ε/sqrt(1-ᾱ)] at time t (one model call)."""
    time = torch.tensor(t, dtype=torch.float64, device=x.device)
    alpha_bar = torch.as_tensor(schedule.alpha_bar(time), dtype=torch.float64)
    c_x, c_e = (c.to(x.dtype) for c in vp_drift_coefficients(schedule, time, alpha_bar))
    return c_x * x + c_e * evaluate(eps_fn, x, time)


def _dopri_step(f, x: torch.Tensor, t: float, h: float, k1: torch.Tensor):
    """One DOPRI5 step: (5th-order x(t+h), f there (FSAL), error estimate)."""
    ks = [k1]
    for c, row in zip(_C, _A, strict=True):
        x_stage = x + h * sum(a * k for a, k in zip(row, ks, strict=False) if a)
        ks.append(f(x_stage, t + c * h))
    error = h * sum(e * k for e, k in zip(_E, ks, strict=True) if e)
    return x_stage, ks[-1], error


def _initial_step(f, x, t, span, k1, rtol, atol) -> float:
    """Hairer, Nørsett & Wanner's starting step (as scipy's), one extra call; negative."""
    scale = atol + rtol * x.abs()
    d0, d1 = error_norm(x, scale), error_norm(k1, scale)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    d2 = error_norm(f(x - h0 * k1, t - h0) - k1, scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return -min(100 * h0, h1, span)


def _integrate(f, x: torch.Tensor, t: float, t_end: float, rtol: float, atol: float):
    """Adaptive DOPRI5 from t down to t_end; returns (x(t_end), counts of calls and steps)."""
    k1 = f(x, t)
    h = _initial_step(f, x, t, t - t_end, k1, rtol, atol)
    counts = {"nfe": 2, "steps": 0, "rejected": 0}
    rejected = False
    while t > t_end:
        h = max(h, t_end - t)  # h < 0; land exactly on t_end
        x_new, k_new, error = _dopri_step(f, x, t, h, k1)
        counts["nfe"] += 6
        ratio = error_ratio(error, x, x_new, rtol, atol)
        if ratio <= 1:
            t, x, k1 = (t_end if h == t_end - t else t + h), x_new, k_new
        counts["steps" if ratio <= 1 else "rejected"] += 1
        h, rejected = h * step_factor(ratio, ERROR_ORDER, rejected, LIMITS), ratio > 1
        if t > t_end and abs(h) < 1e-14 * abs(t_end - t):
            raise RuntimeError(f"pf: step size underflow at t = {t:g} (error ratio {ratio:g})")
    return x, counts


def _pf(
    eps_fn: EpsFn,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    stats: dict | None = None,
) -> torch.Tensor:
    """Probability-flow ODE dx/dt = ᾱ'/(2ᾱ)[x - ε/sqrt(1-ᾱ)] by adaptive DOPRI5 in t.

    Integrates from timesteps[0] to timesteps[-1]; the entries in between are ignored (the solver
    picks its own steps). The error of every sample is held to ``rtol``/``atol`` (the largest
    per-sample RMS norm; scipy takes one RMS over the whole state). The batch shares one step
    size, so a sample's result depends on its batch within the tolerance. NFE is adaptive: 2 + 6
    per attempted step; pass ``stats={}`` to get it back as stats["nfe"], with stats["steps"]
    (accepted) and stats["rejected"]. ᾱ' comes from autograd of the schedule. The last stage
    calls the model at the target, so it needs ᾱ(t_N) < 1.
    """
    grid = Grid.build(x, timesteps[[0, -1]], schedule)
    check_noisy("pf", grid.alpha_bar)

    def f(x_: torch.Tensor, t_: float) -> torch.Tensor:
        return _drift(eps_fn, schedule, x_, t_)

    x, counts = _integrate(f, x, *(float(v) for v in grid.times), rtol, atol)
    if stats is not None:
        stats.update(counts)
    return x


pf = Method("pf", _pf, calls=lambda n, **options: None, options=ADAPTIVE_OPTIONS, adaptive=True)
