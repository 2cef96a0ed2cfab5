"""The probability-flow drift in t: dᾱ/dt by autograd, its coefficients, and where it is singular.

dx/dt = ᾱ'/(2ᾱ) [x - ε/sqrt(1-ᾱ)] (algorithms.md §1), used by the methods that integrate the ODE
in t without the transfer φ (FON, PF). ᾱ' comes from autograd of the schedule: of its optional
``log_alpha_bar`` when it has one (exact and faster, e.g. `VPSchedule`), else of log alpha_bar.
"""

from __future__ import annotations

import torch

from pndm.schedule import SupportsAlphaBar


def log_alpha_bar_slope(schedule: SupportsAlphaBar, t: torch.Tensor) -> torch.Tensor:
    """d log ᾱ/dt at times t, by autograd of ``schedule.log_alpha_bar`` (or of log alpha_bar).

    Works inside ``torch.no_grad`` and ``torch.inference_mode``; raises if the schedule detaches t.
    """
    with torch.inference_mode(False), torch.enable_grad():
        t = t.detach().clone().requires_grad_(True)
        log_alpha_bar = getattr(schedule, "log_alpha_bar", None)
        value = log_alpha_bar(t) if log_alpha_bar else torch.log(schedule.alpha_bar(t))
        if not value.requires_grad:
            raise ValueError(
                f"this method needs dᾱ/dt, but {type(schedule).__name__}.alpha_bar is not "
                "differentiable in t (it detaches its input); use a schedule whose alpha_bar "
                "or log_alpha_bar supports torch autograd"
            )
        (slope,) = torch.autograd.grad(value.sum(), t)
    return slope.detach().to(torch.float64)


def check_noisy(method: str, alpha_bar: torch.Tensor) -> None:
    """The drift ε/sqrt(1-ᾱ) is singular at ᾱ = 1: refuse grids that would evaluate it there."""
    if not bool((alpha_bar < 1).all()):
        raise ValueError(
            f"method {method!r} evaluates the probability-flow drift ε/sqrt(1-ᾱ), which is "
            "singular where ᾱ = 1; end the grid at a time with ᾱ < 1 (the schedule's t_min, or "
            "final_alpha_cumprod < 1)"
        )


def vp_drift_coefficients(
    schedule: SupportsAlphaBar, t: torch.Tensor, alpha_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_x, c_ε) of the probability-flow ODE dx/dt = c_x x + c_ε ε at times t, float64.

    dx/dt = ᾱ'/(2ᾱ) [x - ε/sqrt(1-ᾱ)] (algorithms.md §1); c_ε is infinite where ᾱ = 1.
    """
    half_slope = log_alpha_bar_slope(schedule, t) / 2
    return half_slope, -half_slope / (1 - alpha_bar).sqrt()
