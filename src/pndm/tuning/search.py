"""Time grids tuned to a model: the grid on which one method best matches a teacher solution.

`tune_timesteps` returns the float64 grid t_0 = t_max > t_1 > ... > t_{N-1} > target (the format
the samplers and ``PNDMPipeline(timesteps=...)`` take) on which ``SAMPLERS[method]`` makes exactly
``nfe`` model calls and its end point is closest, in RMS over a batch of initial noises, to a
high-accuracy teacher solution of the same noises (`teacher`: the data-space predictor-corrector
pec-data of order 3 on a fine log-SNR grid).

Search (direct minimisation of the endpoint error, LD3-style but derivative-free):

* Parametrisation. The N - 1 interior model times live in u = log σ̃. The N gaps
  u_max - u_1, ..., u_{N-2} - u_{N-1}, u_{N-1} - u_min are softmax(0, z) (floored at GAP_FLOOR/N)
  times u_max - u_min, so every z in R^{N-1} is a strictly decreasing grid inside
  (`lowest_time`, t_max).
  The last model time is free: no call is pinned at t = 0, where ᾱ ≈ 1 and a call barely changes
  the image.
* Start. The best of the EDM (ρ = 7), log-SNR, uniform and quadratic grids.
* Optimiser. Nelder-Mead on z (`nelder_mead`), the best point seen is returned, so the tuned grid
  is never worse than its start on the tuning noise.
* Options. `tune` with ``search_options`` also chooses the method's options that change the
  error at equal NFE (``afs``, ``denoise_to_zero``, ``lower_order_final``, ``clip_sample`` on or
  off, ``order`` in SEARCHED_ORDERS): the combinations the method accepts (`refusal`, a dry run
  with no model call) are scored on every start grid, the best two (each at its best start) are
  tuned (an option set can rank low on two grids and first on a third).
* Calibration. With ``calibrate`` the chosen grid's model calls are then corrected one by one
  (`pndm.calibration`): the network sees t_k + δ_k and its ε is scaled by κ_k, 2 parameters per
  called time, fitted by Nelder-Mead from δ = 0, κ = 1 (kept only where it lowers the error).
  It adds ``nfe`` calls per evaluation, `default_budget` (2K) evaluations for K called times;
  with 2K free parameters it needs more tuning noise than the grid alone (256 rather than 64,
  `tune_pipeline`'s defaults) to generalise.
* Generalisation. The grid is fitted to the tuning noise only; judge it on other noise
  (benchmarks/tuned.py does). Where the error is dominated by a few samples (a mixture's mode
  changes at low NFE), a small tuning batch can over-fit: use more samples.

Cost in model calls (each call is one batched evaluation of all tuning noises): the teacher's
`TEACHER_STEPS` (or none when ``reference`` is given) plus ``nfe`` per objective evaluation.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pndm.calibration import Calibration
from pndm.checks import check_count, check_flag
from pndm.grids import FINAL_TIME, edm, logsnr, time_quadratic, time_uniform
from pndm.noise import initial_noise, noise_shape
from pndm.samplers import SAMPLERS, get_sampler
from pndm.samplers import nfe as method_nfe
from pndm.samplers.method import check_x
from pndm.wrapper import EpsFn

TEACHER_STEPS = 200
TUNE_SAMPLES = 64  # tuning noises of `tune_pipeline` (and ``pndm tune``) by default
CALIBRATE_SAMPLES = 256  # ... with calibrate: 2 parameters per call need more to generalise
SEARCHABLE = ("afs", "denoise_to_zero", "lower_order_final", "clip_sample")
SEARCHED_ORDERS = (1, 2, 3, 4)  # the ``order`` values tried (those a method refuses are dropped)
START_GRIDS: dict[str, Callable[[Any, int], torch.Tensor]] = {
    "edm": edm,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
}
Progress = Callable[[int], None]
# Each gap of the grid in log σ̃ is at least GAP_FLOOR/N of the range: distinct times for any z.
GAP_FLOOR = 1e-3


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


# ----------------------------------------------------------------------------- schedule and grids


def _check_schedule(schedule: Any) -> None:
    needed = ("alpha_bar", "sigma_tilde", "timestep_from_sigma", "t_max", "t_min")
    missing = [name for name in needed if not hasattr(schedule, name)]
    if missing:
        raise ValueError(
            f"tuning needs a schedule with {', '.join(needed)} (NoiseSchedule or VPSchedule); "
            f"{type(schedule).__name__} lacks {', '.join(missing)}"
        )


def final_target(schedule: Any) -> float:
    """The default grids' last entry: FINAL_TIME (-1) on a discrete schedule, else t_min."""
    return FINAL_TIME if hasattr(schedule, "num_train_timesteps") else float(schedule.t_min)


