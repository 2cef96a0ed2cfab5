"""Time grids tuned to a model: the grid on which one method best matches a teacher solution.

`tune_timesteps` returns the float64 grid t_0 = t_max > t_1 > ... > t_{N-1} > target (the format
the samplers and ``PNDMPipeline(timesteps=...)`` take) on which ``SAMPLERS[method]`` makes exactly
``nfe`` model calls and its end point is closest, in RMS over a batch of initial noises, to a
high-accuracy teacher solution of the same noises (`pndm.tuning.objective`).

Search (direct minimisation of the endpoint error, LD3-style but derivative-free):

* Parametrisation. The interior model times in log σ̃, any point a valid grid
  (`pndm.tuning.spaces`).
* Start. The best of the EDM (ρ = 7), log-SNR, uniform and quadratic grids.
* Optimiser. Nelder-Mead (`pndm.tuning.nelder_mead`); never worse than its start.
* Options. `tune` with ``search_options`` also chooses the method's searchable options
  (`pndm.tuning.search`).
* Calibration. With ``calibrate`` the chosen grid's model calls are then corrected one by one
  (`pndm.calibration`), 2 parameters per called time; with 2K free parameters it needs more
  tuning noise than the grid alone (256 rather than 64, `tune_pipeline`'s defaults) to generalise.
* Generalisation. The grid is fitted to the tuning noise only; judge it on other noise
  (benchmarks/tuned.py does). Where the error is dominated by a few samples (a mixture's mode
  changes at low NFE), a small tuning batch can over-fit: use more samples.

Cost in model calls (each call is one batched evaluation of all tuning noises): the teacher's
`TEACHER_STEPS` (or none when ``reference`` is given) plus ``nfe`` per objective evaluation.
Its bounds (NFE, iterations, tuning noises that fit in memory) are checked before any model call
(`pndm.tuning.limits`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from pndm.calibration import Calibration
from pndm.checks import check_flag
from pndm.guidance import Conditioning, Labels, batch_factor, check_guidance_scale
from pndm.noise import initial_noise, noise_shape
from pndm.samplers import get_sampler
from pndm.samplers.method import check_x
from pndm.schedule import Schedule
from pndm.tuning.defaults import TEACHER_STEPS, default_samples
from pndm.tuning.limits import (
    check_iterations,
    check_nfe,
    check_noise_fits,
    check_samples_fit,
)
from pndm.tuning.nelder_mead import default_budget
from pndm.tuning.objective import Objective, Progress, teacher
from pndm.tuning.search import (
    calibrate_grid,
    check_tune_request,
    option_combinations,
    refusal,
    screen,
    tune_grid,
    tuning_seeds,
)
from pndm.tuning.spaces import START_GRIDS, check_schedule
from pndm.wrapper import EpsFn

if TYPE_CHECKING:  # pragma: no cover
    from pndm.compat.pipeline import PNDMPipeline


@dataclass(frozen=True)
class Tuned:
    """A tuned grid with its method, options, errors on the tuning noise and cost."""

    timesteps: torch.Tensor
    method: str
    nfe: int
    options: dict[str, Any]
    error: float
    start_error: float
    model_calls: int
    seconds: float
    start_grid: str = ""
    calibration: Calibration | None = None
    grid_error: float | None = None  # the error before calibration (None: not calibrated)


def _check_inputs(
    eps_fn: Any,
    method: str,
    nfe: Any,
    tensors: tuple[Any, Any],
    schedule: Any,
    budget: Any,
    flags: dict[str, Any],
) -> tuple[int, int | None]:
    """The checked (nfe, budget); every other argument checked too, before any model call."""
    get_sampler(method)
    for name, value in flags.items():
        check_flag(name, value)
    nfe, budget = check_nfe(nfe), check_iterations("budget", budget)
    if not callable(eps_fn):
        raise ValueError(f"eps_fn must be callable as eps_fn(x, t), got {eps_fn!r}")
    noise, reference = tensors
    check_x(noise, "noise")
    check_schedule(schedule)
    if reference is not None:
        check_x(reference, "reference")  # a NaN here would blame the model
        if reference.shape != noise.shape or reference.device != noise.device:
            raise ValueError(
                f"reference must be a tensor of the noise's shape {tuple(noise.shape)} on its "
                f"device {noise.device}, got {tuple(reference.shape)} on {reference.device}"
            )
    check_noise_fits(noise)
    return nfe, budget


def tune(
    eps_fn: EpsFn,
    schedule: Schedule,
    noise: torch.Tensor,
    *,
    method: str,
    nfe: int,
    reference: torch.Tensor | None = None,
    search_options: bool = False,
    budget: int | None = None,
    calibrate: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Tuned:
    """Tune ``method``'s grid at ``nfe`` calls to ``noise`` (module docstring); with
    ``search_options`` also its searchable options (those in ``options`` stay fixed), and with
    ``calibrate`` then a `Calibration` of its calls (``Tuned.calibration``: None where none
    lowered the error; ``Tuned.grid_error``: the error before it). ``reference``: the teacher's
    end points of ``noise`` if known; ``budget``: objective evaluations per tuned option set
    (default `default_budget`); ``progress(k)``: called after every k model calls."""
    flags = {"search_options": search_options, "calibrate": calibrate}  # checked with the rest
    nfe, budget = _check_inputs(eps_fn, method, nfe, (noise, reference), schedule, budget, flags)
    combos = option_combinations(method, options, schedule) if search_options else [options]
    combos = _accepted(method, schedule, nfe, combos)
    start = time.perf_counter()
    with torch.no_grad():
        objective = Objective(eps_fn, schedule, noise, noise, progress)
        if reference is None:
            reference = teacher(objective.eps_fn, schedule, noise)
        objective.reference = reference
        kept = screen(objective, method, nfe, combos) if len(combos) > 1 else combos
        results = [(tune_grid(objective, method, nfe, o, budget), o) for o in kept]
        (grid, error, start_error, name), chosen = min(results, key=lambda r: r[0][1])
        _check_finite(error, method, nfe)
        calibration, grid_error, error = _calibrated(
            objective, method, (grid, chosen, error), budget, calibrate
        )
    return Tuned(grid, method, nfe, chosen, error, start_error, objective.calls,
                 time.perf_counter() - start, name, calibration, grid_error)  # fmt: skip


def _calibrated(
    objective: Objective, method: str, tuned: tuple, budget: int | None, calibrate: bool
) -> tuple[Calibration | None, float | None, float]:
    """(calibration, the error before it, the error) of the tuned (grid, options, error); with
    ``calibrate`` off, (None, None, error)."""
    grid, options, error = tuned
    if not calibrate:
        return None, None, error
    calibration, calibrated = calibrate_grid(objective, method, grid, options, error, budget)
    return calibration, error, calibrated


def _check_finite(error: float, method: str, nfe: int) -> None:
    if not math.isfinite(error):
        raise ValueError(
            f"{method} gave a non-finite result on every grid tried at NFE {nfe}; check that the "
            "model returns finite ε for this noise"
        )


def _accepted(
    method: str, schedule: Schedule, nfe: int, combos: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The option sets the method takes at this NFE; the first refusal's error if none."""
    refusals = [refusal(method, schedule, nfe, options) for options in combos]
    kept = [options for options, why in zip(combos, refusals, strict=True) if why is None]
    if not kept:
        raise ValueError(refusals[0])
    return kept


