"""quality.py's two problems (the image-shaped Gaussian mixture with exact ε, the shipped digits
model) with their start noise and reference end point, and a run's record on one of them."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import pndm
from benchlib.measure import rms_error
from benchlib.progress import log
from pndm.analytic import GaussianMixture, reference_flow
from pndm.assets import shipped_model_path
from pndm.files.jsonfile import read_json
from pndm.grids import make_grid
from pndm.guidance import Conditioning
from pndm.images import image_shape
from pndm.samplers import SAMPLERS
from pndm.schedule import NoiseSchedule
from pndm.wrapper import EpsFn, make_eps_fn

BETA_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
# Mixture: 4 isotropic components with smooth means in [-1, 1] (seeded), image-like.
MIX_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
MIX_STDS = (0.05, 0.1, 0.1, 0.2)
MIX_SHAPE = (3, 32, 32)
T_START = 999.0  # the reference starts at x_T, t = 999 (σ̃ = 157.4)
T_END = 0.0  # ... and ends at ᾱ_0 (= ᾱ(-1), the config's final_alpha_cumprod)


@dataclass
class Problem:
    """A sampling problem: ε(x, t), its schedule, the initial noise and the reference end point."""

    name: str
    eps_fn: EpsFn
    schedule: NoiseSchedule
    config: dict[str, Any]  # the diffusers scheduler config (β keys) shared by every peer
    noise: torch.Tensor
    reference: torch.Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    labels: torch.Tensor | None = None  # a guided problem's class per noise
    relabel: Callable[[torch.Tensor], EpsFn] | None = None  # ... and its ε toward other labels

    def with_noise(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> Problem:
        """The same problem from other noise (a guided one toward ``labels``), no reference."""
        if self.relabel is None:
            return replace(self, noise=noise, reference=None, notes={})
        assert labels is not None and len(labels) == len(noise)
        eps_fn = self.relabel(labels)
        return replace(self, eps_fn=eps_fn, noise=noise, reference=None, notes={}, labels=labels)

    def head(self, n: int) -> Problem:
        """The first ``n`` noises (labels, reference) of the problem."""
        labels = None if self.labels is None else self.labels[:n]
        part = self.with_noise(self.noise[:n], labels)
        part.reference = None if self.reference is None else self.reference[:n]
        return part

    def error(self, x: torch.Tensor) -> float:
        """RMS over samples and pixels of x - reference."""
        assert self.reference is not None
        per_image = rms_error(x.flatten(1), self.reference.flatten(1))  # RMS of image norms
        return per_image / math.sqrt(x[0].numel())


def row(
    problem: Problem,
    method: str,
    target: int,
    calls: int,
    steps: int,
    option: dict,
    x: torch.Tensor,
) -> dict[str, Any]:
    """One run's record, after checking that it cost exactly the target NFE; a non-finite
    output (a failed run) has error None."""
    if calls != target:
        raise RuntimeError(f"{method} {option}: {calls} model calls, expected {target}")
    error = problem.error(x) if bool(torch.isfinite(x).all()) else None
    return {"method": method, "nfe": target, "steps": steps, "option": option, "error": error}


def shipped_config(name: str = "digits") -> dict[str, Any]:
    """A shipped model's scheduler config, β keys only (shared by every peer)."""
    config = read_json(shipped_model_path(name) / "scheduler" / "scheduler_config.json")
    return {k: config[k] for k in BETA_KEYS if k in config}