def lowest_time(schedule: Any) -> float:
    """The lowest model time a grid may hold: t_min, but not below 0 on a discrete schedule (a
    converted checkpoint with alpha_index_offset = 1 has t_min = -1, the pipeline's target)."""
    t_min = float(schedule.t_min)
    return max(t_min, 0.0) if hasattr(schedule, "num_train_timesteps") else t_min


def with_target(model_times: torch.Tensor, schedule: Any) -> torch.Tensor:
    """Model times t_0 > ... > t_{N-1} followed by the final target (unless it is t_{N-1})."""
    target = final_target(schedule)
    times = model_times.to(torch.float64)
    if float(times[-1]) <= target:
        return times
    return torch.cat([times, times.new_tensor([target])])


def start_grid(name: str, schedule: Any, steps: int) -> torch.Tensor:
    """``name``'s grid with ``steps`` model times down to `lowest_time`, then the target."""
    low = lowest_time(schedule)
    if name in ("edm", "logsnr") and low != float(schedule.t_min):
        times = START_GRIDS[name](schedule, steps, sigma_min=float(schedule.sigma_tilde(low)))
    else:
        times = START_GRIDS[name](schedule, steps)
    return with_target(times[:-1], schedule)


@dataclass(frozen=True)
class LogSigmaGrid:
    """z in R^{N-1} <-> the N model times of a grid from t_max, gaps softmax(0, z) in log σ̃."""

    schedule: Any
    steps: int

    @property
    def u_range(self) -> tuple[float, float]:
        s = self.schedule
        return tuple(math.log(float(s.sigma_tilde(t))) for t in (s.t_max, lowest_time(s)))

    def times(self, z: np.ndarray) -> torch.Tensor:
        """The full grid (model times, then the target) of the parameters z."""
        u_max, u_min = self.u_range
        logits = np.concatenate([[0.0], np.asarray(z, dtype=np.float64)])
        w = np.exp(logits - logits.max())
        w = (1 - GAP_FLOOR) * w / w.sum() + GAP_FLOOR / self.steps  # no gap below the floor
        u = u_max - (u_max - u_min) * np.cumsum(w)[: self.steps - 1]
        sigma = torch.from_numpy(np.exp(u))
        s = self.schedule
        bounds = (s.sigma_tilde(lowest_time(s)), s.sigma_tilde(s.t_max))
        inner = s.timestep_from_sigma(sigma.clamp(*bounds))
        model = torch.cat([torch.tensor([float(s.t_max)], dtype=torch.float64), inner.double()])
        return with_target(model, s)

    def params(self, timesteps: torch.Tensor) -> np.ndarray:
        """The z of a grid whose model times lie in (t_min, t_max] (inverse of `times`)."""
        s = self.schedule
        model = timesteps[: self.steps].to(torch.float64)
        u = torch.log(s.sigma_tilde(model)).numpy()
        u_max, u_min = self.u_range
        w = -np.diff(np.concatenate([u, [u_min]])) / (u_max - u_min)
        w = np.maximum(w - GAP_FLOOR / self.steps, 1e-9) / (1 - GAP_FLOOR)
        return np.log(w[1:] / w[0])


# ----------------------------------------------------------------------------- errors


