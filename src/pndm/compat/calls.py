"""The plan of a stateful PNDM scheduler: one entry per model call, read from the pure samplers'
own data (``samplers.core.F_PNDM`` and ``PLMS``: warm-up tableau, warm-up steps, Adams orders),
holding the call's time, which noise estimates ε' combines, and the coefficients of φ(x_n, ε',
t_n -> target) (paper eq. 9) as host floats, so that a step only does tensor arithmetic."""

from __future__ import annotations

from typing import NamedTuple

import torch

from pndm.samplers.core import Multistep, equal_step_table, stage_time
from pndm.wrapper import eps_from_output


class Call(NamedTuple):
    """One model call of the plan; ``time`` is its entry in ``timesteps``."""

    time: float
    kind: str  # "prk" or "plms": the step_* method diffusers would route this call to
    first: bool  # the call at t_n: its sample is x_n, its ε is e_n and joins the history
    weights: tuple[float, ...]  # ε' = Σ w_j·ε_j
    on_history: bool  # ε_j: the history e_n, e_{n-1}, ... (Adams); else this step's stages
    base_time: float
    target_time: float
    c_x: float = 0.0  # x' = c_x·x_n + c_eps·ε'
    c_eps: float = 0.0
    to_eps: tuple[float, float] | None = None  # ε = p·output + q·sample, None for epsilon


def warmup_calls(method: Multistep, t: float, t_next: float, kind: str) -> list[Call]:
    """One Runge-Kutta warm-up step (paper eq. 13): a call per stage of ``method.warmup``.

    Stage i's output moves x_n to stage i + 1's time with row a_{i+1}; the last one, with b, to
    t_{n+1}. F-PNDM: t_n, mid, mid, t_{n+1}; PLMS's improved Euler: t_n, t_{n+1}.
    """
    tableau = method.warmup
    times = [stage_time(c, t, t_next) for c in tableau.c]
    rows = [*tableau.a, tableau.b]
    targets = [*times[1:], t_next]
    return [
        Call(time, kind, i == 0, row, False, t, target)
        for i, (time, row, target) in enumerate(zip(times, rows, targets, strict=True))
    ]


def plan_calls(method: Multistep, grid: list[float], warmup_kind: str) -> list[Call]:
    """The calls of ``method`` on the grid: its warm-up steps, then one Adams call per step."""
    rows = equal_step_table(method.orders(len(grid) - 1)).tolist()
    calls = []
    for n, (t, t_next) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        if n < method.warmup_steps:
            calls += warmup_calls(method, t, t_next, warmup_kind)
        else:  # pseudo linear multistep (eq. 12), newest first
            calls.append(Call(t, "plms", True, tuple(rows[n]), True, t, t_next))
    return calls


def eps_conversion(prediction_type: str, alpha_bar: torch.Tensor) -> list:
    """(p, q) per call with ε = p·output + q·sample at the call's own ᾱ (None for epsilon).

    The conversion is the wrapper's (``eps_from_output``), which is linear in (output, sample):
    evaluating it on unit inputs gives its coefficients once, in float64, off the step path.
    """
    if prediction_type == "epsilon":
        return [None] * alpha_bar.numel()
    one, zero = torch.ones_like(alpha_bar), torch.zeros_like(alpha_bar)
    p = eps_from_output(one, zero, alpha_bar, prediction_type)
    q = eps_from_output(zero, one, alpha_bar, prediction_type)
    if not bool(torch.isfinite(p).all() and torch.isfinite(q).all()):
        raise ValueError(
            f"prediction_type={prediction_type!r} cannot be converted to ε where ᾱ = 1 (a model "
            "call at the final time with set_alpha_to_one=True); use more steps or "
            "set_alpha_to_one=False"
        )
    return list(zip(p.tolist(), q.tolist(), strict=True))


def combine(x: torch.Tensor, c_x: float, terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """φ(x, ε') = c_x·x + Σ_j (c_eps·w_j)·e_j, with c_eps folded into the weights (eq. 9).

    Summed as x + increment, so x's scale is rounded once; half precision works in float32.
    """
    dtype = x.dtype
    x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    increment = torch.mul(x, c_x - 1.0)
    for w, e in terms:
        increment.add_(e, alpha=w)
    return increment.add_(x).to(dtype)
