"""PNDMScheduler: diffusers' stateful ``step()`` API as a thin adapter over the PNDM mathematics.

``set_timesteps`` reads the grid t_0 > ... > t_N (t_N = -1, the final ᾱ; ``grids.scheduler_grid``)
and turns it into a *plan*: one entry per model call, holding the call's time, which noise estimates
ε' combines, and the transfer coefficients of φ(x_n, ε', t_n -> target) (paper eq. 9) as host
floats. The plan is read from the pure samplers' own data (``samplers.core.F_PNDM`` and ``PLMS``:
warm-up tableau, warm-up steps, Adams orders), so the two cannot drift apart. ``step`` only does
tensor arithmetic: no stride arithmetic, no ᾱ look-ups, no host-device sync.

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
from pndm.compat.calls import Call, combine, eps_conversion, plan_calls
from pndm.compat.outputs import SchedulerOutput
from pndm.config import ConfigMixin
from pndm.grids import SCHEDULER_SPACINGS, scheduler_grid
from pndm.samplers import core
from pndm.samplers.core import transfer_coefficients
from pndm.schedule import NoiseSchedule, make_betas
from pndm.wrapper import PREDICTION_TYPES

V_PREDICTION_COMPAT = (None, "diffusers")


@dataclass
class _State:
    """Everything ``step`` remembers; ``set_timesteps`` replaces it whole (diffusers PR #2376)."""

    plan: tuple[Call, ...] = ()
    history_size: int = 4
    counter: int = 0
    base: torch.Tensor | None = None  # x_n: the sample the current step transfers from
    stage: list[torch.Tensor] = field(default_factory=list)  # this step's ε's, oldest first
    history: list[torch.Tensor] = field(default_factory=list)  # e_n of past steps (<= 4)


class PNDMScheduler(ConfigMixin):
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

    config_name: ClassVar[str] = "scheduler_config.json"
    _extra_config_keys: ClassVar[frozenset[str]] = frozenset(
        {"v_prediction_compat", "alpha_index_offset"}
    )
    _compatibles: ClassVar[list[str]] = [
        "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
        "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
        "DPMSolverSDEScheduler", "EDMEulerScheduler",
    ]  # fmt: skip
    order: ClassVar[int] = 1

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
        check_choice("timestep_spacing", timestep_spacing, SCHEDULER_SPACINGS)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("v_prediction_compat", v_prediction_compat, V_PREDICTION_COMPAT)
        if isinstance(steps_offset, bool) or int(steps_offset) != steps_offset or steps_offset < 0:
            raise ValueError(f"steps_offset must be an integer >= 0, got {steps_offset!r}")
        if trained_betas is not None:
            trained_betas = np.asarray(trained_betas, dtype=np.float64).ravel().tolist()
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
        self.schedule = NoiseSchedule.from_config(self.config)  # float64 ᾱ used for stepping
        self._init_attributes()

    def _init_attributes(self) -> None:
        """diffusers' float32 attributes (``betas``, ``alphas_cumprod``, ...) and an empty plan."""
        self._state = _State()
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.prk_timesteps: np.ndarray | None = None
        self.plms_timesteps: np.ndarray | None = None
        c = self.config
        betas = make_betas(
            c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule, c.trained_betas
        )
        self.betas = betas.float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        final = torch.tensor(1.0) if c.set_alpha_to_one else self.alphas_cumprod[0]
        self.final_alpha_cumprod = final
        self.init_noise_sigma = 1.0
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
        grid = self.grid(num_inference_steps, timesteps).tolist()
        # read at call time, so the plan follows the samplers' data (core.F_PNDM, core.PLMS)
        skip = self.config.skip_prk_steps
        method, warmup_kind = (core.PLMS, "plms") if skip else (core.F_PNDM, "prk")
        plan = self._with_coefficients(plan_calls(method, grid, warmup_kind))
        times = [c.time for c in plan]
        n_prk = sum(c.kind == "prk" for c in plan)
        self.num_inference_steps = len(grid) - 1
        self.prk_timesteps = _as_array(times[:n_prk])
        self.plms_timesteps = _as_array(times[n_prk:])
        self.timesteps = _as_tensor(_as_array(times), device)
        self._state = _State(plan=tuple(plan), history_size=method.order)

    def grid(
        self, num_inference_steps: int | None = None, timesteps: Sequence[float] | None = None
    ) -> torch.Tensor:
        """The descending grid t_0 > ... > t_N = -1 that ``set_timesteps`` plans on (float64, CPU).

        Public so that a pure sampler can run on exactly this scheduler's grid (PNDMPipeline).
        """
        return scheduler_grid(self.config, self.schedule, num_inference_steps, timesteps)

    def _with_coefficients(self, calls: list[Call]) -> list[Call]:
        """Fill in the transfer coefficients and ε conversions of every call (float64, host)."""
        alpha_bar = self.schedule.alpha_bar
        a = alpha_bar([c.base_time for c in calls])
        c_x, c_eps = transfer_coefficients(a, alpha_bar([c.target_time for c in calls]))
        kind = self.config.prediction_type
        if self.config.get("v_prediction_compat") and kind == "v_prediction":
            # diffusers #14816: the combined v is converted at the base point x_n, t_n.
            c_x, c_eps, to_eps = c_x + c_eps * (1 - a).sqrt(), c_eps * a.sqrt(), [None] * len(calls)
        else:
            to_eps = eps_conversion(kind, alpha_bar([c.time for c in calls]))
        values = zip(calls, c_x.tolist(), c_eps.tolist(), to_eps, strict=True)
        return [c._replace(c_x=x, c_eps=e, to_eps=p) for c, x, e, p in values]

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
        ``kind``; converts to ε, updates stage and history, transfers from x_n."""
        state = self._state
        call = self._next_call(kind)
        eps = model_output
        if call.to_eps is not None:  # convert at this call's own (x, t)
            p, q = call.to_eps
            eps = torch.add(torch.mul(model_output, p), sample, alpha=q)
        if call.first:
            state.base, state.stage = sample, []
            state.history = [*state.history, eps][-state.history_size :]
        state.stage.append(eps)
        prev_sample = combine(state.base, call.c_x, self._terms(call))
        state.counter += 1
        return SchedulerOutput(prev_sample) if return_dict else (prev_sample,)

    def _terms(self, call: Call) -> list[tuple[float, torch.Tensor]]:
        """(c_eps·w_j, ε_j) pairs of ε' for this call."""
        state = self._state
        estimates = state.history[::-1] if call.on_history else state.stage
        pairs = zip(call.weights, estimates, strict=False)
        return [(call.c_eps * w, e) for w, e in pairs if w]

    def _next_call(self, kind: str | None) -> Call:
        state = self._state
        if not state.plan:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after "
                "creating the scheduler"
            )
        if state.counter >= len(state.plan):
            raise ValueError(
                f"all {len(state.plan)} planned model calls have been stepped; call "
                "set_timesteps again to start a new sampling run"
            )
        call = state.plan[state.counter]
        if kind is not None and call.kind != kind:
            raise ValueError(
                f"call {state.counter} is a {call.kind!r} call, not {kind!r}: use step(), or "
                f"step_{call.kind}()"
            )
        return call

    # ----------------------------------------------------------------------------------------
    # diffusers' other API
    # ----------------------------------------------------------------------------------------

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """PNDM needs no input scaling; returns ``sample``."""
        return sample

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """√ᾱ_t·x₀ + √(1-ᾱ_t)·noise, one t per sample (integer times read ``alphas_cumprod``)."""
        x = original_samples
        t = torch.as_tensor(timesteps, device=x.device)
        if t.is_floating_point():  # half-integer mid times: the schedule's interpolated ᾱ
            alpha_bar = self.schedule.alpha_bar(t).to(x.dtype)
        else:
            alpha_bar = self.alphas_cumprod.to(device=x.device, dtype=x.dtype)[t]
        alpha_bar = alpha_bar.flatten().reshape(-1, *([1] * (x.ndim - 1)))
        return alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # Read-compatible views of diffusers' running values.

    @property
    def ets(self) -> list[torch.Tensor]:
        """The stored noise estimates e_n, oldest first (diffusers' ``ets``); assignable."""
        return list(self._state.history)

    @ets.setter
    def ets(self, values: Sequence[torch.Tensor]) -> None:
        self._state.history = list(values)

    @property
    def counter(self) -> int:
        """Model calls stepped since ``set_timesteps``."""
        return self._state.counter

    @property
    def cur_sample(self) -> torch.Tensor | None:
        """The sample the current step transfers from (x_n)."""
        return self._state.base

    @property
    def cur_model_output(self) -> torch.Tensor | int:
        """diffusers' running Runge-Kutta sum e1/6 + e2/3 + e3/3 inside a step, else 0."""
        state, k = self._state, self._state.counter
        inside = 0 < k < len(state.plan) and not state.plan[k].first
        if not inside or state.plan[k - 1].kind != "prk":
            return 0
        return sum(w * e for w, e in zip(core.F_PNDM.warmup.b, state.stage, strict=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.config)})"


def _as_array(times: list[float]) -> np.ndarray:
    """Integer times as int64 (diffusers' dtype); half-integer mid times keep float64."""
    array = np.asarray(times, dtype=np.float64)
    return array.astype(np.int64) if np.all(array == np.round(array)) else array


def _as_tensor(times: np.ndarray, device: str | torch.device | None) -> torch.Tensor:
    """int64 as diffusers; half-integer mid times as float32 (exact, and valid on any device)."""
    dtype = torch.int64 if times.dtype == np.int64 else torch.float32
    return torch.as_tensor(times, dtype=dtype, device=device)
