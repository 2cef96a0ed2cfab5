"""Noise schedules: betas -> alphas_cumprod (float64) and alpha_bar(t) at any time.

Two schedules share one interface, the `Schedule` protocol (``alpha_bar``, ``sigma_tilde``,
``timestep_from_sigma``, ``t_max``, ``t_min``, ``discrete``): the discrete `NoiseSchedule` of
trained checkpoints and the continuous `VPSchedule` used for analytic work. A sampler needs only
``alpha_bar`` (`SupportsAlphaBar`). Notation follows the paper:
alpha_bar is ᾱ, sigma_tilde is σ̃ = sqrt((1 - ᾱ) / ᾱ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from pndm.checks import check_count

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TimeLike = torch.Tensor | float | int | Sequence[float]


@runtime_checkable
class SupportsAlphaBar(Protocol):
    """What a sampler needs of a noise schedule: ᾱ at any time of the grid (float64).

    A schedule may also offer ``log_alpha_bar(t)``: the methods that need dᾱ/dt (fon, pf) then
    differentiate it instead of log(alpha_bar(t)), exactly and faster (`VPSchedule` does).
    """

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Schedule(SupportsAlphaBar, Protocol):
    """A full noise schedule: ᾱ and σ̃ = sqrt((1-ᾱ)/ᾱ) at any time, σ̃'s inverse, the range of
    model times [t_min, t_max], and whether model times are indices of a trained table
    (``discrete``: the final target then is -1, below every trained time)."""

    @property
    def t_max(self) -> float: ...

    @property
    def t_min(self) -> float: ...

    @property
    def discrete(self) -> bool: ...

    def sigma_tilde(self, t: TimeLike) -> torch.Tensor: ...

    def timestep_from_sigma(self, sigma: TimeLike) -> torch.Tensor: ...


def missing_members(schedule: object) -> list[str]:
    """The members of the `Schedule` protocol that ``schedule`` lacks ([] for a Schedule)."""
    protocol = [n for cls in (SupportsAlphaBar, Schedule) for n in vars(cls) if n[0] != "_"]
    return [name for name in protocol if not hasattr(schedule, name)]


def require_schedule(schedule: object, who: str) -> Schedule:
    """``schedule`` if it is a full `Schedule`; else one error: ``who`` needs one, and what
    this one lacks."""
    if not isinstance(schedule, Schedule):
        raise ValueError(
            f"{who} needs a full Schedule (NoiseSchedule or VPSchedule: alpha_bar, sigma_tilde, "
            f"timestep_from_sigma, t_max, t_min, discrete); {type(schedule).__name__} lacks "
            f"{', '.join(missing_members(schedule))}"
        )
    return schedule


def _cosine_betas(num_train_timesteps: int) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, beta capped at 0.999 (diffusers 'squaredcos_cap_v2')."""
    s = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


def make_betas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    beta_schedule: str = "linear",
    trained_betas: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """The float64 beta schedule of a diffusers-style config."""
    if trained_betas is not None:
        betas = torch.as_tensor(trained_betas, dtype=torch.float64).flatten()
        if betas.numel() == 0 or not bool(((betas >= 0) & (betas < 1)).all()):
            raise ValueError("trained_betas must be a non-empty list of values in [0, 1)")
        return betas
    n = check_count("num_train_timesteps", num_train_timesteps, minimum=2)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(n)
    raise ValueError(
        f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {beta_schedule!r}"
        " (or pass trained_betas)"
    )


