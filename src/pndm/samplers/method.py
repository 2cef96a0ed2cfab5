"""A sampling method as data, and the input checks every method runs: one place, one wording.

`Method` holds a method's name, function, NFE formula and its options with their kinds
(`options.Kind`). A fixed-step method's function is its plan (`pndm.samplers.calls`), run by the
pure loop when the method is called and by a diffusers scheduler step by step (`Method.plan`); an
adaptive method's is the pure sampler itself. Calling it resolves the options (names and values
checked once) and checks ``x``, ``timesteps``, ``eps_fn`` and ``schedule`` before the function runs
(so a bad input never surfaces as a traceback from deep inside torch), then runs it under
``torch.no_grad()``. The checks sync with the device once, before the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pndm.grids import as_grid, check_grid_steps, check_num_steps, lowest_model_time
from pndm.samplers.calls import Run, drive
from pndm.samplers.options import Kind
from pndm.schedule import SupportsAlphaBar
from pndm.wrapper import EpsFn


def check_options(method: str, options: dict[str, Any], valid: Iterable[str]) -> None:
    """Reject option names the method does not take, listing the ones it does."""
    valid = tuple(valid)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        choices = ", ".join(valid) if valid else "none"
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"valid options: {choices}"
        )


def check_x(x: Any, name: str = "x") -> None:
    """``x`` must be a finite floating-point tensor with a batch dimension of at least one."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point() or x.ndim < 1 or not x.numel():
        raise ValueError(
            f"{name} must be a non-empty floating-point tensor of shape (batch, ...), got dtype "
            f"{x.dtype} and shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def as_timesteps(timesteps: Any, device: torch.device) -> torch.Tensor:
    """The grid t_0 > ... > t_N as a float64 tensor on ``device``, after checking it: real
    numbers (`grids.as_grid`), at most `grids.check_num_steps` steps."""
    t = as_grid(timesteps)
    if t.numel() < 2:
        raise ValueError(
            f"timesteps needs at least 2 entries (a start and a target), got {t.numel()}"
        )
    check_grid_steps(t.numel() - 1)
    t_host = t.to("cpu")
    if not bool(torch.isfinite(t_host).all()):
        raise ValueError("timesteps contains NaN or inf")
    if not bool((t_host[1:] < t_host[:-1]).all()):
        raise ValueError(
            "timesteps must be strictly decreasing (t_0 > t_1 > ... > t_N, the last entry is the "
            f"target); got {t_host.tolist()[:8]}{' ...' if t.numel() > 8 else ''}"
        )
    return t.to(device=device)


def check_denoise_target(
    options: Mapping[str, Any], timesteps: torch.Tensor, schedule: Any
) -> None:
    """``denoise_to_zero`` calls the model at the target t_N: refused on a discrete schedule
    whose target lies below its trained times (-1: the model never saw it)."""
    if not options.get("denoise_to_zero") or not getattr(schedule, "discrete", False):
        return
    target, lowest = float(timesteps[-1]), lowest_model_time(schedule)
    if target < lowest:
        raise ValueError(
            f"denoise_to_zero must be False on a grid whose target {target:g} lies below the "
            f"model's lowest time {lowest:g} (its extra model call would be there), got True"
        )


def check_callables(eps_fn: Any, schedule: Any) -> None:
    if not callable(eps_fn):
        raise ValueError(f"eps_fn must be callable as eps_fn(x, t), got {eps_fn!r}")
    check_schedule(schedule)


def check_schedule(schedule: Any) -> None:
    if not isinstance(schedule, SupportsAlphaBar):
        raise ValueError(f"schedule must have alpha_bar(t), got {type(schedule).__name__}")


@dataclass(frozen=True, eq=False)
class Method:
    """The sampling method ``name``: its function ``fn``, its model calls ``calls(n, **options)``
    for n steps (None: adaptive) and its options, name -> `Kind` (``options`` are exactly ``fn``'s
    keyword-only parameters, with their defaults there).

    Fixed-step methods: ``fn(like, timesteps, schedule, **options)`` is the plan
    (`pndm.samplers.calls`); ``restart`` holds the keyword arguments that turn it into the plan of
    a run started mid-schedule (`plan`). Adaptive methods (``adaptive``): ``fn(eps_fn, x,
    timesteps, schedule, **options)`` samples. Calling the method resolves the options and
    validates the inputs, then samples under ``torch.no_grad()`` with ``timesteps`` as a float64
    tensor on x's device. Its docstring is ``fn``'s (it states the NFE).
    """

    name: str
    fn: Callable[..., Any]
    calls: Callable[..., int | None]
    options: Mapping[str, Kind] = field(default_factory=dict)
    adaptive: bool = False
    restart: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", self.fn.__doc__)  # help() shows the method's own doc

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options as ``fn`` uses them: every name and value checked here, once."""
        check_options(self.name, options, self.options)
        return {name: self.options[name].check(self.name, name, v) for name, v in options.items()}

    def nfe(self, n: int, **options: Any) -> int | None:
        """Model calls for n steps with these options (None: adaptive), after checking both."""
        n = check_num_steps(n)
        return self.calls(n, **self.resolve(options))

    def plan(
        self,
        like: torch.Tensor,
        timesteps: torch.Tensor | Iterable[float],
        schedule: SupportsAlphaBar,
        restart: bool = False,
        **options: Any,
    ) -> Run:
        """The plan ``run(x)`` on ``timesteps``, its tables on ``like``'s device and dtype.

        ``restart``: the plan of a run that starts mid-schedule (a diffusers pipeline's
        ``set_begin_index``): one model call per step, from an empty history (``self.restart``:
        no Runge-Kutta or analytic warm-up; Adams orders restart at 1).
        """
        if self.adaptive:
            raise ValueError(
                f"method {self.name!r} is adaptive: its model calls depend on the model's outputs, "
                "so it has no plan of calls; use a fixed-step method"
            )
        resolved = self.resolve(options)
        check_schedule(schedule)
        times = as_timesteps(timesteps, like.device)
        check_denoise_target(resolved, times, schedule)
        with torch.no_grad():
            if restart:  # the restart's values win (e.g. no analytic first step mid-schedule)
                resolved = {**resolved, **self.restart}
            return self.fn(like, times, schedule, **resolved)

    def __call__(
        self,
        eps_fn: EpsFn,
        x: torch.Tensor,
        timesteps: torch.Tensor | Iterable[float],
        schedule: SupportsAlphaBar,
        **options: Any,
    ) -> torch.Tensor:
        resolved = self.resolve(options)
        check_callables(eps_fn, schedule)
        check_x(x)
        times = as_timesteps(timesteps, x.device)
        check_denoise_target(resolved, times, schedule)
        with torch.no_grad():  # sampling never needs the model's autograd graph
            if self.adaptive:
                return self.fn(eps_fn, x, times, schedule, **resolved)
            return drive(eps_fn, x, self.fn(x, times, schedule, **resolved))
