"""Pieces shared by the samplers: the grid with its ᾱ values, one model call, the multistep loop.

Every PNDM-family method runs `pseudo_multistep`: x_{n+1} = φ(x_n, ε'_n, t_n -> t_{n+1}) where
ε'_n = Σ_j w_{n,j} e_{n-j} (rows of w sum to 1) or, for the first steps, a warm-up estimate. The
methods differ only in the weight table and the warm-up (the paper's "gradient part"; φ is its
"transfer part"). The grid may make every φ clip the data estimate x̂_0 (``clip_sample``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pndm.checks import check_flag
from pndm.samplers.core import (
    Multistep,
    Tableau,
    equal_step_table,
    linear_combination,
    stage_time,
    transfer_coefficients,
)
from pndm.schedule import SupportsAlphaBar
from pndm.wrapper import EpsFn


def alpha_bar_at(schedule: SupportsAlphaBar, t: torch.Tensor) -> torch.Tensor:
    """schedule.alpha_bar(t) as float64 on t's device, checked to lie in (0, 1]."""
    a = torch.as_tensor(schedule.alpha_bar(t), dtype=torch.float64).to(t.device)
    if a.shape != t.shape:
        raise ValueError(
            f"schedule.alpha_bar returned shape {tuple(a.shape)} for times of shape "
            f"{tuple(t.shape)}"
        )
    if not bool(((a > 0) & (a <= 1)).all()):
        raise ValueError("schedule.alpha_bar must lie in (0, 1] at every grid time")
    return a


# The option names of the x̂_0 clipping every transfer-based method takes (DDIM's clip_sample).
CLIP_OPTIONS = ("clip_sample", "clip_sample_range")


def clip_limit(clip_sample: Any, clip_sample_range: Any) -> float | None:
    """The bound r of x̂_0 in [-r, r] when ``clip_sample``, else None (both options checked)."""
    r = clip_sample_range
    number = isinstance(r, numbers.Real) and not isinstance(r, bool)
    if not number or not math.isfinite(r) or r <= 0:
        raise ValueError(f"clip_sample_range must be a positive finite number, got {r!r}")
    return float(r) if check_flag("clip_sample", clip_sample) else None


