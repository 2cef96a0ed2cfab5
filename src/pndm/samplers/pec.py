"""Adams-Bashforth predictor + Adams-Moulton corrector in σ̃ with no extra NFE (UniPC-style PEC)."""

from __future__ import annotations

import torch

from pndm.samplers._checks import Method, check_order
from pndm.samplers._common import Grid, evaluate
from pndm.samplers.adams import adams_bashforth_table, adams_moulton_table
from pndm.samplers.core import EpsFn, Schedule, linear_combination


def _pec(
    eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: Schedule, *, order: int = 3
) -> torch.Tensor:
    """AB_k predictor, AM_{k+1} corrector, both variable-step in σ̃ and applied by φ. NFE = N.

    Predict x^p_{n+1} = φ(x_n, ε'_AB); e_{n+1} = ε(x^p_{n+1}, t_{n+1}); correct
    x_{n+1} = φ(x_n, ε'_AM) with ε'_AM on (e_{n+1}, e_n, ...). e_{n+1}, taken at the predicted
    point, is the next step's e_n, so each step costs one call; the last step keeps the predictor.
    ``order`` k in 1..4; global order k + 1 (algorithms.md §3).
    """
    order = check_order("pec", order, range(1, 5))
    grid = Grid.build(x, timesteps, schedule)
    predictor = adams_bashforth_table(grid.sigma, order).to(x.device, x.dtype)
    corrector = adams_moulton_table(grid.sigma, order + 1).to(x.device, x.dtype)
    e = evaluate(eps_fn, x, grid.times[0])
    history: list[torch.Tensor] = []
    for n in range(grid.steps):
        history = [e, *history][:order]
        x_pred = grid.transfer(x, linear_combination(predictor[n], history), n)  # AB_k
        if n == grid.steps - 1:
            return x_pred  # no model call at the target
        e = evaluate(eps_fn, x_pred, grid.times[n + 1])
        x = grid.transfer(x, linear_combination(corrector[n], [e, *history]), n)  # AM_{k+1}
    return x


pec = Method("pec", _pec, nfe=lambda n, order=3: n, options=("order",))
