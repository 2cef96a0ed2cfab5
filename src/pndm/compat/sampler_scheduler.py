"""SamplerScheduler: any fixed-step pndm method as a diffusers scheduler, for diffusers pipelines.

    pipe.scheduler = SamplerScheduler.from_config(pipe.scheduler.config, method="ipndm")
    pipe(prompt, num_inference_steps=8)                                 # 8 UNet calls
    pipe(prompt, timesteps=AysSchedules["StableDiffusionTimesteps"])    # model times
    pipe(prompt, sigmas=AysSchedules["StableDiffusionSigmas"])          # σ = sqrt((1-ᾱ)/ᾱ)

``set_timesteps`` plans ``SAMPLERS[method]`` on its grid (`pndm.samplers.calls`) and lists the
model-call times in ``timesteps``, so its length is the NFE: diffusers' pipelines loop over it,
call the UNet at each entry and pass the guided output to ``step``, which answers one call of the
plan (`pndm.compat.stepper`). The images are then the pure sampler's on the pipeline's guided ε,
computed in float32 (float64 for float64 latents; half-precision latents keep a float32 state).

What diffusers' pipelines rely on (diffusers 0.42: ``retrieve_timesteps`` checks that
``set_timesteps`` takes ``timesteps``/``sigmas``; ``StableDiffusionPipeline.__call__`` multiplies
the noise by ``init_noise_sigma``, calls ``scale_model_input`` then the UNet at ``t``, then
``step(noise_pred, t, latents, return_dict=False)[0]``; img2img's ``get_timesteps`` slices
``timesteps[t_start * order:]``, calls ``set_begin_index(t_start * order)`` and noises the image
with ``add_noise`` at the slice's first time):

* ``step`` does not read ``timestep``: the plan knows each call's time. It does tensor arithmetic
  only (no host-device sync) and takes any ``prediction_type``, converted to ε at the call's own
  point and model time.
* Mid-schedule starts (``set_begin_index(b)``, img2img and inpainting): the pipeline will call
  the UNet at ``timesteps[b:]``, one call per entry, starting from its sample noised at
  ``timesteps[b]``. The run restarts there, on the grid of the distinct times left and the
  target, with an empty history: the method's Adams part from order 1, without its Runge-Kutta
  or improved-Euler warm-up and without iPNDM's analytic first step (``Method.restart``), so it
  makes one call per distinct time; an entry listed twice (a start inside a warm-up of s-pndm,
  plms, f-pndm, fon, fon-orig), and F-PNDM's call at the target for N <= 3, costs the pipeline a
  call whose output is not needed (the sample passes unchanged). Methods with one call per step
  restart exactly on the tail of their grid.
* A calibration (`pndm.calibration.Calibration`, ``calibration=``): each call at solver time t_k
  is listed at its model time t_k + δ_k (the pipeline calls the UNet there, and its output is
  converted at ᾱ(t_k + δ_k)); its ε scale κ_k is applied in ``step``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from pndm.calibration import Calibration, check_calibration
from pndm.compat.calls import Conversion, eps_conversion, scaled
from pndm.compat.outputs import SchedulerOutput
from pndm.compat.scheduler_base import (
    PlannedScheduler,
    check_schedule_keys,
    timestep_array,
    timestep_tensor,
)
from pndm.compat.stepper import Stepper, answering, restart_grid
from pndm.grids import FINAL_TIME, scheduler_grid
from pndm.samplers import SAMPLERS, Method, get_sampler
from pndm.schedule import NoiseSchedule

Device = str | torch.device | None


def fixed_step_method(name: str) -> Method:
    """The method called ``name``, refusing the adaptive ones in one line."""
    method = get_sampler(name)
    if method.adaptive:
        fixed = ", ".join(n for n, m in SAMPLERS.items() if not m.adaptive)
        raise ValueError(
            f"method {name!r} is adaptive: its model calls depend on the model's outputs, so no "
            f"scheduler can list them in advance; choose one of {fixed}"
        )
    return method


def as_calibration(value: Calibration | Mapping[str, Any] | None) -> Calibration | None:
    """A `Calibration`, or its JSON (as a saved config holds it), or None."""
    if isinstance(value, Mapping):
        return Calibration.from_json(value)
    check_calibration(value)
    return value


def sigma_grid(schedule: NoiseSchedule, sigmas: Any) -> torch.Tensor:
    """The grid of diffusers' ``sigmas`` σ_0 > ... > σ_N, σ = sqrt((1-ᾱ)/ᾱ) (Euler's and
    Karras's σ, e.g. ``AysSchedules["StableDiffusionSigmas"]``): model times t(σ_k), k < N, σ
    clamped to the schedule's range as diffusers' ``_sigma_to_t`` clamps it; then the target, the
    final time -1 where σ_N is at or below the final ᾱ's σ (0 included), else t(σ_N)."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().cpu().double().numpy()
    s = torch.as_tensor(np.asarray(sigmas, dtype=np.float64).ravel())
    lo, hi = (float(v) for v in schedule.sigma_tilde([schedule.t_min, schedule.t_max]))
    if s.numel() < 2 or not bool(s.isfinite().all()):
        raise ValueError("sigmas must hold at least 2 finite values σ_0 > ... > σ_N (the target)")
    times = schedule.timestep_from_sigma(s.clamp(lo, hi))
    if float(s[-1]) <= float(schedule.sigma_tilde(FINAL_TIME)) * (1 + 1e-6):
        times[-1] = FINAL_TIME
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError(
            f"sigmas must be strictly decreasing within the schedule's range [{lo:.6g}, "
            f"{hi:.6g}] (and 0 or the final σ last); got {s.tolist()[:8]}"
        )
    return times