def _as_time(t: TimeLike) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float64)  # a Python float would go via float32
    # no detach: samplers that need dᾱ/dt (fon, pf) take it by autograd through alpha_bar
    t = t.to(device="cpu" if t.device.type == "meta" else t.device, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("times must be finite numbers; got NaN or inf")
    return t


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete schedule: ``alphas_cumprod[k]`` for k = 0..T-1, in float64.

    ``alpha_bar(t)`` reads ``alphas_cumprod[t + alpha_index_offset]``. Offset 0 is the diffusers
    convention; offset 1 is the original PNDM code's sampling convention (model time t paired with
    ᾱ[t+1], target t = -1 meaning ᾱ[0]). An index below 0 means the end of sampling and gives
    ``final_alpha_cumprod`` (1.0, or ᾱ[0] as diffusers' ``set_alpha_to_one=False``). Fractional
    times interpolate log ᾱ linearly between neighbouring indices (the final value sits at index
    -1).
    """

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float
    alpha_index_offset: int = 0

    def __post_init__(self) -> None:
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64).detach().cpu()
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least 2 entries")
        if not bool(((ac > 0) & (ac <= 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if not 0 < self.final_alpha_cumprod <= 1:
            raise ValueError(
                f"final_alpha_cumprod must lie in (0, 1], got {self.final_alpha_cumprod}"
            )
        if self.alpha_index_offset not in (0, 1):
            raise ValueError(
                f"alpha_index_offset must be 0 (diffusers) or 1 (original PNDM code), "
                f"got {self.alpha_index_offset!r}"
            )
        object.__setattr__(self, "alphas_cumprod", ac)
        table = torch.cat([ac.new_tensor([self.final_alpha_cumprod]), ac])
        object.__setattr__(self, "_table", table)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None = None, **overrides: Any
    ) -> NoiseSchedule:
        """Build from a diffusers scheduler config; keys this class does not use are ignored."""
        cfg = {**(config or {}), **overrides}
        betas = make_betas(
            cfg.get("num_train_timesteps", 1000),
            cfg.get("beta_start", 0.0001),
            cfg.get("beta_end", 0.02),
            cfg.get("beta_schedule", "linear"),
            cfg.get("trained_betas"),
        )
        ac = torch.cumprod(1 - betas, dim=0)
        final = 1.0 if cfg.get("set_alpha_to_one", False) else float(ac[0])
        return cls(ac, final, int(cfg.get("alpha_index_offset", 0)))

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def discrete(self) -> bool:
        """Model times index a trained table; the final target -1 lies below them."""
        return True

    @property
    def t_max(self) -> float:
        """The largest model time with a trained ᾱ."""
        return float(self.num_train_timesteps - 1 - self.alpha_index_offset)

    @property
    def t_min(self) -> float:
        """The smallest model time with a trained ᾱ (the final value lies below it)."""
        return float(-self.alpha_index_offset)

    def alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """ᾱ at model time(s) t, float64, on t's device. Raises past the end of the schedule."""
        t = _as_time(t)
        position = t + self.alpha_index_offset + 1  # position in [final, ᾱ_0, ..., ᾱ_{T-1}]
        last = self.num_train_timesteps
        if bool((position > last + 1e-9).any()):
            raise ValueError(
                f"time {float(t.max()):g} is past the end of the schedule; the largest valid time "
                f"is {self.t_max:g} (num_train_timesteps={last}, alpha_index_offset="
                f"{self.alpha_index_offset})"
            )
        position = position.clamp(0, last)
        table = self._table.to(t.device)  # type: ignore[attr-defined]
        lo = position.floor().long().clamp(max=last - 1)
        w = position - lo
        log_interp = torch.lerp(table[lo].log(), table[lo + 1].log(), w).exp()
        exact = torch.where(w == 0, table[lo], torch.where(w == 1, table[lo + 1], log_interp))
        # value of `exact` (table entries at integers: a + (b - a) == b, Sterbenz), gradient of the
        # interpolant (torch.where would give dᾱ/dt = 0 at integer times)
        return log_interp + (exact - log_interp).detach()

    def sigma_tilde(self, t: TimeLike) -> torch.Tensor:
        """σ̃ = sqrt((1 - ᾱ)/ᾱ) at time(s) t."""
        a = self.alpha_bar(t)
        return ((1 - a) / a).sqrt()

    def timestep_from_sigma(self, sigma: TimeLike) -> torch.Tensor:
        """Exact inverse of ``sigma_tilde`` on trained times (log ᾱ is linear between integers)."""
        sigma = _as_time(sigma)
        log_ac = self.alphas_cumprod.log()
        if not bool((log_ac[1:] < log_ac[:-1]).all()):
            raise ValueError("alphas_cumprod is not strictly decreasing; cannot invert sigma_tilde")
        lo_s, hi_s = (float(v) for v in self.sigma_tilde([self.t_min, self.t_max]))
        if bool(((sigma < lo_s * (1 - 1e-9)) | (sigma > hi_s * (1 + 1e-9))).any()):
            raise ValueError(f"sigma_tilde must lie in [{lo_s:.6g}, {hi_s:.6g}] for this schedule")
        target = -torch.log1p(sigma.clamp(lo_s, hi_s).cpu() ** 2)  # log ᾱ, decreasing in t
        k = torch.searchsorted(-log_ac, -target).clamp(1, log_ac.numel() - 1)
        w = (target - log_ac[k - 1]) / (log_ac[k] - log_ac[k - 1])
        return (k - 1 + w - self.alpha_index_offset).to(sigma.device)


@dataclass(frozen=True)
class VPSchedule:
    """The continuous VP-SDE linear schedule: ᾱ(t) = exp(-β₀t - (β₁-β₀)t²/2), t in (0, 1].

    Defaults β₀ = 0.1, β₁ = 20 as in score_sde and the PNDM paper's PF method.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_max: float = 1.0
    t_min: float = 1e-3

    @property
    def discrete(self) -> bool:
        """Continuous times: the grids end at t_min."""
        return False

    def __post_init__(self) -> None:
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError("VPSchedule needs 0 <= beta_min < beta_max")
        if not 0 < self.t_min < self.t_max:
            raise ValueError("VPSchedule needs 0 < t_min < t_max")

    def log_alpha_bar(self, t: TimeLike) -> torch.Tensor:
        t = _as_time(t)
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha_bar(self, t: TimeLike) -> torch.Tensor:
        return self.log_alpha_bar(t).exp()

    def sigma_tilde(self, t: TimeLike) -> torch.Tensor:
        return torch.expm1(-self.log_alpha_bar(t)).sqrt()

    def timestep_from_sigma(self, sigma: TimeLike) -> torch.Tensor:
        sigma = _as_time(sigma)
        if bool((sigma < 0).any()):
            raise ValueError("sigma_tilde must be non-negative")
        b0, d = self.beta_min, self.beta_max - self.beta_min
        return (-b0 + (b0**2 + 2 * d * torch.log1p(sigma**2)).sqrt()) / d