def _coefficients(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    c_x, c_eps = transfer_coefficients(a, b)
    return c_x.to(x.dtype), c_eps.to(x.dtype)


@dataclass(frozen=True)
class Grid:
    """t_0 > ... > t_N and ᾱ(t_n) (float64, on x's device), computed once before the loop.

    Also the transfer coefficients of every step and sqrt(ᾱ_n), sqrt(1-ᾱ_n), in x's dtype, and
    with ``midpoints`` the times t_mid = (t_n + t_{n+1})/2, ᾱ(t_mid) and the coefficients of
    φ(·, t_n -> t_mid) of the N steps: the loop then only combines tensors already on the device.
    With ``clip`` = r every φ clips the data estimate x̂_0 to [-r, r], as diffusers'
    DDIMScheduler(clip_sample=True): x' = sqrt(b) clip(x̂_0) + sqrt(1-b) ε with the raw ε kept
    (its default use_clipped_model_output=False).
    """

    times: torch.Tensor
    alpha_bar: torch.Tensor
    c_x: torch.Tensor
    c_eps: torch.Tensor
    root_a: torch.Tensor
    root_1ma: torch.Tensor
    mid_times: torch.Tensor | None = None
    mid_alpha_bar: torch.Tensor | None = None
    mid_c_x: torch.Tensor | None = None
    mid_c_eps: torch.Tensor | None = None
    mid_root_a: torch.Tensor | None = None
    clip: float | None = None

    @classmethod
    def build(
        cls,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        schedule: SupportsAlphaBar,
        midpoints: bool = False,
        clip: float | None = None,
    ) -> Grid:
        """The grid of ``timesteps``; ``clip``: the bound r of x̂_0 to [-r, r] (None: none)."""
        alpha_bar = alpha_bar_at(schedule, timesteps)
        c_x, c_eps = _coefficients(x, alpha_bar[:-1], alpha_bar[1:])
        roots = alpha_bar.sqrt().to(x.dtype), (1 - alpha_bar).sqrt().to(x.dtype)
        mid: dict[str, torch.Tensor] = {}
        if midpoints:
            mid["mid_times"] = stage_time(0.5, timesteps[:-1], timesteps[1:])
            mid["mid_alpha_bar"] = a_mid = alpha_bar_at(schedule, mid["mid_times"])
            mid["mid_c_x"], mid["mid_c_eps"] = _coefficients(x, alpha_bar[:-1], a_mid)
            mid["mid_root_a"] = a_mid.sqrt().to(x.dtype)
        return cls(timesteps, alpha_bar, c_x, c_eps, *roots, clip=clip, **mid)

    @property
    def steps(self) -> int:
        return self.times.numel() - 1

    def data_estimate(self, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """x̂_0 = (x - sqrt(1-ᾱ_n) ε)/sqrt(ᾱ_n) at grid time n (at ᾱ = 1, x itself)."""
        return (x - self.root_1ma[n] * eps) / self.root_a[n]

    def noise_for(self, x: torch.Tensor, x0: torch.Tensor, n: int) -> torch.Tensor:
        """The ε whose data estimate at (x, t_n) is ``x0``: (x - sqrt(ᾱ_n) x̂_0)/sqrt(1-ᾱ_n)."""
        return (x - self.root_a[n] * x0) / self.root_1ma[n]

    def transfer(self, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """φ(x, ε, t_n -> t_{n+1}) (paper eq. 9): `core.transfer` with coefficients made once."""
        out = self.c_x[n] * x + self.c_eps[n] * eps
        return out if self.clip is None else out + self._clipped(x, eps, n, self.root_a[n + 1])

    def transfer_mid(self, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """φ(x, ε, t_n -> t_mid) with coefficients made once (grids built with midpoints)."""
        out = self.mid_c_x[n] * x + self.mid_c_eps[n] * eps  # type: ignore[index]
        if self.clip is None:
            return out
        return out + self._clipped(x, eps, n, self.mid_root_a[n])  # type: ignore[index]

    def _clipped(
        self, x: torch.Tensor, eps: torch.Tensor, n: int, root_b: torch.Tensor
    ) -> torch.Tensor:
        """sqrt(b)(clip(x̂_0) - x̂_0), added to φ(x, ε) = sqrt(b) x̂_0 + sqrt(1-b) ε: exactly 0
        where x̂_0 is inside the range, so unclipped samples are bit-identical to φ."""
        x0 = self.data_estimate(x, eps, n)
        return root_b * (x0.clamp(-self.clip, self.clip) - x0)  # type: ignore[arg-type]

    def time_at(self, c: float, n: int) -> torch.Tensor:
        """t_n + c h_n (0-d, on the grid's device) for a tableau node c."""
        return self._node(c)[0][n]

    def transfer_to(self, c: float, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """φ(x, ε, t_n -> t_n + c h_n) for a tableau node c in (0, 1]."""
        return self.transfer(x, eps, n) if c == 1 else self.transfer_mid(x, eps, n)

    def _node(self, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Times and ᾱ of node c (0, 1/2 or 1) of all N steps."""
        if c in (0, 1):
            k = int(c)
            return self.times[k : self.steps + k], self.alpha_bar[k : self.steps + k]
        if c != 0.5 or self.mid_times is None or self.mid_alpha_bar is None:
            raise ValueError(f"node c = {c} needs a grid built with midpoints=True (c = 1/2)")
        return self.mid_times, self.mid_alpha_bar

    def stages(self, tableau: Tableau) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, s) times and ᾱ of each step's s tableau stages, t_n + c_i h_n."""
        nodes = [self._node(c) for c in tableau.c]
        return torch.stack([t for t, _ in nodes], dim=1), torch.stack([a for _, a in nodes], dim=1)

    @property
    def sigma(self) -> torch.Tensor:
        """σ̃_n = sqrt((1 - ᾱ_n)/ᾱ_n), float64."""
        return ((1 - self.alpha_bar) / self.alpha_bar).sqrt()


def error_norm(v: torch.Tensor, scale: torch.Tensor) -> float:
    """The largest per-sample RMS of v/scale: every sample meets the tolerance."""
    return float((v / scale).square().flatten(1).mean(1).sqrt().max())


def evaluate(eps_fn: EpsFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One model call e = ε(x, t): the 0-d time t for every sample; e comes back in x's dtype."""
    eps = eps_fn(x, t.expand(x.shape[0]))
    if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
        raise ValueError(f"eps_fn must return a tensor of x's shape {tuple(x.shape)}, got {got}")
    return eps.to(x.dtype)


def pseudo_multistep(
    eps_fn: EpsFn,
    x: torch.Tensor,
    grid: Grid,
    weights: torch.Tensor,
    warmup: Tableau | None = None,
    warmup_steps: int = 0,
    first_eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_{n+1} = φ(x_n, ε'_n, t_n -> t_{n+1}), ε'_n = Σ_j weights[n, j] e_{n-j} (paper eq. 9, 12).

    The history holds raw e_n only (newest first, as many as ``weights`` has columns). For the first
    ``warmup_steps`` steps ε'_n is the pseudo Runge-Kutta estimate of ``warmup`` instead (eq. 13).
    ``first_eps`` replaces the model call at t_0 (iPNDM's analytic first step).
    """
    weights = weights.to(device=x.device, dtype=x.dtype)
    history: list[torch.Tensor] = []
    for n in range(grid.steps):
        analytic = n == 0 and first_eps is not None
        e = first_eps if analytic else evaluate(eps_fn, x, grid.times[n])
        history = [e, *history][: weights.shape[1]]
        if warmup is not None and n < warmup_steps:
            eps_prime = pseudo_runge_kutta(warmup, eps_fn, x, e, grid, n)
        else:
            eps_prime = linear_combination(weights[n], history)
        x = grid.transfer(x, eps_prime, n)
    return x


def final_order_caps(alpha_bar: torch.Tensor) -> list[int]:
    """``lower_order_final``'s cap on the order of each step: the steps left from n on, N - n.

    So the last step is order 1, the one before at most 2, and so on: UniPC's rule
    min(order, N - n), and DPM-Solver's for orders <= 3. A step to the same ᾱ (t = 0 -> -1 when the
    final ᾱ is ᾱ_0) is the identity whatever ε', so it is not counted.
    """
    a = alpha_bar.detach().to("cpu")  # one host copy before the loop, as the weight tables
    moves = (a[1:] != a[:-1]).long()
    return moves.flip(0).cumsum(0).flip(0).clamp(min=1).tolist()


def multistep(
    method: Multistep,
    eps_fn: EpsFn,
    x: torch.Tensor,
    grid: Grid,
    first_eps: torch.Tensor | None = None,
    lower_order_final: bool = False,
) -> torch.Tensor:
    """`pseudo_multistep` with the equal-step table, warm-up and warm-up steps of ``method``.

    ``lower_order_final`` caps step n's AB order at `final_order_caps` (warm-up steps unchanged).
    """
    caps = final_order_caps(grid.alpha_bar) if lower_order_final else None
    weights = equal_step_table(method.orders(grid.steps, caps))
    return pseudo_multistep(
        eps_fn, x, grid, weights, method.warmup, method.warmup_steps, first_eps=first_eps
    )


def tableau_sum(weights: tuple[float, ...], stages: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i w_i k_i over the oldest-first stages, skipping zero weights (host floats, no sync)."""
    terms = [w * k for w, k in zip(weights, stages, strict=False) if w]
    return sum(terms[1:], terms[0])


def pseudo_runge_kutta(
    tableau: Tableau, eps_fn: EpsFn, x: torch.Tensor, e: torch.Tensor, grid: Grid, n: int
) -> torch.Tensor:
    """Pseudo Runge-Kutta ε' (paper eq. 13): every stage is φ from the base x_n; s - 1 extra NFE.

    RK4: ε' = (e_1 + 2e_2 + 2e_3 + e_4)/6; improved Euler: ε' = (e_n + ε(φ(x_n, e_n), t_{n+1}))/2.
    """
    stages = [e]
    for c, row in zip(tableau.c[1:], tableau.a, strict=True):
        x_stage = grid.transfer_to(c, x, tableau_sum(row, stages), n)
        stages.append(evaluate(eps_fn, x_stage, grid.time_at(c, n)))
    return tableau_sum(tableau.b, stages)


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


Estimate = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def predict_evaluate_correct(
    eps_fn: EpsFn,
    x: torch.Tensor,
    grid: Grid,
    tables: tuple[torch.Tensor, torch.Tensor],
    estimate: Estimate,
    step: Step,
) -> torch.Tensor:
    """The PEC loop of `pec` and `pec-data`: one model call per step, none at the target.

    d_n = estimate(x, e_n, n) is what the weights combine (ε itself, or x̂_0); step(x, d', n) is
    φ driven by the combination d'. Predict x^p_{n+1} = step(x_n, Σ_j P[n, j] d_{n-j}), call
    e_{n+1} = ε(x^p_{n+1}, t_{n+1}), correct x_{n+1} = step(x_n, Σ_j C[n, j] (d_{n+1}, d_n, ...)).
    d_{n+1}, taken at the predicted point, is the next step's d_n; the last step keeps the
    predictor. ``tables`` = (P, C) on x's device, P with as many columns as the history keeps.
    """
    predictor, corrector = tables
    d = estimate(x, evaluate(eps_fn, x, grid.times[0]), 0)
    history: list[torch.Tensor] = []
    for n in range(grid.steps):
        history = [d, *history][: predictor.shape[1]]
        x_pred = step(x, linear_combination(predictor[n], history), n)  # predictor
        if n == grid.steps - 1:
            return x_pred  # no model call at the target
        d = estimate(x_pred, evaluate(eps_fn, x_pred, grid.times[n + 1]), n + 1)
        x = step(x, linear_combination(corrector[n], [d, *history]), n)  # corrector
    return x