def rms(x: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS over every sample and entry of x - reference (inf when x is not finite)."""
    d = (x.to(torch.float64) - reference.to(torch.float64)).pow(2).mean()
    return float(d.sqrt()) if bool(torch.isfinite(d)) else math.inf


def teacher(
    eps_fn: EpsFn, schedule: Any, noise: torch.Tensor, steps: int = TEACHER_STEPS
) -> torch.Tensor:
    """The high-accuracy end point of each noise: pec-data (order 3, global order 4) on the log-SNR
    grid, ``steps`` model calls. On a single Gaussian 200 steps are within 1e-7 of the exact flow
    (tests/test_tuning.py); on the shipped model, see benchmarks/results/tuned_digits.json.
    """
    _check_schedule(schedule)
    grid = start_grid("logsnr", schedule, steps)
    return SAMPLERS["pec-data"](eps_fn, noise, grid, schedule, order=3)


def steps_for_nfe(method: str, nfe: int, options: dict[str, Any]) -> int:
    """The step count N with which ``method`` makes exactly ``nfe`` calls; lists reachable NFEs."""
    reachable = []
    for n in range(1, nfe + 3):
        calls = method_nfe(method, n, **options)
        if calls is None:
            raise ValueError(f"method {method!r} is adaptive; tune a fixed-step method")
        if calls == nfe:
            return n
        reachable.append(calls)
    raise ValueError(
        f"method {method!r} with options {options or {}} cannot make exactly {nfe} model calls; "
        f"reachable: {', '.join(map(str, sorted(set(reachable))))}"
    )


class Objective:
    """The error of ``method`` on a grid against the reference, counting the model calls; a
    (method, grid, options, calibration) already scored is not run again (the screen's start
    grids are `tune_grid`'s starts, and Nelder-Mead's first vertex is its start)."""

    def __init__(
        self,
        eps_fn: EpsFn,
        schedule: Any,
        noise: torch.Tensor,
        reference: torch.Tensor,
        progress: Progress | None,
    ) -> None:
        self.schedule, self.noise, self.reference = schedule, noise, reference
        self.calls = 0
        self._eps_fn, self._progress = eps_fn, progress
        self._scored: dict[tuple[Any, ...], float] = {}

    def eps_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self._progress is not None:
            self._progress(1)
        return self._eps_fn(x, t)

    def __call__(
        self,
        method: str,
        timesteps: torch.Tensor,
        options: dict[str, Any],
        calibration: Calibration | None = None,
    ) -> float:
        key = (method, tuple(timesteps.tolist()), tuple(sorted(options.items())), calibration)
        if key not in self._scored:
            self._scored[key] = self._score(method, timesteps, options, calibration)
        return self._scored[key]

    def _score(
        self,
        method: str,
        timesteps: torch.Tensor,
        options: dict[str, Any],
        calibration: Calibration | None,
    ) -> float:
        eps_fn = self.eps_fn if calibration is None else calibration.apply(self.eps_fn)
        try:
            x = SAMPLERS[method](eps_fn, self.noise, timesteps, self.schedule, **options)
        except ValueError:  # a grid the method refuses (e.g. a repeated time after rounding)
            return math.inf
        return rms(x, self.reference)


# ----------------------------------------------------------------------------- the optimiser


def nelder_mead(
    f: Callable[[np.ndarray], float], z0: np.ndarray, budget: int, step: float = 0.5
) -> tuple[np.ndarray, float, list[float]]:
    """Minimise f from z0 with about ``budget`` evaluations (the last round may add up to
    dim + 1 more); (best z, best f, best-so-far list).

    Standard coefficients (reflection 1, expansion 2, contraction 1/2, shrink 1/2); the initial
    simplex is z0 plus ``step`` along each axis.
    """
    dim = z0.size
    simplex = [z0.astype(np.float64)] + [z0 + step * np.eye(dim)[i] for i in range(dim)]
    values = [f(p) for p in simplex]
    history = list(np.minimum.accumulate(values))
    while len(history) < budget:
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centroid = np.mean(simplex[:-1], axis=0)
        candidates = _nm_step(f, simplex, values, centroid, history)
        if candidates is None:  # shrink toward the best point
            simplex = [simplex[0] + (p - simplex[0]) / 2 for p in simplex]
            values = [values[0]] + [_tracked(f, p, history) for p in simplex[1:]]
        else:
            simplex[-1], values[-1] = candidates
    best = int(np.argmin(values))
    return simplex[best], values[best], history


def _tracked(f: Callable[[np.ndarray], float], z: np.ndarray, history: list[float]) -> float:
    value = f(z)
    history.append(min(value, history[-1]))
    return value


def _nm_step(
    f: Callable[[np.ndarray], float],
    simplex: list[np.ndarray],
    values: list[float],
    centroid: np.ndarray,
    history: list[float],
) -> tuple[np.ndarray, float] | None:
    """One reflection/expansion/contraction; the new worst point, or None to shrink."""
    worst = simplex[-1]
    reflected = centroid + (centroid - worst)
    fr = _tracked(f, reflected, history)
    if fr < values[0]:
        expanded = centroid + 2 * (centroid - worst)
        fe = _tracked(f, expanded, history)
        return (expanded, fe) if fe < fr else (reflected, fr)
    if fr < values[-2]:
        return reflected, fr
    inside = fr >= values[-1]
    contracted = centroid + (0.5 if not inside else -0.5) * (centroid - worst)
    fc = _tracked(f, contracted, history)
    return (contracted, fc) if fc < min(fr, values[-1]) else None


# ----------------------------------------------------------------------------- tuning


def start_grids(schedule: Any, steps: int) -> dict[str, torch.Tensor]:
    """The START_GRIDS this schedule supports whose model times stay at or above `lowest_time`."""
    grids = {}
    for name in START_GRIDS:
        try:
            grid = start_grid(name, schedule, steps)
        except ValueError:  # e.g. time_uniform on a schedule whose t_min is negative
            continue
        if float(grid[steps - 1]) >= lowest_time(schedule):
            grids[name] = grid
    return grids


def default_budget(dim: int) -> int:
    """Objective evaluations for ``dim`` free times (Nelder-Mead settles in about this many)."""
    return 20 + 15 * dim


def tune_grid(
    objective: Objective, method: str, nfe: int, options: dict[str, Any], budget: int | None
) -> tuple[torch.Tensor, float, float, str]:
    """(grid, its error, the best start's error, that start's name)."""
    steps = steps_for_nfe(method, nfe, options)
    starts = start_grids(objective.schedule, steps)
    scores = {name: objective(method, grid, options) for name, grid in starts.items()}
    name = min(scores, key=lambda k: scores[k])
    if steps == 1:  # no interior time to move
        return starts[name], scores[name], scores[name], name
    space = LogSigmaGrid(objective.schedule, steps)
    z0 = space.params(starts[name])
    z, value, _ = nelder_mead(
        lambda z: objective(method, space.times(z), options),
        z0,
        budget if budget is not None else default_budget(steps - 1),
    )
    if not value < scores[name]:
        return starts[name], scores[name], scores[name], name
    return space.times(z), value, scores[name], name


# ----------------------------------------------------------------------------- calibration

SHIFT_UNIT = 0.02  # one unit of z moves a model time by 2 % of the schedule's time range
CALIBRATION_STEP = 0.1  # Nelder-Mead's first step: 0.2 % of the range; ε scaled by e^0.1
SCALE_LIMIT = 5.0  # |log κ| at most this (far outside any useful correction)


def called_times(
    method: str, timesteps: torch.Tensor, schedule: Any, options: dict[str, Any]
) -> tuple[float, ...]:
    """The distinct times at which ``method`` calls the model on this grid, descending (a dry
    run on a zero model: a fixed-step method's call times depend on the grid only)."""
    seen: set[float] = set()

    def record(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.add(float(t[0]))
        return torch.zeros_like(x)

    _dry_run(method, timesteps, schedule, options, record)
    return tuple(sorted(seen, reverse=True))


@dataclass(frozen=True)
class CalibrationSpace:
    """z in R^{2K} <-> a `Calibration` of K called times: δ_k = SHIFT_UNIT (t_max - lowest) z_k,
    the shifted time kept inside [`lowest_time`, t_max], and κ_k = exp(z_{K+k})."""

    schedule: Any
    times: tuple[float, ...]

    def calibration(self, z: np.ndarray) -> Calibration:
        k, t = len(self.times), np.asarray(self.times, dtype=np.float64)
        lo, hi = lowest_time(self.schedule), float(self.schedule.t_max)
        moved = t + SHIFT_UNIT * (hi - lo) * np.asarray(z[:k], dtype=np.float64)
        shifted = np.clip(moved, np.minimum(t, lo), np.maximum(t, hi))
        scales = np.exp(np.clip(z[k:], -SCALE_LIMIT, SCALE_LIMIT))
        return Calibration(self.times, tuple(shifted - t), tuple(scales))


def calibrate_grid(
    objective: Objective,
    method: str,
    timesteps: torch.Tensor,
    options: dict[str, Any],
    error: float,
    budget: int | None,
) -> tuple[Calibration | None, float]:
    """The calibration of the grid's model calls with the lowest error, and that error; (None,
    ``error``) when none beats ``error``, the uncalibrated one."""
    space = CalibrationSpace(
        objective.schedule, called_times(method, timesteps, objective.schedule, options)
    )
    dim = 2 * len(space.times)
    z, value, _ = nelder_mead(
        lambda z: objective(method, timesteps, options, space.calibration(z)),
        np.zeros(dim),
        budget if budget is not None else default_budget(dim),
        step=CALIBRATION_STEP,
    )
    return (space.calibration(z), value) if value < error else (None, error)


def refusal(method: str, schedule: Any, nfe: int, options: dict[str, Any]) -> str | None:
    """Why ``method`` refuses these option values at ``nfe`` calls on ``schedule``, or None: a
    dry run on a zero model (ε = 0, no model call), so bad values fail before any real call."""
    try:
        steps = steps_for_nfe(method, nfe, options)
        grids = start_grids(schedule, steps)
        if not grids:
            return f"no starting grid of {', '.join(START_GRIDS)} fits this schedule"
        _dry_run(method, next(iter(grids.values())), schedule, options, _zero_eps)
    except ValueError as err:
        return str(err)
    return None


def _zero_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _dry_run(
    method: str, timesteps: torch.Tensor, schedule: Any, options: dict[str, Any], eps_fn: EpsFn
) -> None:
    """``method`` on one zero sample with ``eps_fn`` (a zero model): no real model call."""
    x = torch.zeros(1, 1, dtype=torch.float64)
    SAMPLERS[method](eps_fn, x, timesteps, schedule, **options)


def option_combinations(
    method: str, fixed: dict[str, Any], schedule: Any = None
) -> list[dict[str, Any]]:
    """``fixed`` plus every choice of the method's searchable options not fixed: each flag of
    SEARCHABLE on and off, and ``order`` in SEARCHED_ORDERS. ``denoise_to_zero`` is left out on a
    schedule whose final target lies below its lowest model time (the extra call would be at a
    time the model was not trained on, -1 on a discrete schedule)."""
    valid = get_sampler(method).options
    choices = {o: (False, True) for o in SEARCHABLE if o in valid and o not in fixed}
    if schedule is not None and final_target(schedule) < lowest_time(schedule):
        choices.pop("denoise_to_zero", None)
    if "order" in valid and "order" not in fixed:
        choices["order"] = SEARCHED_ORDERS
    return [{**fixed, **dict(zip(choices, values, strict=True))}
            for values in itertools.product(*choices.values())]  # fmt: skip


def screen(
    objective: Objective, method: str, nfe: int, combos: list[dict[str, Any]], keep: int = 2
) -> list[dict[str, Any]]:
    """The ``keep`` option sets with the lowest error on their best start grid (`start_grids`, the
    starts `tune_grid` chooses from)."""
    scored = []
    for options in combos:
        try:
            steps = steps_for_nfe(method, nfe, options)
        except ValueError:
            continue  # this combination cannot make exactly nfe calls
        grids = start_grids(objective.schedule, steps).values()
        if not grids:
            continue  # no start grid fits this schedule at this step count (`refusal`)
        scored.append((min(objective(method, g, options) for g in grids), len(scored), options))
    if not scored:
        steps_for_nfe(method, nfe, combos[0])  # raises, listing the reachable NFEs
    return [options for _, _, options in sorted(scored)[:keep]]


def _check_inputs(
    method: str,
    nfe: Any,
    noise: Any,
    reference: Any,
    schedule: Any,
    budget: Any,
    calibrate: Any,
) -> tuple[int, int | None]:
    """The checked (nfe, budget); every other argument checked too, before any model call."""
    get_sampler(method)
    nfe = check_count("nfe", nfe)
    check_x(noise)
    _check_schedule(schedule)
    if reference is not None and (
        not isinstance(reference, torch.Tensor) or reference.shape != noise.shape
    ):
        raise ValueError(f"reference must be a tensor of the noise's shape {tuple(noise.shape)}")
    check_flag("calibrate", calibrate)
    return nfe, None if budget is None else check_count("budget", budget)


def tune(
    eps_fn: EpsFn,
    schedule: Any,
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
    nfe, budget = _check_inputs(method, nfe, noise, reference, schedule, budget, calibrate)
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
        calibration, grid_error = None, None
        if calibrate:
            calibration, calibrated = calibrate_grid(objective, method, grid, chosen, error,
                                                     budget)  # fmt: skip
            grid_error, error = error, calibrated
    return Tuned(grid, method, nfe, chosen, error, start_error, objective.calls,
                 time.perf_counter() - start, name, calibration, grid_error)  # fmt: skip


def _check_finite(error: float, method: str, nfe: int) -> None:
    if not math.isfinite(error):
        raise ValueError(
            f"{method} gave a non-finite result on every grid tried at NFE {nfe}; check that the "
            "model returns finite ε for this noise"
        )


def _accepted(
    method: str, schedule: Any, nfe: int, combos: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The option sets the method takes at this NFE; the first refusal's error if none."""
    refusals = [refusal(method, schedule, nfe, options) for options in combos]
    kept = [options for options, why in zip(combos, refusals, strict=True) if why is None]
    if not kept:
        raise ValueError(refusals[0])
    return kept


def tune_timesteps(
    eps_fn: EpsFn, schedule: Any, noise: torch.Tensor, *, method: str, nfe: int, **options: Any
) -> torch.Tensor:
    """The tuned grid of `tune` (options fixed as given): float64, t_max first, target last."""
    return tune(eps_fn, schedule, noise, method=method, nfe=nfe, **options).timesteps


# Tuning noise comes from seeds far above any image seed a run uses by default (0, 1, ...).
TUNING_SEED_BASE = 2**62


def tuning_seeds(samples: int, seed: int = 0) -> list[int]:
    """The seeds of the tuning noise: ``samples`` seeds from TUNING_SEED_BASE + seed * samples."""
    samples, seed = check_count("samples", samples), check_count("seed", seed, minimum=0)
    if TUNING_SEED_BASE + (seed + 1) * samples > 2**64:
        raise ValueError(f"seed must be below {(2**64 - TUNING_SEED_BASE) // samples - 1}")
    return list(range(TUNING_SEED_BASE + seed * samples, TUNING_SEED_BASE + (seed + 1) * samples))


def tune_pipeline(
    pipe: Any,
    *,
    method: str,
    nfe: int,
    samples: int | None = None,
    seed: int = 0,
    search_options: bool = True,
    iterations: int | None = None,
    calibrate: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Tuned:
    """`tune` for a `PNDMPipeline`'s model and schedule, on per-seed noise (`tuning_seeds`):
    ``samples`` noises, by default TUNE_SAMPLES, or CALIBRATE_SAMPLES with ``calibrate``."""
    if samples is None:
        samples = CALIBRATE_SAMPLES if check_flag("calibrate", calibrate) else TUNE_SAMPLES
    x = initial_noise(
        noise_shape(pipe.unet.config, samples, None),
        pipe.device,
        pipe._solver_dtype,
        seeds=tuning_seeds(samples, seed),
    )
    pipe.unet.eval()
    eps_fn = pipe._eps_fn(pipe.unet, x.dtype)
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
