"""Variable-step Adams-Bashforth in σ̃ (DEIS ρAB; the correct "iPNDM_v")."""

from __future__ import annotations

import torch

from pndm.samplers._checks import Method, check_order
from pndm.samplers._common import Grid, pseudo_multistep
from pndm.samplers.adams import adams_bashforth_table
from pndm.samplers.core import EpsFn, Schedule


def _vab(
    eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: Schedule, *, order: int = 4
) -> torch.Tensor:
    """Variable-step AB_k in σ̃ on dx̄/dσ̃ = ε, written as the transfer φ (paper eq. 9). NFE = N.

    ε'_n = Σ_j w_j e_{n-j}/h_n with w_j the integral of the Lagrange basis on σ̃_n, σ̃_{n-1}, ...
    over [σ̃_n, σ̃_{n+1}] (algorithms.md §3). Warm start AB1, AB2, ..., AB_k; ``order`` k in 1..4.
    Global order k on grids uniform in σ̃ or starting at high noise, else 2.
    """
    order = check_order("vab", order, range(1, 5))
    grid = Grid.build(x, timesteps, schedule)
    return pseudo_multistep(eps_fn, x, grid, adams_bashforth_table(grid.sigma, order))


vab = Method("vab", _vab, nfe=lambda n, order=4: n, options=("order",))
