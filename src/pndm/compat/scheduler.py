"""PNDMScheduler: diffusers' stateful ``step()`` API as a thin adapter over the PNDM mathematics.

``set_timesteps`` reads the grid t_0 > ... > t_N (t_N = -1, the final ᾱ; ``grids.scheduler_grid``)
and plans the pure sampler on it (``SAMPLERS["f-pndm"]`` or ``["plms"]``, `pndm.samplers.calls`);
a `pndm.compat.stepper.Stepper` then answers one of the plan's model calls per ``step``. So the
scheduler runs the samplers' own code: no stride arithmetic, no ᾱ look-ups, no host-device sync
in ``step``, and no second copy of the method.

    F-PNDM (skip_prk_steps=False, paper Algorithm 2): steps 0-2 pseudo Runge-Kutta, 4 calls each
        (t_n, mid, mid, t_{n+1}; mid = (t_n + t_{n+1})/2); then pseudo AB4, 1 call each: N + 9.
    PLMS (skip_prk_steps=True, CompVis): step 0 pseudo improved Euler (calls at t_0, t_1); then AB2,
        AB3, AB4, 1 call each: N + 1.

Where diffusers derives a previous timestep from the stride T // n, this class reads it from the
grid; the two agree for "leading" spacing with an even stride and differ for "linspace", for
"trailing" when T % n != 0 (diffusers #11347, #12633) and for odd strides, where diffusers steps
the first Runge-Kutta stage to t - h but evaluates the model at t_{n+1} + h. Here the mid time is
one value, used for both, and ``timesteps`` lists it (a half-integer then: float timesteps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from pndm.checks import check_choice
from pndm.compat.calls import base_converted, eps_conversion
from pndm.compat.outputs import SchedulerOutput
from pndm.compat.scheduler_base import (
    PlannedScheduler,
    check_schedule_keys,
    timestep_array,
    timestep_tensor,
)
from pndm.compat.stepper import Stepper
from pndm.grids import default_method, scheduler_grid
from pndm.samplers import SAMPLERS, core
from pndm.samplers.calls import Run
from pndm.samplers.loops import multistep
from pndm.samplers.method import as_timesteps
from pndm.samplers.steps import Grid

V_PREDICTION_COMPAT = (None, "diffusers")


@dataclass
class _State:
    """Everything ``step`` remembers; ``set_timesteps`` replaces it whole (diffusers PR #2376).

    ``kinds``/``first`` per call: the step_* method diffusers routes it to, and whether it is the
    call at t_n of a step (its ε is e_n, diffusers' ``ets``); the rest are diffusers' running
    values, read from the calls stepped (the run itself lives in ``stepper``).
    """

    stepper: Stepper | None = None
    kinds: tuple[str, ...] = ()
    first: tuple[bool, ...] = ()
    history_size: int = 4
    dtype: torch.dtype = torch.float32
    base: torch.Tensor | None = None  # x_n: the sample the current step transfers from
    stage: list[torch.Tensor] = field(default_factory=list)  # this step's ε's, oldest first
    history: list[torch.Tensor] = field(default_factory=list)  # e_n of past steps (<= 4)


def call_kinds(method: core.Multistep, steps: int, prk: bool) -> tuple[list[str], list[bool]]:
    """Per model call of ``method`` in ``steps`` steps: "prk" (a Runge-Kutta warm-up call, in PRK
    mode) or "plms", and whether it is the first call of its step (at t_n, on x_n)."""
    stages, warm = len(method.warmup.c), min(method.warmup_steps, steps)
    first = [k % stages == 0 for k in range(stages * warm)] + [True] * (steps - warm)
    kinds = ["prk" if prk else "plms"] * (stages * warm) + ["plms"] * (steps - warm)
    return kinds, first


class PNDMScheduler(PlannedScheduler):
    """diffusers' ``PNDMScheduler`` (same arguments, defaults, config keys, methods and outputs).

    Differences, all deliberate: every target and mid time comes from the grid (see the module
    docstring); ``set_timesteps`` resets all state; ``step`` raises when called before
    ``set_timesteps``, after the last planned call, or through the wrong ``step_prk``/``step_plms``;
    invalid ``beta_schedule``, ``timestep_spacing`` and ``prediction_type`` fail here; F-PNDM with
    n < 4 runs n Runge-Kutta steps. The ``timestep`` passed to ``step`` is not consulted: the plan
    decides, as diffusers' call counter does.

    v_prediction: each output is converted to ε at its own (x, t) before it is combined, so the ε-
    and v-forms of one denoiser sample alike. ``v_prediction_compat="diffusers"`` instead converts
    the combined output at the step's base point (diffusers #14816; upstream's 67.3986 golden).
    ``prediction_type="sample"`` (x̂₀ prediction) is also accepted. ``alpha_index_offset=1`` (written
    by ``pndm convert``) reads ᾱ[t + 1] at model time t, the original PNDM code's convention.
    """

    _extra_config_keys: ClassVar[frozenset[str]] = frozenset(
        {"v_prediction_compat", "alpha_index_offset"}
    )

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | Sequence[float] | None = None,
        skip_prk_steps: bool = False,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        v_prediction_compat: str | None = None,
        alpha_index_offset: int = 0,
    ) -> None:
        trained_betas = check_schedule_keys(
            timestep_spacing, prediction_type, steps_offset, trained_betas
        )
        check_choice("v_prediction_compat", v_prediction_compat, V_PREDICTION_COMPAT)
        self._register_config(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            skip_prk_steps=bool(skip_prk_steps),
            set_alpha_to_one=bool(set_alpha_to_one),
            prediction_type=prediction_type,
            timestep_spacing=timestep_spacing,
            steps_offset=int(steps_offset),
            v_prediction_compat=v_prediction_compat,
            alpha_index_offset=int(alpha_index_offset),
        )
        self._init_schedule()
        self._run_state = _State()
        self.prk_timesteps: np.ndarray | None = None
        self.plms_timesteps: np.ndarray | None = None
        self.pndm_order = 4

    # ----------------------------------------------------------------------------------------
    # Planning
    # ----------------------------------------------------------------------------------------

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | None = None,
    ) -> None:
        """Plan the calls for ``num_inference_steps`` steps (or an explicit descending grid).

        ``timesteps``, an extension, gives the model times t_0 > ... > t_{N-1}; the target -1 (the
        final ᾱ) is appended. Resets all state. Model calls: N + 9 (F-PNDM, N >= 3) or N + 1.
        """
        grid = self.grid(num_inference_steps, timesteps)
        # read at call time, so the plan follows the samplers' data (core.F_PNDM, core.PLMS)
        skip = self.config.skip_prk_steps
        method = core.PLMS if skip else core.F_PNDM
        stepper = Stepper.start(lambda like: self._plan(like, grid), device, self._conversions)
        kinds, first = call_kinds(method, grid.numel() - 1, prk=not skip)
        assert len(kinds) == stepper.planned  # the plan's calls are the method's tables'
        times, n_prk = stepper.times, kinds.count("prk")
        self.num_inference_steps = grid.numel() - 1
        self.prk_timesteps = timestep_array(times[:n_prk])
        self.plms_timesteps = timestep_array(times[n_prk:])
        self.timesteps = timestep_tensor(timestep_array(times), device)
        self._run_state = _State(stepper, tuple(kinds), tuple(first), history_size=method.order)
        self._planned = (grid, device)

    def _replan(self, *planned: Any) -> None:
        """Plan the run of ``set_timesteps(timesteps=grid, device=device)`` again (copies)."""
        if planned:
            grid, device = planned
            self.set_timesteps(timesteps=grid, device=device)
        else:
            self._run_state = _State()

    def grid(
        self, num_inference_steps: int | None = None, timesteps: Sequence[float] | None = None
    ) -> torch.Tensor:
        """The descending grid t_0 > ... > t_N = -1 that ``set_timesteps`` plans on (float64, CPU).

        Public so that a pure sampler can run on exactly this scheduler's grid (PNDMPipeline).
        """
        return scheduler_grid(self.config, self.schedule, num_inference_steps, timesteps)

    def _v_compat(self) -> bool:
        config = self.config
        return bool(config.get("v_prediction_compat")) and config.prediction_type == "v_prediction"

    def _plan(self, like: torch.Tensor, grid: torch.Tensor) -> Run:
        """The pure sampler's plan on ``grid``; with ``v_prediction_compat`` its loop on a grid
        whose transfer takes raw v-outputs converted at the step's base (diffusers #14816)."""
        if not self._v_compat():
            return SAMPLERS[default_method(self.config)].plan(like, grid, self.schedule)
        skip = self.config.skip_prk_steps
        times = as_timesteps(grid, like.device)
        built = Grid.build(like, times, self.schedule, midpoints=not skip)
        return multistep(core.PLMS if skip else core.F_PNDM, base_converted(built), like)

    def _conversions(self, times: list[float]) -> list:
        """ε from each call's output at its own ᾱ (none in the v compat mode: raw outputs)."""
        kind = "epsilon" if self._v_compat() else self.config.prediction_type
        return eps_conversion(kind, self.schedule.alpha_bar(times))

    # ----------------------------------------------------------------------------------------
    # Stepping
    # ----------------------------------------------------------------------------------------

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Take the next planned call's output and return the sample for the call after it.

        ``timestep`` is accepted for diffusers compatibility and not consulted: the plan made by
        ``set_timesteps`` gives every time. Returns ``SchedulerOutput`` or ``(prev_sample,)``.
        """
        return self._step(model_output, sample, return_dict, kind=None)

    def step_prk(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """``step`` for a pseudo Runge-Kutta call (the first 12 calls of F-PNDM)."""
        return self._step(model_output, sample, return_dict, kind="prk")

    def step_plms(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """``step`` for a pseudo linear multistep call (PLMS, or F-PNDM after its warm-up)."""
        return self._step(model_output, sample, return_dict, kind="plms")

    def _step(
        self, model_output: torch.Tensor, sample: torch.Tensor, return_dict: bool, kind: str | None
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """The one body of step, step_prk and step_plms: one planned call, checked against
        ``kind``, answered by the stepper; then diffusers' running values are updated."""
        state = self._run_state
        stepper = self._check_call(kind)
        k = stepper.counter
        prev_sample = stepper.step(model_output, sample)
        _, eps = stepper.last  # type: ignore[misc]
        state.dtype = sample.dtype
        if state.first[k]:
            state.base, state.stage = sample, []
            state.history = [*state.history, eps][-state.history_size :]
        state.stage.append(eps)
        return SchedulerOutput(prev_sample) if return_dict else (prev_sample,)

    def _check_call(self, kind: str | None) -> Stepper:
        state = self._run_state
        if state.stepper is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after "
                "creating the scheduler"
            )
        k = state.stepper.counter
        if kind is not None and k < len(state.kinds) and state.kinds[k] != kind:
            raise ValueError(
                f"call {k} is a {state.kinds[k]!r} call, not {kind!r}: use step(), or "
                f"step_{state.kinds[k]}()"
            )
        return state.stepper

    # ----------------------------------------------------------------------------------------
    # diffusers' other API
    # ----------------------------------------------------------------------------------------

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """PNDM needs no input scaling; returns ``sample``."""
        return sample

    # Read-compatible views of diffusers' running values.

    @property
    def ets(self) -> list[torch.Tensor]:
        """The stored noise estimates e_n, oldest first (diffusers' ``ets``); assignable. The
        Adams weights come from the step index, not from how many are stored, so preset values
        are only kept (trimmed to four), as diffusers' upstream test presets them."""
        return [e.to(self._run_state.dtype) for e in self._run_state.history]

    @ets.setter
    def ets(self, values: Sequence[torch.Tensor]) -> None:
        self._run_state.history = list(values)

    @property
    def counter(self) -> int:
        """Model calls stepped since ``set_timesteps``."""
        stepper = self._run_state.stepper
        return 0 if stepper is None else stepper.counter

    @property
    def cur_sample(self) -> torch.Tensor | None:
        """The sample the current step transfers from (x_n)."""
        return self._run_state.base

    @property
    def cur_model_output(self) -> torch.Tensor | int:
        """diffusers' running Runge-Kutta sum e1/6 + e2/3 + e3/3 inside a step, else 0."""
        state, k = self._run_state, self.counter
        inside = 0 < k < len(state.kinds) and not state.first[k]
        if not inside or state.kinds[k - 1] != "prk":
            return 0
        total = sum(w * e for w, e in zip(core.F_PNDM.warmup.b, state.stage, strict=False))
        return total.to(state.dtype)  # type: ignore[union-attr]