class SamplerScheduler(PlannedScheduler):
    """A diffusers scheduler running pndm's ``method`` (any fixed-step one) with its ``options``.

    ``SamplerScheduler(method="ipndm", afs=True, beta_schedule="scaled_linear", ...)`` or
    ``SamplerScheduler.from_config(any diffusers scheduler's config, method=..., **options)``.
    The schedule keys are diffusers' (``num_train_timesteps``, ``beta_*``, ``trained_betas``,
    ``set_alpha_to_one``, ``prediction_type``, ``timestep_spacing``, ``steps_offset``); other
    schedulers' keys are ignored, as diffusers ignores them. The config adds ``method``,
    ``options`` and ``calibration`` (its JSON), and round-trips through ``save_pretrained``.
    ``set_timesteps(num_inference_steps)`` takes N *steps* on the config's spacing: the NFE is the
    method's (``timesteps`` lists it: N for ipndm, N + 1 for plms, N + 9 for f-pndm). See the
    module docstring for the pipeline protocol, mid-schedule starts and calibrations.
    """

    _extra_config_keys: ClassVar[frozenset[str]] = frozenset({"options", "calibration"})

    def __init__(
        self,
        method: str = "ipndm",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | Sequence[float] | None = None,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        options: Mapping[str, Any] | None = None,
        calibration: Calibration | Mapping[str, Any] | None = None,
        rescale_betas_zero_snr: bool = False,
        **method_options: Any,
    ) -> None:
        trained_betas = check_schedule_keys(
            timestep_spacing, prediction_type, steps_offset, trained_betas
        )
        if rescale_betas_zero_snr:
            raise ValueError(
                "rescale_betas_zero_snr=True makes the final ᾱ 0, where no ε is defined; pndm's "
                "schedulers need ᾱ > 0 at every model time"
            )
        sampler = fixed_step_method(method)
        self.options = sampler.resolve({**(options or {}), **method_options})
        self.calibration = as_calibration(calibration)
        self._register_config(
            method=sampler.name, num_train_timesteps=num_train_timesteps,
            beta_start=beta_start, beta_end=beta_end, beta_schedule=beta_schedule,
            trained_betas=trained_betas, set_alpha_to_one=bool(set_alpha_to_one),
            prediction_type=prediction_type, timestep_spacing=timestep_spacing,
            steps_offset=int(steps_offset), options=dict(self.options) or None,
            calibration=None if self.calibration is None else self.calibration.to_json(),
        )  # fmt: skip
        self._init_schedule()
        self._replan()

    @property
    def sampler(self) -> Method:
        """The method, ``SAMPLERS[config.method]`` (looked up: copies and pickles keep the name)."""
        return SAMPLERS[self.config.method]

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | Any = None, **overrides: Any
    ) -> SamplerScheduler:
        """From any diffusers scheduler's config (its schedule keys; the rest are ignored) or a
        saved SamplerScheduler's; ``overrides`` win, and names that are not config keys are the
        method's options (``from_config(cfg, method="ipndm", afs=True)``)."""
        if config is not None and not isinstance(config, Mapping):
            config = getattr(config, "config", config)
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"from_config needs a mapping, got {type(config).__name__}")
        config = dict(config or {})
        keys = set(inspect.signature(cls.__init__).parameters) - {"self", "method_options"}
        extra = {k: overrides.pop(k) for k in list(overrides) if k not in keys}
        if extra:  # the method's options, over the config's own
            overrides["options"] = {**(config.get("options") or {}), **extra}
        ours = {k: v for k, v in config.items() if k in keys or k.startswith("_")}
        return super().from_config(ours, **overrides)

    # ------------------------------------------------------------------------------------------
    # Planning
    # ------------------------------------------------------------------------------------------

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Device = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Plan the run: N steps of the config's spacing, or the model times ``timesteps``
        (t_0 > ... > t_{N-1}, or a full grid ending at the target -1, as a tuned grid), or
        diffusers' ``sigmas`` (`sigma_grid`). Resets all state and the begin index."""
        self._replan(self.grid(num_inference_steps, timesteps, sigmas), device, None)

    def grid(
        self,
        num_inference_steps: int | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The grid t_0 > ... > t_N that ``set_timesteps`` plans on (float64, CPU): the pure
        sampler on it gives this scheduler's result (``SAMPLERS[method](eps_fn, x, grid, ...)``)."""
        given = [v is not None for v in (num_inference_steps, timesteps, sigmas)]
        if sum(given) > 1:
            raise ValueError("pass only one of num_inference_steps, timesteps or sigmas")
        if sigmas is not None:
            return sigma_grid(self.schedule, sigmas)
        return scheduler_grid(self.config, self.schedule, num_inference_steps, timesteps)

    def _replan(self, *planned: Any) -> None:
        """Plan ``(grid, device, begin_index)`` (again, for copies); nothing planned if empty."""
        self._run_state: Stepper | None = None
        self._begin_index: int | None = None
        self._planned, self._call_times = None, []
        if not planned:
            return
        grid, device, begin = planned
        stepper = self._stepper(grid, device, restart=False)
        self._call_times = stepper.times
        model_times, _ = self._calibrated(stepper.times)
        self.timesteps = timestep_tensor(timestep_array(model_times), device)
        self.num_inference_steps = grid.numel() - 1
        self._run_state, self._planned = stepper, (grid, device, None)
        if begin is not None:
            self.set_begin_index(begin)

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at call ``begin_index`` of ``timesteps`` (img2img, inpainting): see the module
        docstring. Plans the restarted run; resets the step count."""
        if self._planned is None:
            raise ValueError("call set_timesteps before set_begin_index")
        grid, device, _ = self._planned
        b = begin_index
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not b >= 0:
            raise ValueError(f"begin_index must be an integer >= 0, got {begin_index!r}")
        if b > len(self._call_times):
            raise ValueError(f"begin_index {b} is past the {len(self._call_times)} planned calls")
        self._run_state = self._stepper(grid, device, restart=False) if b == 0 else None
        tail = self._call_times[b:]
        if b and tail:
            target = float(grid[-1])
            restart = torch.tensor(restart_grid(tail, target), dtype=torch.float64)
            self._run_state = answering(self._stepper(restart, device, restart=True), tail)
        self._begin_index, self._planned = int(b), (grid, device, int(b))

    def _stepper(self, grid: torch.Tensor, device: Device, restart: bool) -> Stepper:
        def build(like: torch.Tensor) -> Any:
            return self.sampler.plan(like, grid, self.schedule, restart, **self.options)

        return Stepper.start(build, device, self._conversions)

    def _calibrated(self, times: list[float]) -> tuple[list[float], list[float]]:
        """(the model time t + δ(t), the ε scale κ(t)) of each solver time (no calibration:
        (t, 1))."""
        if self.calibration is None:
            return list(times), [1.0] * len(times)
        t = torch.tensor(times, dtype=torch.float64)
        shift, scale = self.calibration.at(t)
        return (t + shift).tolist(), scale.tolist()

    def _conversions(self, times: list[float]) -> list[Conversion]:
        """ε = κ (p·output + q·x) per call, at ᾱ of its model time (host floats, made once)."""
        model_times, scales = self._calibrated(times)
        kind = self.config.prediction_type
        if kind == "epsilon":  # no ᾱ needed (a calibrated time may lie past t_max)
            return scaled([None] * len(times), scales)
        return scaled(eps_conversion(kind, self.schedule.alpha_bar(model_times)), scales)

    # ------------------------------------------------------------------------------------------
    # Stepping
    # ------------------------------------------------------------------------------------------

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Answer the next planned call with the model's (guided) output at ``sample``; returns
        the next call's input (or, after the last call, x_N) as ``SchedulerOutput`` or
        ``(prev_sample,)``. ``timestep`` is not read: the plan gives every time."""
        if self._run_state is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after "
                "creating the scheduler"
            )
        prev_sample = self._run_state.step(model_output, sample)
        return SchedulerOutput(prev_sample) if return_dict else (prev_sample,)

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The model's input: ``sample``, except at the first call of a run with iPNDM's analytic
        first step, where the model is called at the point that step reached (a multiple of x_0,
        classifier-free guidance's doubled batch included)."""
        return sample if self._run_state is None else self._run_state.model_input(sample)

    @property
    def begin_index(self) -> int | None:
        """The call the run started at (``set_begin_index``), or None."""
        return self._begin_index

    @property
    def step_index(self) -> int | None:
        """The index in ``timesteps`` of the next call, or None before the first step."""
        stepper = self._run_state
        if stepper is None or stepper.counter == 0:
            return None
        return (self._begin_index or 0) + stepper.counter
