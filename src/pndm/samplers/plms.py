"""PLMS (CompVis latent-diffusion; diffusers PNDMScheduler with ``skip_prk_steps=True``)."""

from __future__ import annotations

import torch

from pndm.samplers._checks import sampler
from pndm.samplers._common import EpsFn, Grid, pseudo_improved_euler, pseudo_multistep
from pndm.samplers.adams import equal_step_table


@sampler("plms", nfe=lambda n, **_: n + 1)
def plms(eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule) -> torch.Tensor:
    """PLMS: pseudo improved Euler, then pseudo AB2, AB3, AB4 (paper eq. 9 transfer). NFE = N + 1.

    Step 0: ε' = (e_0 + ε(φ(x_0, e_0), t_1))/2 (order 2, 2 NFE; only e_0 is kept).
    Step 1: ε' = (3e_1 - e_0)/2; step 2: (23e_2 - 16e_1 + 5e_0)/12;
    steps >= 3: (55e_n - 59e_{n-1} + 37e_{n-2} - 9e_{n-3})/24 (equal-step weights on any grid).
    """
    grid = Grid.build(x, timesteps, schedule)
    orders = [min(n + 1, 4) for n in range(grid.steps)]
    return pseudo_multistep(
        eps_fn, x, grid, equal_step_table(orders), pseudo_improved_euler, warmup_steps=1
    )
