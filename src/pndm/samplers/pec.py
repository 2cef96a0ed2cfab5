"""Adams-Bashforth predictor + Adams-Moulton corrector in σ̃ with no extra NFE (UniPC-style PEC)."""

from __future__ import annotations

import torch

from pndm.samplers.adams import adams_bashforth_table, adams_moulton_table
from pndm.samplers.calls import Run
from pndm.samplers.loops import predict_evaluate_correct
from pndm.samplers.method import Method
from pndm.samplers.options import CLIP_OPTIONS, LOWER_ORDER_FINAL, clip_bound, order_in
from pndm.samplers.steps import Grid, final_order_caps
from pndm.schedule import SupportsAlphaBar


def _pec(
    like: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: SupportsAlphaBar,
    *,
    order: int = 3,
    lower_order_final: bool = False,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
) -> Run:
    """AB_k predictor, AM_{k+1} corrector, both variable-step in σ̃ and applied by φ. NFE = N.

    Predict x^p_{n+1} = φ(x_n, ε'_AB); e_{n+1} = ε(x^p_{n+1}, t_{n+1}); correct
    x_{n+1} = φ(x_n, ε'_AM) with ε'_AM on (e_{n+1}, e_n, ...). e_{n+1}, taken at the predicted
    point, is the next step's e_n, so each step costs one call; the last step keeps the predictor.
    ``order`` k in 1..4; global order k + 1 (algorithms.md §3).
    ``lower_order_final``: the predictor of step n is at most AB_{N-n} (the last step AB1, the one
    before at most AB2: diffusers' rule for orders <= 3) and its corrector one order higher, as
    usual. ``clip_sample``/``clip_sample_range``: every φ (predictor and corrector) clips x̂_0,
    as DDIM's (see ``ddim``). Neither option changes the NFE.
    """
    grid = Grid.build(like, timesteps, schedule, clip=clip_bound(clip_sample, clip_sample_range))
    caps = final_order_caps(grid.alpha_bar) if lower_order_final else None
    predictor = adams_bashforth_table(grid.sigma, order, caps).to(like.device, like.dtype)
    corrector_caps = None if caps is None else [k + 1 for k in caps]  # AM_{k+1} after AB_k
    corrector = adams_moulton_table(grid.sigma, order + 1, corrector_caps)
    tables = (predictor, corrector.to(like.device, like.dtype))
    return predict_evaluate_correct(grid, tables, lambda _x, e, _n: e, grid.transfer)


pec = Method(
    "pec",
    _pec,
    calls=lambda n, **_: n,
    options={"order": order_in(range(1, 5)), **LOWER_ORDER_FINAL, **CLIP_OPTIONS},
)
