"""Per-call corrections of a model on a tuned grid: a time shift and a scale of ε.

At low NFE a network's ε at the few times a sampler visits is not what the solver's error model
assumes: the state has drifted off the training distribution (exposure bias), and one call
stands for a whole interval. A `Calibration` corrects each call the sampler makes at a grid time
t_k: the network sees t_k + δ_k and its ε is multiplied by κ_k,

    ε̃(x, t_k) = κ_k ε_θ(x, t_k + δ_k),

(ε_θ(x, s) is the model's noise prediction at time s: a v or x₀ network's output is converted
with ᾱ(s), as for any call at s; `pndm.wrapper`'s ``time_shift``, an index convention of the
network, moves only the time the network sees),

the time shift of Li et al. (2023, "Alleviating exposure bias via time-shift sampling") and the
ε scaling of Ning et al. (2023), chosen per call by `pndm.tuning` (``calibrate=True``) together
with the grid. The solver itself is unchanged: it still steps between its own grid times.

Between the calibrated times δ and κ are interpolated linearly in t, and held constant beyond
them, so every time has one well-defined correction; a calibration is meant for the grid and
method it was tuned with (those call exactly the calibrated times). Importing this module does
not import torch (grid files are read before the model is loaded).

Bounds: every κ_k lies in [e^-5, e^5] (`LOG_SCALE_LIMIT`: the tuner searches no further, and
past it the correction, not the network, decides the step: ε has unit scale); every shifted time
t_k + δ_k lies in the schedule's range [target, t_max] (`check_calibration` with a schedule: a
calibration alone has none), so no call is made at a time the model was never trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pndm.wrapper import EpsFn

LOG_SCALE_LIMIT = 5.0  # |log κ| at most this: a factor of 148 either way (module docstring)


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if hasattr(values, "tolist"):  # a tensor or an array
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of numbers, got {type(values).__name__}")
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(values) or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{name} must hold finite numbers only, got {list(values)!r}")
    return tuple(float(v) for v in numbers)


@dataclass(frozen=True)
class Calibration:
    """δ_k and κ_k at the model times t_0 > ... > t_{K-1} (module docstring)."""

    times: tuple[float, ...]
    time_shifts: tuple[float, ...]
    eps_scales: tuple[float, ...]

    def __post_init__(self) -> None:
        times = _floats("calibration times", self.times)
        shifts = _floats("time_shifts", self.time_shifts)
        scales = _floats("eps_scales", self.eps_scales)
        if not times or not len(times) == len(shifts) == len(scales):
            raise ValueError(
                "a calibration needs one time shift and one ε scale per calibrated time; got "
                f"{len(times)} times, {len(shifts)} shifts, {len(scales)} scales"
            )
        if not all(a > b for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"calibration times must be strictly decreasing, got {times}")
        if not all(s > 0 for s in scales):
            raise ValueError(f"eps_scales must be positive, got {scales}")
        if not all(abs(math.log(s)) <= LOG_SCALE_LIMIT * (1 + 1e-12) for s in scales):
            raise ValueError(
                f"eps_scales must lie in [e^-{LOG_SCALE_LIMIT:g}, e^{LOG_SCALE_LIMIT:g}] = "
                f"[{math.exp(-LOG_SCALE_LIMIT):.4g}, {math.exp(LOG_SCALE_LIMIT):.4g}], got {scales}"
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "time_shifts", shifts)
        object.__setattr__(self, "eps_scales", scales)

    @classmethod
    def identity(cls, times: Sequence[float]) -> Calibration:
        """No correction (δ = 0, κ = 1) at ``times``."""
        return cls(tuple(times), (0.0,) * len(times), (1.0,) * len(times))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        """The inverse of `to_json`; a ``ValueError`` names what is wrong."""
        if not isinstance(data, Mapping) or set(data) != {"times", "time_shifts", "eps_scales"}:
            raise ValueError(
                'a calibration must be an object with exactly "times", "time_shifts" and '
                f'"eps_scales", got {data!r}'
            )
        return cls(data["times"], data["time_shifts"], data["eps_scales"])

    def to_json(self) -> dict[str, list[float]]:
        return {
            "times": list(self.times),
            "time_shifts": list(self.time_shifts),
            "eps_scales": list(self.eps_scales),
        }

    def _tables(self, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(the times ascending, the (2, K) rows δ and κ in that order), float64 on ``device``."""
        import torch

        knots = torch.tensor(self.times[::-1], dtype=torch.float64, device=device)
        values = torch.tensor([self.time_shifts[::-1], self.eps_scales[::-1]],
                              dtype=torch.float64, device=device)  # fmt: skip
        return knots, values

    def at(
        self, t: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ(t), κ(t)) for a tensor of times, float64: exact at the calibrated times (lerp is
        exact at both ends), linear between them, constant beyond them."""
        import torch

        knots, values = self._tables(t.device) if tables is None else tables
        t = t.to(torch.float64).clamp(knots[0], knots[-1])
        if knots.numel() == 1:
            return values[0].expand_as(t), values[1].expand_as(t)
        i = torch.searchsorted(knots, t).clamp(1, knots.numel() - 1)
        w = (t - knots[i - 1]) / (knots[i] - knots[i - 1])
        out = torch.lerp(values[:, i - 1], values[:, i], w)
        return out[0], out[1]

    def apply(self, eps_fn: EpsFn) -> EpsFn:
        """``eps_fn`` corrected: ε̃(x, t) = κ(t) ε(x, t + δ(t)), where ``eps_fn`` converts the
        network's output at t + δ as at any call there. The tables go to each device once; a
        batch's shared time (a stride-0 tensor, as the samplers pass) stays one shared time."""
        cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

        def calibrated(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if t.device not in cache:
                cache[t.device] = self._tables(t.device)
            shared = t.ndim == 1 and t.numel() > 1 and t.stride(0) == 0
            head = t[:1] if shared else t
            shift, scale = self.at(head, cache[t.device])
            eps = eps_fn(x, (head + shift.to(t.dtype)).expand_as(t))
            return scale.to(eps.dtype).reshape(-1, *([1] * (eps.ndim - 1))) * eps

        return calibrated


def check_calibration(calibration: Any, schedule: Any = None) -> None:
    """Refuse anything but a `Calibration` or None (e.g. its JSON: `Calibration.from_json`); with
    a ``schedule``, also a shifted time t_k + δ_k outside its range [target, t_max]."""
    if calibration is not None and not isinstance(calibration, Calibration):
        raise ValueError(
            "calibration must be a pndm.calibration.Calibration (a grid file's .calibration, or "
            f"Calibration.from_json(...)) or None, got {type(calibration).__name__}"
        )
    if calibration is None or schedule is None:
        return
    from pndm.grids import final_target

    low, high = final_target(schedule), float(schedule.t_max)
    slack = 1e-9 * max(1.0, high - low)  # δ was stored as (shifted time - t): round-off
    for t, shift in zip(calibration.times, calibration.time_shifts, strict=True):
        if not low - slack <= t + shift <= high + slack:
            raise ValueError(
                f"calibration time_shifts must keep each shifted time t + δ in the schedule's "
                f"range [{low:g}, {high:g}], got t = {t:g}, δ = {shift:g}"
            )
