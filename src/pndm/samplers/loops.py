"""The sampling loops every fixed-step method is built from, as plans (`pndm.samplers.calls`).

Every PNDM-family method runs `pseudo_multistep`: x_{n+1} = φ(x_n, ε'_n, t_n -> t_{n+1}) where
ε'_n = Σ_j w_{n,j} e_{n-j} (rows of w sum to 1) or, for the first steps, a pseudo Runge-Kutta
warm-up estimate. The methods differ only in the weight table and the warm-up (the paper's
"gradient part"; φ is its "transfer part"). `predict_evaluate_correct` is the PEC loop of the Adams
predictor-corrector methods; `classical_multistep` the loop of FON, without φ. Each takes the
tables it needs, moves them to the device once, and returns the ``run(x)`` generator that asks
for the model calls.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pndm.samplers.calls import Calls, Run
from pndm.samplers.core import Multistep, Tableau, equal_step_table, linear_combination
from pndm.samplers.steps import Grid, final_order_caps


def pseudo_multistep(
    grid: Grid,
    weights: torch.Tensor,
    like: torch.Tensor,
    warmup: Tableau | None = None,
    warmup_steps: int = 0,
    analytic_first: bool = False,
) -> Run:
    """x_{n+1} = φ(x_n, ε'_n, t_n -> t_{n+1}), ε'_n = Σ_j weights[n, j] e_{n-j} (paper eq. 9, 12).

    The history holds raw e_n only (newest first, as many as ``weights`` has columns). For the first
    ``warmup_steps`` steps ε'_n is the pseudo Runge-Kutta estimate of ``warmup`` instead (eq. 13).
    ``analytic_first``: e_0 = x_0 with no model call (iPNDM's analytic first step).
    """
    weights = weights.to(device=like.device, dtype=like.dtype)

    def run(x: torch.Tensor) -> Calls:
        history: list[torch.Tensor] = []
        first_eps = x if analytic_first else None
        for n in range(grid.steps):
            if n == 0 and first_eps is not None:
                e = first_eps
            else:
                x, e = yield x, grid.times[n]
            history = [e, *history][: weights.shape[1]]
            if warmup is not None and n < warmup_steps:
                eps_prime = yield from pseudo_runge_kutta(warmup, x, e, grid, n)
            else:
                eps_prime = linear_combination(weights[n], history)
            x = grid.transfer(x, eps_prime, n)
        return x

    return run


def multistep(
    method: Multistep,
    grid: Grid,
    like: torch.Tensor,
    analytic_first: bool = False,
    lower_order_final: bool = False,
) -> Run:
    """`pseudo_multistep` with the equal-step table, warm-up and warm-up steps of ``method``.

    ``lower_order_final`` caps step n's AB order at `final_order_caps` (warm-up steps unchanged).
    """
    caps = final_order_caps(grid.alpha_bar) if lower_order_final else None
    weights = equal_step_table(method.orders(grid.steps, caps))
    return pseudo_multistep(grid, weights, like, method.warmup, method.warmup_steps, analytic_first)


def tableau_sum(weights: tuple[float, ...], stages: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i w_i k_i over the oldest-first stages, skipping zero weights (host floats, no sync)."""
    terms = [w * k for w, k in zip(weights, stages, strict=False) if w]
    return sum(terms[1:], terms[0])


def pseudo_runge_kutta(
    tableau: Tableau, x: torch.Tensor, e: torch.Tensor, grid: Grid, n: int
) -> Calls:
    """Pseudo Runge-Kutta ε' (paper eq. 13): every stage is φ from the base x_n; s - 1 extra NFE.

    RK4: ε' = (e_1 + 2e_2 + 2e_3 + e_4)/6; improved Euler: ε' = (e_n + ε(φ(x_n, e_n), t_{n+1}))/2.
    """
    stages = [e]
    for c, row in zip(tableau.c[1:], tableau.a, strict=True):
        x_stage = grid.transfer_to(c, x, tableau_sum(row, stages), n)
        _, e_stage = yield x_stage, grid.time_at(c, n)
        stages.append(e_stage)
    return tableau_sum(tableau.b, stages)


Estimate = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def predict_evaluate_correct(
    grid: Grid, tables: tuple[torch.Tensor, torch.Tensor], estimate: Estimate, step: Step
) -> Run:
    """The PEC loop of `pec` and `pec-data`: one model call per step, none at the target.

    d_n = estimate(x, e_n, n) is what the weights combine (ε itself, or x̂_0); step(x, d', n) is
    φ driven by the combination d'. Predict x^p_{n+1} = step(x_n, Σ_j P[n, j] d_{n-j}), call
    e_{n+1} = ε(x^p_{n+1}, t_{n+1}), correct x_{n+1} = step(x_n, Σ_j C[n, j] (d_{n+1}, d_n, ...)).
    d_{n+1}, taken at the predicted point, is the next step's d_n; the last step keeps the
    predictor. ``tables`` = (P, C) on the device, P with as many columns as the history keeps.
    """
    predictor, corrector = tables

    def run(x: torch.Tensor) -> Calls:
        x, e = yield x, grid.times[0]
        d = estimate(x, e, 0)
        history: list[torch.Tensor] = []
        for n in range(grid.steps):
            history = [d, *history][: predictor.shape[1]]
            x_pred = step(x, linear_combination(predictor[n], history), n)  # predictor
            if n == grid.steps - 1:
                return x_pred  # no model call at the target
            x_pred, e = yield x_pred, grid.times[n + 1]
            d = estimate(x_pred, e, n + 1)
            x = step(x, linear_combination(corrector[n], [d, *history]), n)  # corrector
        return x

    return run


StageSlope = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classical_multistep(
    method: Multistep, slope: StageSlope, times: torch.Tensor, h: torch.Tensor
) -> Run:
    """x_{n+1} = x_n + h_n D_n: classical Runge-Kutta (``method.warmup``) for the warm-up steps,
    then equal-step Adams-Bashforth on the stage-0 slopes.

    ``slope(n, stage, x_n, x_stage, e)`` with e = ε(x_stage) at ``times[n, stage]``, stage i at
    t_n + c_i h_n of the warm-up tableau.
    """
    weights = equal_step_table(method.orders(h.numel())).to(device=h.device, dtype=h.dtype)
    tableau = method.warmup

    def run(x: torch.Tensor) -> Calls:
        history: list[torch.Tensor] = []
        for n in range(h.numel()):
            x, e = yield x, times[n, 0]
            k = [slope(n, 0, x, x, e)]
            history = [k[0], *history][: weights.shape[1]]
            if n < method.warmup_steps:  # classical Runge-Kutta (RK4 for FON: order 4, 4 NFE)
                for i, (c, row) in enumerate(zip(tableau.c[1:], tableau.a, strict=True), 1):
                    x_stage, e = yield x + (c * h[n]) * tableau_sum(row, k), times[n, i]
                    k.append(slope(n, i, x, x_stage, e))
                d = tableau_sum(tableau.b, k)
            else:  # equal-step Adams-Bashforth (order 4 on uniform grids for FON)
                d = linear_combination(weights[n], history)
            x = x + h[n] * d
        return x

    return run
