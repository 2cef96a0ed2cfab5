"""A fixed-step method as a coroutine of model calls, and the pure loop that drives it.

A method is written once, in two parts. Its *plan* ``fn(like, timesteps, schedule, **options)``
builds the grid and weight tables on ``like``'s device and dtype (every read of a tensor value on
the host happens here) and returns ``run``. ``run(x)`` is a generator: it yields a `Request`
(x_k, t_k), the point and 0-d time at which it needs model call k, is sent back (x_k', ε_k) and
finally returns x_N. x_k' is the point the caller evaluated ε at: x_k itself in the pure loop,
or the sample a diffusers pipeline passed to ``step`` (it may have edited it, e.g. inpainting),
which the method then continues from.

Two drivers run it: `drive`, the pure loop behind ``SAMPLERS[name](eps_fn, x, ...)``, and the
stateful diffusers scheduler (`pndm.compat.stepper`), one ``step()`` per model call. So no
method's arithmetic exists twice.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from pndm.wrapper import EpsFn

Request = tuple[torch.Tensor, torch.Tensor]
"""(x_k, t_k): model call k is needed at the point x_k and the 0-d time t_k."""
Calls = Generator[Request, tuple[torch.Tensor, torch.Tensor], torch.Tensor]
"""A run: yields requests, is sent (x_k', ε_k) for each, returns x_N."""
Run = Callable[[torch.Tensor], Calls]
"""A plan: ``run(x_0)`` starts a run from x_0 (any number of times; the plan is not changed)."""


def evaluate(eps_fn: EpsFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One model call e = ε(x, t): the 0-d time t for every sample; e comes back in x's dtype."""
    eps = eps_fn(x, t.expand(x.shape[0]))
    if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
        raise ValueError(f"eps_fn must return a tensor of x's shape {tuple(x.shape)}, got {got}")
    return eps.to(x.dtype)


def drive(eps_fn: EpsFn, x: torch.Tensor, run: Run) -> torch.Tensor:
    """The pure loop: answer every request of ``run(x)`` with ε at exactly its point; x_N."""
    calls = run(x)
    try:
        x_k, t_k = next(calls)
        while True:
            x_k, t_k = calls.send((x_k, evaluate(eps_fn, x_k, t_k)))
    except StopIteration as done:
        return done.value


def dry_run(run: Run, like: torch.Tensor) -> tuple[list[float], float | None]:
    """(the model times of the plan's calls in order, the first call's input scale), from a run on
    one sample x_0 = 1 with ε = 0 (the times of a fixed-step method do not depend on ε).

    The scale is None when the first call is at x_0 itself, else the first call's point for
    x_0 = 1: iPNDM's analytic first step moves x_0 to (c_x + c_ε) x_0 before its first call.
    """
    x = torch.ones(1, dtype=like.dtype, device=like.device)
    calls, times, scale = run(x), [], None
    try:
        x_k, t_k = next(calls)
        scale = None if x_k is x else float(x_k.reshape(-1)[0])
        while True:
            times.append(t_k.reshape(()))
            x_k, t_k = calls.send((x_k, torch.zeros_like(x_k)))
    except StopIteration:
        pass
    host = torch.stack(times).to("cpu", torch.float64).tolist() if times else []
    return host, scale
