"""The tuner's limits, checked before any model call: what bounds its time and its memory.

* NFE: at most `MAX_NFE`, fewer than the teacher's `TEACHER_STEPS` calls (the grid is fitted to
  the teacher's end points, which must be the more accurate), and within the one bound of steps
  and model calls (`pndm.grids.check_num_steps`).
* Iterations (objective evaluations per option set and for the calibration): at most
  `MAX_ITERATIONS`.
* Tuning noises: every noise is held at once, with the teacher's end point, and each model call
  evaluates them all in one batch, so a noise costs the model's working set for one image plus
  the sampler's state (`pndm.runtime.fast.per_image_bytes`); more than the free memory holds is
  refused, naming the count that fits.
"""

from __future__ import annotations

from typing import Any

import torch

from pndm.checks import check_count
from pndm.grids import check_num_steps
from pndm.runtime.fast import SOLVER_IMAGES, free_memory, per_image_bytes
from pndm.tuning.defaults import MAX_ITERATIONS, MAX_NFE, TEACHER_STEPS

HELD = 2  # images per noise held through the tuning: the noise and the teacher's end point


def check_nfe(nfe: Any) -> int:
    """``nfe`` as an int in [1, MAX_NFE]."""
    nfe = check_num_steps(nfe, name="nfe")
    if nfe > MAX_NFE:
        raise ValueError(
            f"nfe must be an integer in [1, {MAX_NFE}], got {nfe}: the tuner fits the grid to a "
            f"teacher of {TEACHER_STEPS} model calls, which must be the finer"
        )
    return nfe


def check_iterations(name: str, iterations: Any) -> int | None:
    """``iterations`` (None: the tuner's default) as an int in [1, MAX_ITERATIONS]."""
    return None if iterations is None else check_count(name, iterations, maximum=MAX_ITERATIONS)


def check_samples_fit(samples: int, pipe: Any, factor: int = 1) -> None:
    """Refuse more tuning noises than ``pipe``'s device holds (module docstring); ``factor``:
    model inputs per noise (2 under guidance)."""
    each = per_image_bytes(pipe.unet, pipe.dtype, held=HELD, solver_dtype=pipe.solver_dtype)
    each *= factor
    why = "all are held at once, with the teacher's end point, and evaluated in one batch"
    _check_fits("samples", samples, each, pipe.device, why)


def check_noise_fits(noise: torch.Tensor) -> None:
    """Refuse a noise batch whose tuning state (the teacher's end points and the samplers'
    state, `SOLVER_IMAGES` + 1 copies of each noise) the free memory cannot hold."""
    each = noise[0].nelement() * noise.element_size() * (SOLVER_IMAGES + HELD - 1)
    why = "the teacher's end point and the samplers' state, all held at once"
    _check_fits("noise's batch size", len(noise), each, noise.device, why)


def _check_fits(name: str, count: int, each: int, device: torch.device, why: str) -> None:
    free = free_memory(torch.device(device))
    fits = free // each
    if count > fits:
        raise ValueError(
            f"{name} must be at most {fits} on {device}, got {count}: each tuning noise needs "
            f"about {each / 2**20:.3g} MiB ({why}) and {free / 2**30:.3g} GiB are free"
        )