def tune_timesteps(
    eps_fn: EpsFn, schedule: Schedule, noise: torch.Tensor, *, method: str, nfe: int, **options: Any
) -> torch.Tensor:
    """The tuned grid of `tune` (options fixed as given): float64, t_max first, target last."""
    return tune(eps_fn, schedule, noise, method=method, nfe=nfe, **options).timesteps


def tune_pipeline(
    pipe: PNDMPipeline,
    *,
    method: str,
    nfe: int,
    samples: int | None = None,
    seed: int = 0,
    search_options: bool = True,
    iterations: int | None = None,
    calibrate: bool = False,
    progress: Progress | None = None,
    class_labels: Labels = None,
    guidance_scale: float = 1.0,
    **options: Any,
) -> Tuned:
    """`tune` for a `PNDMPipeline`'s model and schedule, on per-seed noise (`tuning_seeds`):
    ``samples`` noises, by default TUNE_SAMPLES, or CALIBRATE_SAMPLES with ``calibrate``
    (`pndm.tuning.defaults`). A class-conditional model is tuned on its guided ε:
    ``class_labels`` (an int or a class name, one per noise, or "random": each noise's from its
    seed) and ``guidance_scale`` as the pipeline takes them. The request is checked first
    (`check_tune_request`), before any model call."""
    if samples is None:
        samples = default_samples(check_flag("calibrate", calibrate))
    check_iterations("iterations", iterations)
    check_tune_request(method, nfe, samples=samples, seed=seed, search_options=search_options,
                       **options)  # fmt: skip
    scale = check_guidance_scale(guidance_scale)  # guidance evaluates two halves of each noise
    check_samples_fit(samples, pipe, batch_factor(class_labels is not None, scale))  # before
    seeds = tuning_seeds(samples, seed)  # the noise is drawn: all of it is held at once
    cond = Conditioning.of(pipe.unet.config, pipe.null_class_label, class_labels, scale, seeds,
                           samples, pipe.class_names)  # fmt: skip
    shape = noise_shape(pipe.unet.config, samples, None)
    x = initial_noise(shape, pipe.device, pipe.solver_dtype, seeds=seeds)
    pipe.unet.eval()
    eps_fn = pipe.eps_fn(cond.apply(pipe.unet, pipe.device))
    return tune(eps_fn, pipe.scheduler.schedule, x, method=method, nfe=nfe,
                search_options=search_options, budget=iterations, calibrate=calibrate,
                progress=progress, **options)  # fmt: skip


def progress_total(
    method: str, nfe: int, search_options: bool, iterations: int | None, calibrate: bool = False
) -> int:
    """An upper estimate of the model calls of `tune_pipeline` (for a progress bar's total)."""
    combos = option_combinations(method, {}) if search_options else [{}]
    tuned = min(2, len(combos))  # an upper estimate: some combinations may be refused
    per_set = len(START_GRIDS) + (iterations or default_budget(nfe + 1)) + nfe
    screening = len(START_GRIDS) * len(combos) if len(combos) > 1 else 0
    calibration = (iterations or default_budget(2 * nfe)) + 2 * nfe + 1 if calibrate else 0
    return TEACHER_STEPS + nfe * (screening + tuned * per_set + calibration)
