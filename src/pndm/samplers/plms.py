"""PLMS (CompVis latent-diffusion; diffusers PNDMScheduler with ``skip_prk_steps=True``)."""

from __future__ import annotations

import torch

from pndm.samplers import core
from pndm.samplers.calls import Run
from pndm.samplers.loops import multistep
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, LOWER_ORDER_FINAL, clip_bound
from pndm.samplers.steps import Grid
from pndm.schedule import SupportsAlphaBar


def _plms(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    warmup: bool = True,
    *,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """PLMS: pseudo improved Euler, then pseudo AB2, AB3, AB4 (paper eq. 9 transfer). NFE = N + 1.

    Step 0: ε' = (e_0 + ε(φ(x_0, e_0), t_1))/2 (order 2, 2 NFE; only e_0 is kept).
    Step 1: ε' = (3e_1 - e_0)/2; step 2: (23e_2 - 16e_1 + 5e_0)/12;
    steps >= 3: (55e_n - 59e_{n-1} + 37e_{n-2} - 9e_{n-3})/24 (equal-step weights on any grid).
    Options: ``lower_order_final`` caps step n's AB order at N - n (the last step AB1, the one
    before at most AB2: diffusers' rule for orders <= 3); the improved-Euler step 0 is kept.
    ``clip_sample``/``clip_sample_range``: every φ clips x̂_0, as DDIM's (see ``ddim``).
    Neither option changes the NFE. (``warmup=False``: a run started mid-schedule, AB1 first.)
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    method = core.PLMS if warmup else core.PLMS.without_warmup()
    return multistep(method, grid, like, lower_order_final=lower_order_final)


plms = Method(
    "plms",
    _plms,
    calls=lambda n, **_: n + 1,
    options={**LOWER_ORDER_FINAL, **CLIP_OPTIONS},
    restart={"warmup": False},
)
