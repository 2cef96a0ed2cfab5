"""Variable-step Adams-Bashforth in σ̃ (DEIS ρAB; the correct "iPNDM_v")."""

from __future__ import annotations

import torch

from pndm.samplers.adams import adams_bashforth_table
from pndm.samplers.calls import Run
from pndm.samplers.loops import pseudo_multistep
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, LOWER_ORDER_FINAL, clip_bound, order_in
from pndm.samplers.steps import Grid, final_order_caps
from pndm.schedule import SupportsAlphaBar


def _vab(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    order: int = 4,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """Variable-step AB_k in σ̃ on dx̄/dσ̃ = ε, written as the transfer φ (paper eq. 9). NFE = N.

    ε'_n = Σ_j w_j e_{n-j}/h_n with w_j the integral of the Lagrange basis on σ̃_n, σ̃_{n-1}, ...
    over [σ̃_n, σ̃_{n+1}] (algorithms.md §3). Warm start AB1, AB2, ..., AB_k; ``order`` k in 1..4.
    Global order k on grids uniform in σ̃ or starting at high noise, else 2.
    ``lower_order_final``: step n uses at most N - n nodes, so the last step is AB1 and the one
    before at most AB2 (diffusers' rule for orders <= 3). ``clip_sample``/``clip_sample_range``:
    every φ clips x̂_0, as DDIM's (see ``ddim``). Neither option changes the NFE.
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    caps = final_order_caps(grid.alpha_bar) if lower_order_final else None
    return pseudo_multistep(grid, adams_bashforth_table(grid.sigma, order, caps), like)


vab = Method(
    "vab",
    _vab,
    calls=lambda n, **_: n,
    options={"order": order_in(range(1, 5)), **LOWER_ORDER_FINAL, **CLIP_OPTIONS},
)
