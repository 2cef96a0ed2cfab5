"""The per-step coefficient table of a timestep grid: ᾱ, the transfer coefficients, the clip bound.

`Grid` is built once before a sampler's loop from ``timesteps`` and the schedule, so the loop only
combines tensors already on the device. A step n goes t_n -> t_{n+1}; with ``midpoints`` the grid
also holds t_mid = (t_n + t_{n+1})/2 (the Runge-Kutta nodes c = 1/2). `final_order_caps` is the
per-step order bound of the ``lower_order_final`` option.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pndm.samplers.core import Tableau, stage_time, transfer_coefficients
from pndm.schedule import SupportsAlphaBar


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
        return (x - self.root_1ma[n] * eps).div_(self.root_a[n])

    def noise_for(self, x: torch.Tensor, x0: torch.Tensor, n: int) -> torch.Tensor:
        """The ε whose data estimate at (x, t_n) is ``x0``: (x - sqrt(ᾱ_n) x̂_0)/sqrt(1-ᾱ_n)."""
        return (x - self.root_a[n] * x0).div_(self.root_1ma[n])

    def transfer(self, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """φ(x, ε, t_n -> t_{n+1}) (paper eq. 9): `core.transfer` with coefficients made once."""
        out = (self.c_x[n] * x).add_(self.c_eps[n] * eps)  # c_x x + c_ε ε, one new tensor
        return out if self.clip is None else out + self._clipped(x, eps, n, self.root_a[n + 1])

    def transfer_mid(self, x: torch.Tensor, eps: torch.Tensor, n: int) -> torch.Tensor:
        """φ(x, ε, t_n -> t_mid) with coefficients made once (grids built with midpoints)."""
        out = (self.mid_c_x[n] * x).add_(self.mid_c_eps[n] * eps)  # type: ignore[index]
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


def final_order_caps(alpha_bar: torch.Tensor) -> list[int]:
    """``lower_order_final``'s cap on the order of each step: the steps left from n on, N - n.

    So the last step is order 1, the one before at most 2, and so on: UniPC's rule
    min(order, N - n), and DPM-Solver's for orders <= 3. A step to the same ᾱ (t = 0 -> -1 when the
    final ᾱ is ᾱ_0) is the identity whatever ε', so it is not counted.
    """
    a = alpha_bar.detach().to("cpu")  # one host copy before the loop, as the weight tables
    moves = (a[1:] != a[:-1]).long()
    return moves.flip(0).cumsum(0).flip(0).clamp(min=1).tolist()
