"""Adams predictor-corrector on the data estimate x̂_0 in λ = log(1/σ̃): `pec` for large steps.

The transfer φ is exact for any x̂_0 held constant over a step; what a step needs is the average of
x̂_0 over it. In y = x/sqrt(1-ᾱ) and ρ = e^λ = sqrt(ᾱ/(1-ᾱ)) the probability-flow ODE is
dy/dρ = x̂_0(x, t) (the data-space twin of dx̄/dσ̃ = ε), so
y_{n+1} = y_n + ∫ x̂_0 dρ = y_n + (ρ_{n+1} - ρ_n) x̂'_n, x̂'_n = ∫ e^λ x̂_0 dλ / ∫ e^λ dλ,
which is φ(x_n, ε'_n) with ε'_n = (x_n - sqrt(ᾱ_n) x̂'_n)/sqrt(1-ᾱ_n). x̂_0 varies slowly in λ where
ε varies fast (at low noise), so an interpolant of x̂_0 in λ takes the few, long steps of 5-10 model
calls far better than one of ε in σ̃ (the exponential integrator of DPM-Solver++ and UniPC; here with
the exact weights of the Lagrange interpolant, `adams.data_adams_tables`).
"""

from __future__ import annotations

import torch

from pndm.samplers.adams import data_adams_tables
from pndm.samplers.calls import Run
from pndm.samplers.loops import predict_evaluate_correct
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, LOWER_ORDER_FINAL, clip_bound, order_in
from pndm.samplers.steps import Grid, final_order_caps
from pndm.schedule import SupportsAlphaBar


def _caps(grid: Grid, order: int, lower_order_final: bool) -> list[int]:
    """Per-step predictor order caps; a step to ᾱ = 1 (λ = ∞) must be first order."""
    caps = final_order_caps(grid.alpha_bar) if lower_order_final else [order] * grid.steps
    if bool(grid.alpha_bar[-1] == 1):
        caps[-1] = 1
    return caps


def _pec_data(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    order: int = 2,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """AB_k predictor, AM_{k+1} corrector on x̂_0 in λ (exponential integrator), through φ. NFE = N.

    d_n = x̂_0(x^p_n, e_n), e_n taken at the predicted point; predict
    x^p_{n+1} = φ(x_n, x̂'_AB) from (d_n, d_{n-1}, ...), call e_{n+1} there, correct
    x_{n+1} = φ(x_n, x̂'_AM) from (d_{n+1}, d_n, ...); the last step keeps the predictor (no call at
    the target). ``order`` k in 1..3, global order k + 1 on smooth x̂_0. ``lower_order_final``:
    the predictor of step n is at most AB_{N-n}. ``clip_sample``: φ clips x̂' to the range (DDIM's
    rule). Options do not change the NFE. A target with ᾱ = 1 is reached by a first-order step.
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    log_sigma = grid.sigma.log()  # -λ; -inf at ᾱ = 1
    tables = data_adams_tables(log_sigma, order, _caps(grid, order, lower_order_final))
    predictor, corrector = (t.to(like.device, like.dtype) for t in tables)

    def step(x: torch.Tensor, x0: torch.Tensor, n: int) -> torch.Tensor:
        return grid.transfer(x, grid.noise_for(x, x0, n), n)  # φ driven by the estimate x̂'

    tables = (predictor, corrector)
    return predict_evaluate_correct(grid, tables, grid.data_estimate, step)


pec_data = Method(
    "pec-data",
    _pec_data,
    calls=lambda n, **_: n,
    options={"order": order_in(range(1, 4)), **LOWER_ORDER_FINAL, **CLIP_OPTIONS},
)
