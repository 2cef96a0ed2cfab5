"""The stateful driver of a method's plan: one diffusers ``step()`` per model call.

`pndm.samplers.calls` writes each fixed-step method once, as a plan whose run asks for its model
calls; the pure loop answers them all at once, a `Stepper` one per ``step``: it sends the model's
output, converted to ε at the call's own point and time, into the run and returns the point of the
next call (the pipeline's next model input), or x_N after the last. The plan, the call times and
the ε conversions are made before the run (where reading tensors on the host is allowed), so a
step does tensor arithmetic only: no host-device synchronisation (diffusers #9485).

Precision: the run's state and arithmetic have the dtype `state_dtype` gives the sample's dtype
(the plan is made in the likely one and made again at the first step if the sample's differs).
A pipeline that passes back the sample it was given keeps that state unrounded (half-precision
latents then do not round a float32 state); one that edits its latents between calls (inpainting
blends the known region in) passes a new tensor, and the run continues from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from pndm.compat.calls import Conversion
from pndm.samplers.calls import Calls, Run, dry_run


def state_dtype(sample_dtype: torch.dtype) -> torch.dtype:
    """The pure samplers' rule: float64 for float64 samples, else float32 (half-precision latents
    keep a float32 state)."""
    return torch.float64 if sample_dtype == torch.float64 else torch.float32


def plan_like(device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """The tensor a plan is built on: the state's dtype on ``device`` (CPU if None)."""
    return torch.empty(0, dtype=dtype, device=device)


@dataclass
class Stepper:
    """A plan stepped one model call at a time. ``build(like)`` makes the plan on like's device
    and dtype (``run``, on ``like``, in the state dtype `state_dtype` gives); ``times``: the solver
    time of each call (host floats, from a dry run); ``conversions``: how each call's output
    becomes ε; ``skip``: calls whose output is not needed (a pipeline's extra calls after a
    mid-schedule start: the sample passes unchanged); ``first_scale``: the first call's input is
    this times x_0 (iPNDM's analytic first step)."""

    build: Callable[[torch.Tensor], Run]
    run: Run
    times: list[float]
    conversions: list[Conversion]
    like: torch.Tensor  # the plan's device and dtype
    skip: frozenset[int] = frozenset()
    first_scale: float | None = None
    counter: int = 0
    calls: Calls | None = None
    last: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    pending: torch.Tensor | None = field(default=None, repr=False)  # the next call's point
    returned: torch.Tensor | None = field(default=None, repr=False)  # ... as given to the caller

    @classmethod
    def start(
        cls,
        build: Callable[[torch.Tensor], Run],
        device: torch.device | str | None,
        convert: Callable[[list[float]], list[Conversion]] | None = None,
    ) -> Stepper:
        """A stepper of the plan ``build`` makes on ``device`` in `state_dtype`'s dtype for
        float32 samples, its calls listed by a dry run and converted by ``convert(times)``
        (default: the outputs are ε)."""
        like = plan_like(device, state_dtype(torch.float32))
        host = plan_like("cpu", torch.float64)  # the dry run: exact times and scale, no sync
        times, scale = dry_run(build(host), host)
        if not times:
            raise ValueError("this method makes no model call on this grid; use more steps")
        conversions = [None] * len(times) if convert is None else convert(times)
        return cls(build, build(like), times, conversions, like, first_scale=scale)

    @property
    def planned(self) -> int:
        """The model calls this run expects (its ``timesteps``)."""
        return len(self.times)

    def model_input(self, sample: torch.Tensor) -> torch.Tensor:
        """The model's input at the next call: the sample, or at the first call of a run with an
        analytic first step the point it moved to (linear in x_0: ``first_scale``·x_0)."""
        if self.counter == 0 and self.first_scale is not None:
            return sample * self.first_scale
        return sample

    def step(self, output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Answer the pending call with ``output`` (the model's, at ``sample``); the next call's
        point in ``sample``'s dtype, or x_N after the last call."""
        k = self._next(output, sample)
        if k in self.skip:
            return sample
        x = self._point(sample)
        eps = self.eps(output, x, k)
        self.last = (x, eps)
        try:
            self.pending = self.calls.send((x, eps))[0]  # type: ignore[union-attr]
        except StopIteration as done:
            self.pending = done.value
        self.returned = self.pending.to(sample.dtype)
        return self.returned

    def _point(self, sample: torch.Tensor) -> torch.Tensor:
        """The point the model was called at, in the state dtype: the run's own point when the
        pipeline passed back what it was given (same object: no rounding to the pipeline's
        dtype), else the pipeline's sample (it edited it, e.g. inpainting: the run follows)."""
        if self.calls is None:  # the run starts from the first sample the pipeline passes
            dtype = state_dtype(sample.dtype)
            if (sample.device, dtype) != (self.like.device, self.like.dtype):
                self.like = plan_like(sample.device, dtype)  # planned for another: plan again
                self.run = self.build(self.like)
            self.calls = self.run(sample.to(dtype))
            return next(self.calls)[0]  # the first call's point: x_0 (or φ(x_0, x_0) with afs)
        if sample is self.returned and self.pending is not None:
            return self.pending
        return sample.to(self.like.dtype)

    def _next(self, output: torch.Tensor, sample: torch.Tensor) -> int:
        """The index of the call being answered, after checking the step is one (host-only)."""
        if self.counter >= self.planned:
            raise ValueError(
                f"all {self.planned} planned model calls have been stepped; call set_timesteps "
                "again to start a new sampling run"
            )
        if output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(output.shape)}, the sample {tuple(sample.shape)}; "
                "pass the model's output for this sample (after classifier-free guidance)"
            )
        self.counter += 1
        return self.counter - 1

    def eps(self, output: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
        """ε of call k from the model's output at x (the call's own point), in the state dtype."""
        output = output.to(self.like.dtype)
        conversion = self.conversions[k]
        if conversion is None:
            return output
        p, q = conversion
        return output * p if q == 0 else output * p + x * q  # the wrapper's order of operations


def restart_grid(times: list[float], target: float) -> list[float]:
    """The grid a run started at ``times[0]`` steps on: the distinct ``times`` (the remaining
    model-call times, in order), then the target unless they end there."""
    grid = [t for i, t in enumerate(times) if i == 0 or t != times[i - 1]]  # non-increasing
    return grid if grid[-1] == target else [*grid, target]


def answering(stepper: Stepper, times: list[float]) -> Stepper:
    """``stepper`` answering a pipeline's calls at ``times``: its own calls, in order, are among
    them; every other entry (a time listed twice inside a Runge-Kutta or improved-Euler warm-up,
    or a last call at the target) is a call whose output is not needed (`Stepper.skip`)."""
    own = iter(enumerate(stepper.times))
    expected = next(own, None)
    conversions: list[Conversion] = []
    skip = set()
    for k, t in enumerate(times):
        if expected is not None and t == expected[1]:
            conversions.append(stepper.conversions[expected[0]])
            expected = next(own, None)
        else:
            conversions.append(None)
            skip.add(k)
    if expected is not None:
        raise ValueError(f"the run needs a model call at t = {expected[1]:g} that is not listed")
    return replace(stepper, times=list(times), conversions=conversions, skip=frozenset(skip))
