"""How each model call's output becomes ε, for the stateful schedulers (`pndm.compat.stepper`).

Per call, ε = p·output + q·x at the call's own ᾱ (the wrapper's conversion, `pndm.wrapper`, which
is linear in (output, x)), times a calibration's ε scale κ: (κp, κq) as host floats, made once
before the run. `base_converted` is diffusers' other rule for v-prediction, kept as a compat switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from pndm.samplers.steps import Grid
from pndm.wrapper import eps_from_output

Conversion = tuple[float, float] | None
"""ε = p·output + q·x at a call, as (p, q) host floats; None: ε is the output itself."""


def eps_conversion(prediction_type: str, alpha_bar: torch.Tensor) -> list[Conversion]:
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


def scaled(conversions: list[Conversion], scales: Sequence[float]) -> list[Conversion]:
    """Each conversion times its call's ε scale κ (a calibration's): ε = κ(p·output + q·x)."""
    out: list[Conversion] = []
    for c, k in zip(conversions, scales, strict=True):
        out.append(c if k == 1 else (k, 0.0) if c is None else (k * c[0], k * c[1]))
    return out


def base_converted(grid: Grid) -> Grid:
    """``grid`` stepping on raw v-outputs converted at each step's base point (x_n, t_n):
    φ(x_n, sqrt(ᾱ_n) v' + sqrt(1-ᾱ_n) x_n) = (c_x + c_ε sqrt(1-ᾱ_n)) x_n + c_ε sqrt(ᾱ_n) v'.

    diffusers' PNDMScheduler converts the *combined* v this way (#14816); since every weight row
    sums to 1, the same coefficients apply to the Runge-Kutta stages' combinations.
    """
    a, b = grid.root_a[:-1], grid.root_1ma[:-1]
    changes = {"c_x": grid.c_x + grid.c_eps * b, "c_eps": grid.c_eps * a}
    if grid.mid_c_x is not None and grid.mid_c_eps is not None:
        changes |= {"mid_c_x": grid.mid_c_x + grid.mid_c_eps * b, "mid_c_eps": grid.mid_c_eps * a}
    return replace(grid, **changes)
