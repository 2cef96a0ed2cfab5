"""PLMS (CompVis latent-diffusion; diffusers PNDMScheduler with ``skip_prk_steps=True``)."""

from __future__ import annotations

import torch

from pndm.samplers import core
from pndm.samplers._checks import Method
from pndm.samplers._common import Grid, multistep
from pndm.samplers.core import EpsFn, Schedule


def _plms(
    eps_fn: EpsFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: Schedule
) -> torch.Tensor:
    """PLMS: pseudo improved Euler, then pseudo AB2, AB3, AB4 (paper eq. 9 transfer). NFE = N + 1.

    Step 0: ε' = (e_0 + ε(φ(x_0, e_0), t_1))/2 (order 2, 2 NFE; only e_0 is kept).
    Step 1: ε' = (3e_1 - e_0)/2; step 2: (23e_2 - 16e_1 + 5e_0)/12;
    steps >= 3: (55e_n - 59e_{n-1} + 37e_{n-2} - 9e_{n-3})/24 (equal-step weights on any grid).
    """
    return multistep(core.PLMS, eps_fn, x, Grid.build(x, timesteps, schedule))


plms = Method("plms", _plms, nfe=lambda n: n + 1)
