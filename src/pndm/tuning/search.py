"""The search: which option sets and grids the tuner tries at one NFE, and which it refuses.

* Options. With ``search_options`` the tuner also chooses the method's options that change the
  error at equal NFE (``afs``, ``denoise_to_zero``, ``lower_order_final``, ``clip_sample`` on or
  off, ``order`` in SEARCHED_ORDERS): the combinations the method accepts (`refusal`, a dry run
  with no model call) are scored on every start grid (`screen`), the best two (each at its best
  start) are tuned (an option set can rank low on two grids and first on a third).
* Grid. `tune_grid`: the best start grid, then Nelder-Mead on its `LogSigmaGrid` parameters; the
  best point seen is returned, so the tuned grid is never worse than its start on the tuning noise.
* Calibration. `calibrate_grid`: the chosen grid's model calls corrected one by one
  (`CalibrationSpace`), fitted by Nelder-Mead from δ = 0, κ = 1 (kept only where it lowers the
  error). It adds ``nfe`` calls per evaluation, `default_budget` (2K) evaluations for K called
  times.
* Requests. `check_tune_request`: what the tuner would refuse, checked with no model (the seed,
  the sample count, an NFE no option set reaches); `tuning_seeds`: per-seed noise far from the
  image seeds.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import numpy as np
import torch

from pndm.calibration import Calibration
from pndm.checks import check_count, check_flag
from pndm.grids import check_num_steps, final_target, lowest_model_time
from pndm.samplers import SAMPLERS, get_sampler
from pndm.samplers import nfe as method_nfe
from pndm.schedule import Schedule
from pndm.tuning.limits import check_nfe
from pndm.tuning.nelder_mead import default_budget, nelder_mead
from pndm.tuning.objective import Objective
from pndm.tuning.spaces import START_GRIDS, CalibrationSpace, LogSigmaGrid, start_grids
from pndm.wrapper import EpsFn

SEARCHABLE = ("afs", "denoise_to_zero", "lower_order_final", "clip_sample")
SEARCHED_ORDERS = (1, 2, 3, 4)  # the ``order`` values tried (those a method refuses are dropped)
CALIBRATION_STEP = 0.1  # Nelder-Mead's first step: 0.2 % of the range; ε scaled by e^0.1


def steps_for_nfe(method: str, nfe: int, options: dict[str, Any]) -> int:
    """The step count N with which ``method`` makes exactly ``nfe`` calls; lists reachable NFEs."""
    nfe = check_num_steps(nfe, name="nfe")  # the loops below are as long as nfe
    for n in range(1, nfe + 3):
        if _calls(method, n, options) == nfe:
            return n
    reachable = ", ".join(map(str, reachable_nfes(method, nfe, [options])))
    raise ValueError(
        f"method {method!r} with options {options or {}} cannot make exactly {nfe} model calls; "
        f"reachable: {reachable}"
    )


def reachable_nfes(method: str, nfe: int, combos: list[dict[str, Any]]) -> list[int]:
    """The model calls, ascending, of ``method`` in 1 to nfe + 2 steps with any of ``combos``."""
    nfe = check_num_steps(nfe, name="nfe")
    return sorted({_calls(method, n, o) for o in combos for n in range(1, nfe + 3)})


def _calls(method: str, steps: int, options: dict[str, Any]) -> int:
    calls = method_nfe(method, steps, **options)
    if calls is None:
        raise ValueError(f"method {method!r} is adaptive; tune a fixed-step method")
    return calls


def option_combinations(
    method: str, fixed: dict[str, Any], schedule: Schedule | None = None
) -> list[dict[str, Any]]:
    """``fixed`` plus every choice of the method's searchable options not fixed: each flag of
    SEARCHABLE on and off, and ``order`` in SEARCHED_ORDERS. ``denoise_to_zero`` is left out on a
    schedule whose final target lies below its lowest model time (the extra call would be at a
    time the model was not trained on, -1 on a discrete schedule)."""
    valid = get_sampler(method).options
    choices = {o: (False, True) for o in SEARCHABLE if o in valid and o not in fixed}
    if schedule is not None and final_target(schedule) < lowest_model_time(schedule):
        choices.pop("denoise_to_zero", None)
    if "order" in valid and "order" not in fixed:
        choices["order"] = SEARCHED_ORDERS
    return [{**fixed, **dict(zip(choices, values, strict=True))}
            for values in itertools.product(*choices.values())]  # fmt: skip


def refusal(method: str, schedule: Schedule, nfe: int, options: dict[str, Any]) -> str | None:
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
    method: str,
    timesteps: torch.Tensor,
    schedule: Schedule,
    options: dict[str, Any],
    eps_fn: EpsFn,
) -> None:
    """``method`` on one zero sample with ``eps_fn`` (a zero model): no real model call."""
    x = torch.zeros(1, 1, dtype=torch.float64)
    SAMPLERS[method](eps_fn, x, timesteps, schedule, **options)


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


def called_times(
    method: str, timesteps: torch.Tensor, schedule: Schedule, options: dict[str, Any]
) -> tuple[float, ...]:
    """The distinct times at which ``method`` calls the model on this grid, descending (a dry
    run on a zero model: a fixed-step method's call times depend on the grid only)."""
    seen: set[float] = set()

    def record(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.add(float(t[0]))
        return torch.zeros_like(x)

    _dry_run(method, timesteps, schedule, options, record)
    return tuple(sorted(seen, reverse=True))


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


# Tuning noise comes from seeds far above any image seed a run uses by default (0, 1, ...).
TUNING_SEED_BASE = 2**62


def tuning_seeds(samples: int, seed: int = 0) -> list[int]:
    """The seeds of the tuning noise: ``samples`` seeds from TUNING_SEED_BASE + seed * samples."""
    samples, seed = check_tuning_seeds(samples, seed)
    return list(range(TUNING_SEED_BASE + seed * samples, TUNING_SEED_BASE + (seed + 1) * samples))


def check_tuning_seeds(samples: Any, seed: Any) -> tuple[int, int]:
    """(samples, seed) checked as `tuning_seeds` takes them, without listing the seeds."""
    samples, seed = check_count("samples", samples), check_count("seed", seed, minimum=0)
    if TUNING_SEED_BASE + (seed + 1) * samples > 2**64:
        raise ValueError(f"seed must be below {(2**64 - TUNING_SEED_BASE) // samples - 1}")
    return samples, seed


def check_tune_request(
    method: str,
    nfe: int,
    *,
    samples: int,
    seed: int = 0,
    search_options: bool = True,
    **options: Any,
) -> None:
    """Refuse, with no model at hand, what `pndm.tuning.tune_pipeline` would refuse later: the
    method, ``nfe`` (`check_nfe`), the sample count and seed (`tuning_seeds`), and an NFE that
    no option set searched reaches (the error lists the NFEs they reach)."""
    get_sampler(method)
    check_flag("search_options", search_options)
    nfe = check_nfe(nfe)
    check_tuning_seeds(samples, seed)  # the memory they need: `check_samples_fit`
    combos = option_combinations(method, options) if search_options else [options]
    for combo in combos:
        with contextlib.suppress(ValueError):
            steps_for_nfe(method, nfe, combo)
            return
    if len(combos) == 1:
        steps_for_nfe(method, nfe, combos[0])  # raises, naming the options
    reachable = ", ".join(map(str, reachable_nfes(method, nfe, combos)))
    raise ValueError(
        f"method {method!r} cannot make exactly {nfe} model calls with any option set searched; "
        f"reachable: {reachable}"
    )