def mixture_means(seed: int) -> torch.Tensor:
    """Smooth random images in [-1, 1]: 4x4 uniform patterns, bilinearly upsampled to 32x32."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((len(MIX_WEIGHTS), MIX_SHAPE[0], 4, 4), generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse * 2 - 1, size=MIX_SHAPE[1:], mode="bilinear")


def mixture_problem(n_samples: int, seed: int, ref_steps: int) -> Problem:
    config = shipped_config()
    schedule = NoiseSchedule.from_config(config)
    gmm = GaussianMixture(MIX_WEIGHTS, mixture_means(seed), MIX_STDS)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n_samples, *MIX_SHAPE), generator=g, dtype=torch.float64)
    problem = Problem("mixture", gmm.eps_fn(schedule), schedule, config, noise)
    start = time.perf_counter()
    problem.reference = reference_flow(problem.eps_fn, noise, T_START, T_END, schedule)
    seconds = time.perf_counter() - start
    loose = reference_flow(problem.eps_fn, noise, T_START, T_END, schedule, 1e-11, 1e-11)
    vab_ref, _ = solver_reference(problem, ref_steps)
    log("mixture: references done")
    problem.notes = {
        "reference": "scipy DOP853 in sigma_tilde, rtol = atol = 1e-13, float64",
        "reference_seconds": seconds,
        "reference_vs_rtol_1e-11": problem.error(loose),
        f"vab_{ref_steps}_edm_vs_dop853": problem.error(vab_ref),
        "weights": MIX_WEIGHTS,
        "stds": MIX_STDS,
        "means": f"4x4 uniform[-1, 1] patterns, bilinear to 32x32, torch seed {seed}",
        "samples": n_samples,
        "noise": f"torch.randn(generator=torch.Generator().manual_seed({seed})), float64",
    }
    return problem


def solver_reference(problem: Problem, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(vab on edm, pec on logsnr), `steps` steps each: the digits reference and its check."""
    runs = (("vab", "edm"), ("pec", "logsnr"))
    sched = problem.schedule
    vab, pec = (
        SAMPLERS[m](problem.eps_fn, problem.noise, make_grid(g, sched, steps), sched)
        for m, g in runs
    )
    return vab, pec


def digits_model(n_samples: int, seed: int) -> Problem:
    """The shipped model's problem with ``n_samples`` noises from ``seed``, no reference yet."""
    pipe = pndm.PNDMPipeline.from_pretrained(shipped_model_path())
    schedule = pipe.scheduler.schedule
    eps_fn = make_eps_fn(pipe.unet, schedule, "epsilon", 0.0, model_dtype=torch.float32)
    shape = (n_samples, *image_shape(pipe.unet.config))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Problem("digits", eps_fn, schedule, shipped_config(), noise)


def digits_problem(n_samples: int, seed: int, ref_steps: int) -> Problem:
    problem = digits_model(n_samples, seed)
    start = time.perf_counter()
    problem.reference, check = solver_reference(problem, ref_steps)
    log("digits: references done")
    problem.notes = {
        "reference": f"vab (order 4), {ref_steps} steps, edm grid, float64 state, float32 UNet",
        "reference_seconds": time.perf_counter() - start,
        f"reference_vs_pec_{ref_steps}_logsnr": problem.error(check),
        "samples": n_samples,
        "noise": f"torch.randn(generator=torch.Generator().manual_seed({seed})), float64",
    }
    return problem


@functools.cache
def _cond_pipeline() -> pndm.PNDMPipeline:
    return pndm.PNDMPipeline.from_pretrained(shipped_model_path("digits-cond"))


def guided_eps(scale: float, labels: torch.Tensor) -> EpsFn:
    """ε of the shipped digits-cond under classifier-free guidance ``scale`` toward ``labels`` (one
    per noise): ε_u + w (ε_c - ε_u) from one batched float32 UNet call of both halves (the
    pipeline's own `Conditioning`)."""
    pipe = _cond_pipeline()
    cond = Conditioning.of(pipe.unet.config, pipe.null_class_label, labels.tolist(), scale,
                           None, len(labels))  # fmt: skip
    model = cond.apply(lambda x, t, **kw: pipe.unet(x, t, **kw).sample, pipe.device)
    return make_eps_fn(model, pipe.scheduler.schedule, "epsilon", 0.0, model_dtype=torch.float32)


def guided_digits(scale: float, noise: torch.Tensor, labels: torch.Tensor) -> Problem:
    """digits-cond under guidance ``scale`` from ``noise`` toward ``labels``, no reference yet."""
    relabel = functools.partial(guided_eps, scale)
    schedule = _cond_pipeline().scheduler.schedule
    config = shipped_config("digits-cond")
    return Problem(f"digits-cond w={scale:g}", relabel(labels), schedule, config, noise,
                   labels=labels, relabel=relabel)  # fmt: skip
