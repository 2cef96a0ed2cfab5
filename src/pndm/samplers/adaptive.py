"""Adaptive step-size control, shared by pf and pec-adaptive: the error ratio and the step factor.

A step x_n -> x_{n+1} with local error estimate e is accepted when its error ratio, the largest
per-sample RMS of e/(atol + rtol max(|x_n|, |x_{n+1}|)), is <= 1 (every sample meets the
tolerance); the next step is the last one times `step_factor` (Hairer, Nørsett & Wanner, Solving
ODEs I, §II.4, as scipy's RK45). Each method passes its own constants (`StepLimits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepLimits:
    """A controller's constants: the factor is safety · ratio^(-1/(k+1)) within
    [factor_min, factor_max]."""

    safety: float
    factor_min: float
    factor_max: float


def error_norm(v: torch.Tensor, scale: torch.Tensor) -> float:
    """The largest per-sample RMS of v/scale: every sample meets the tolerance."""
    return float((v / scale).square().flatten(1).mean(1).sqrt().max())


def error_ratio(
    error: torch.Tensor, x: torch.Tensor, x_new: torch.Tensor, rtol: float, atol: float
) -> float:
    """``error`` in units of atol + rtol max(|x|, |x_new|) (`error_norm`); inf where it is not
    finite (a blown-up stage: the step is rejected and shrunk)."""
    ratio = error_norm(error, atol + rtol * torch.maximum(x.abs(), x_new.abs()))
    return ratio if math.isfinite(ratio) else math.inf


def step_factor(ratio: float, k: int, rejected_before: bool, limits: StepLimits) -> float:
    """The next step over the last, for an error estimate of order h^(k+1): safety ·
    ratio^(-1/(k+1)) within [factor_min, factor_max], and no growth at a rejection or right after
    one (scipy's rule)."""
    factor = limits.safety * max(ratio, 1e-10) ** (-1 / (k + 1))
    upper = 1.0 if ratio > 1 or rejected_before else limits.factor_max
    return max(limits.factor_min, min(factor, upper))
