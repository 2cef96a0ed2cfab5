"""DDIM (Song et al. 2021), deterministic (η = 0): the transfer φ with the raw noise estimate."""

from __future__ import annotations

import torch

from pndm.samplers._checks import Method
from pndm.samplers._common import Grid, evaluate
from pndm.samplers.core import EpsFn, Schedule


def _ddim(
    eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: Schedule
) -> torch.Tensor:
    """Deterministic DDIM: x_{n+1} = φ(x_n, e_n, t_n -> t_{n+1}) (paper eq. 9). NFE = N.

    ε' = e_n, an Euler step in (x̄, σ̃): first order.
    """
    grid = Grid.build(x, timesteps, schedule)
    for n in range(grid.steps):
        e = evaluate(eps_fn, x, grid.times[n])  # ε' = e_n (order 1)
        x = grid.transfer(x, e, n)
    return x


ddim = Method("ddim", _ddim, nfe=lambda n: n)
