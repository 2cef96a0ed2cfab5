"""Every solver at equal NFE: pndm's methods against diffusers' schedulers, on two problems.

(a) ``mixture``: an image-shaped (3x32x32) Gaussian mixture, whose ε is exact
(`pndm.analytic.GaussianMixture`), on the shipped model's discrete schedule (linear β 1e-4..0.02,
T = 1000), so every diffusers scheduler runs unchanged; float64.
(b) ``digits``: the shipped UNet (1x16x16; the network in float32, every solver's state in
float64), from fixed noise.

Rules (the same for both problems and every method):

* One start, one end. Every method gets the same x_T ~ N(0, I) and ends at ᾱ_end = ᾱ_0 = 0.9999
  (σ̃ = 0.0100), the shipped config's final value (``set_alpha_to_one=False``). The reference is the
  probability-flow ODE solution from (x_T, t = 999) to ᾱ_0. A grid that starts lower ("leading")
  takes x_T as if it were at its first time: that mismatch is part of its error. The diffusers
  peers are configured to end there: DDIM and PNDM with ``set_alpha_to_one=False``, DPM-Solver,
  UniPC and Euler with ``final_sigmas_type="sigma_min"``, DEIS by itself; Heun always ends at
  σ = 0, so its last sigma is set to σ̃(ᾱ_0) after ``set_timesteps`` (its last step is Euler; the
  only change made to a peer). Euler and Heun work in x̄ = x/sqrt(ᾱ): their output is mapped back
  by sqrt(ᾱ_end). Karras and lu-λ grids with "sigma_min" end with a zero-length step, one wasted
  call (diffusers' own: σ_min is both the last grid point and the appended final sigma).
* ε at the ᾱ the scheduler assumes. DDIM and PNDM step with ᾱ[t] at integer t; the σ-based
  schedulers step with their ``sigmas[i]``, which for Karras and lu-λ grids belong to fractional
  times that DPM-Solver, UniPC and DEIS round before calling the model (and Euler's "linspace"
  interpolates σ, not log ᾱ). The harness calls ε at t = ``timestep_from_sigma(sigmas[i])``,
  NoiseSchedule's exact inverse, i.e. at ᾱ = 1/(1 + sigmas[i]²) exactly: the peers are measured as
  solvers, without the rounding of their model time.
* Equal NFE. NFE = counted model calls. A method gets the step count whose NFE is exactly the
  target; pairs that no step count reaches are reported as unreachable (F-PNDM and FON cost N + 9
  or 4N, PRK-mode PNDM n + 9, Heun 2n - 1). pf (adaptive DOPRI5) costs 2 + 6k calls: its tolerance
  is bisected for runs of exactly the target NFE.
* Best option. pndm methods: each grid in GRIDS (identical grids run once), default options.
  Peers: each timestep_spacing x {plain, Karras, lu-λ (DPM-Solver only)} x solver_order {2, 3}
  (UniPC, DEIS) x euler_at_final on/off (DPM-Solver: with "sigma_min" and 15 steps or more its
  last step is otherwise of full order, which on lu-λ grids gives NaN), and on digits DDIM's
  clip_sample on/off (clipping x̂_0 to [-1, 1] is valid for that model's data);
  lower_order_final etc. at diffusers' defaults. A run with a non-finite output counts as failed.
  To keep the model-call budget small, on digits each (method, NFE) tries only the
  ``--candidates`` best options of the mixture (DDIM: each with clip_sample off and on).
* Error: the RMS over all samples and pixels of x_method - x_ref.
* References. mixture: scipy DOP853 in σ̃, rtol = atol = 1e-13 (`pndm.analytic.reference_flow`);
  accuracy: its RMS difference to a run at 1e-11. digits: ``vab`` (order 4) with ``--ref-steps``
  steps on the edm grid; accuracy: its RMS difference to ``pec`` with as many steps on the logsnr
  grid. The same vab run on the mixture is also checked against DOP853.

    python benchmarks/quality.py [--quick] [--out benchmarks/results] [--markdown FILE]

Writes quality.json, quality_mixture.png and quality_digits.png to --out (quality_quick_* with
--quick), prints the markdown section (tables) and writes it to --markdown if given.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from solver_error import CountingEps, rms_error  # this folder: run as a script
from speed import device_name

import pndm
from pndm.analytic import GaussianMixture, reference_flow
from pndm.assets import shipped_model_path
from pndm.files import read_json, write_json
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS, nfe
from pndm.schedule import NoiseSchedule
from pndm.wrapper import EpsFn, make_eps_fn

NFES = (5, 6, 8, 10, 15, 20, 50)
QUICK_NFES = (5, 8)
GRID_LABELS = {  # pndm.grids names -> table tags
    "trailing": "tr",
    "leading": "ld",
    "linspace": "ls",
    "uniform": "un",
    "ddim_quadratic": "dq",
    "edm": "edm",
    "logsnr": "lsnr",
    "time_uniform": "tu",
    "time_quadratic": "tq",
}
GRIDS = tuple(GRID_LABELS)
# Fixed-step methods; the adaptive ones pick their own NFE (pf is bisected below, pec-adaptive has
# benchmarks/adaptive.py).
METHODS = tuple(name for name in SAMPLERS if name not in ("pf", "pec-adaptive"))
SPACINGS = ("trailing", "leading", "linspace")
BETA_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
# Mixture: 4 isotropic components with smooth means in [-1, 1] (seeded), image-like.
MIX_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
MIX_STDS = (0.05, 0.1, 0.1, 0.2)
MIX_SHAPE = (3, 32, 32)
PF_NFE_STEP = 6  # pf's NFE is 2 + 6k (DOPRI5: 6 calls per step)
PF_LOG_TOL = (-8.0, 2.0)  # bisection bracket for log10(rtol = atol)
T_START = 999.0  # the reference starts at x_T, t = 999 (σ̃ = 157.4)
T_END = 0.0  # ... and ends at ᾱ_0 (= ᾱ(-1), the config's final_alpha_cumprod)
LOADED = time.perf_counter()


@dataclass(frozen=True)
class Peer:
    """A diffusers scheduler and the options swept for it (a product; invalid combinations and
    duplicate grids are skipped)."""

    name: str
    scheduler: str
    fixed: dict[str, Any]
    options: dict[str, tuple[Any, ...]]
    x_bar: bool = False  # Euler, Heun: the state is x̄ = x/sqrt(ᾱ)
    ends_at_zero: bool = False  # Heun: no final_sigmas_type; patched to σ̃(ᾱ_0)


SIGMA_MIN = {"final_sigmas_type": "sigma_min"}
KARRAS = {"timestep_spacing": SPACINGS, "use_karras_sigmas": (False, True)}
# euler_at_final: diffusers' first-order last step; without it (and with final_sigmas_type
# "sigma_min") DPM++ 3M takes a third-order zero-length last step on lu-λ grids: NaN.
DPM = {**KARRAS, "use_lu_lambdas": (False, True), "euler_at_final": (False, True)}
PEERS = (
    Peer(
        "DDIM",
        "DDIMScheduler",
        {"set_alpha_to_one": False, "clip_sample": False},
        {"timestep_spacing": SPACINGS},
    ),
    Peer(
        "PNDM (PRK)",
        "PNDMScheduler",
        {"set_alpha_to_one": False, "skip_prk_steps": False},
        {"timestep_spacing": SPACINGS},
    ),
    Peer(
        "PNDM (PLMS)",
        "PNDMScheduler",
        {"set_alpha_to_one": False, "skip_prk_steps": True},
        {"timestep_spacing": SPACINGS},
    ),
    Peer("DPM++ 2M", "DPMSolverMultistepScheduler", {"solver_order": 2, **SIGMA_MIN}, DPM),
    Peer("DPM++ 3M", "DPMSolverMultistepScheduler", {"solver_order": 3, **SIGMA_MIN}, DPM),
    Peer("UniPC", "UniPCMultistepScheduler", SIGMA_MIN, {**KARRAS, "solver_order": (2, 3)}),
    Peer("DEIS", "DEISMultistepScheduler", {}, {**KARRAS, "solver_order": (2, 3)}),
    Peer("Euler", "EulerDiscreteScheduler", SIGMA_MIN, KARRAS, x_bar=True),
    Peer("Heun", "HeunDiscreteScheduler", {}, KARRAS, x_bar=True, ends_at_zero=True),
)
PEER_NAMES = tuple(p.name for p in PEERS)


class OverBudget(Exception):
    """A capped run tried more model calls than allowed."""


class CappedEps(CountingEps):
    """CountingEps that raises OverBudget instead of making call number cap + 1."""

    def __init__(self, eps_fn: EpsFn, cap: int) -> None:
        super().__init__(eps_fn)
        self.cap = cap

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.calls >= self.cap:
            raise OverBudget
        return super().__call__(x, t)


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

    def error(self, x: torch.Tensor) -> float:
        """RMS over samples and pixels of x - reference."""
        assert self.reference is not None
        per_image = rms_error(x.flatten(1), self.reference.flatten(1))  # RMS of image norms
        return per_image / math.sqrt(x[0].numel())


# ----------------------------------------------------------------------------- pndm's methods


def steps_for_nfe(target: int, count: Callable[[int], int | None]) -> int | None:
    """The smallest step count n with count(n) == target (NFE grows with n); None if none does."""
    for n in range(1, target + 1):
        calls = count(n)
        if calls == target:
            return n
        if calls is not None and calls > target:
            return None
    return None


def pndm_grid(method: str, grid: str, schedule: NoiseSchedule, target: int) -> torch.Tensor | None:
    """The `grid` with the step count that costs `method` exactly `target` calls, or None."""

    def make(n: int) -> torch.Tensor | None:
        try:
            return make_grid(grid, schedule, n)
        except ValueError:
            return None

    def count(n: int) -> int | None:
        times = make(n)
        return None if times is None else nfe(method, times.numel() - 1)

    n = steps_for_nfe(target, count)
    return None if n is None else make(n)


def run_pndm(problem: Problem, method: str, grid: str, times: torch.Tensor, target: int) -> dict:
    counter = CountingEps(problem.eps_fn)
    x = SAMPLERS[method](counter, problem.noise, times, problem.schedule)
    return row(problem, method, target, counter.calls, times.numel() - 1, {"grid": grid}, x)


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


def sweep_pndm(problem: Problem, nfes: tuple[int, ...], tries: Callable) -> Iterator[dict]:
    """Every method at every NFE on each grid that ``tries(method, nfe)`` lists (once per grid)."""
    for method, target in itertools.product(METHODS, nfes):
        seen: set[tuple[float, ...]] = set()
        for option in tries(method, target):
            times = pndm_grid(method, option["grid"], problem.schedule, target)
            if times is None or tuple(times.tolist()) in seen:
                continue
            seen.add(tuple(times.tolist()))
            yield run_pndm(problem, method, option["grid"], times, target)


def pf_try(problem: Problem, target: int, log_tol: float) -> tuple[int, dict[str, Any] | None]:
    """pf at rtol = atol = 10**log_tol, stopped past `target` calls: (calls, the row if exact)."""
    ends = make_grid("time_uniform", problem.schedule, 1)  # [999, 0]: pf picks its own steps
    counter, tol, stats = CappedEps(problem.eps_fn, target), 10**log_tol, {}
    try:
        x = SAMPLERS["pf"](
            counter, problem.noise, ends, problem.schedule, rtol=tol, atol=tol, stats=stats
        )
    except (OverBudget, RuntimeError):  # too many calls, or a step-size underflow
        return target + 1, None
    if counter.calls != target:
        return counter.calls, None
    return target, row(problem, "pf", target, target, stats["steps"], {"rtol": tol}, x)


def pf_row(problem: Problem, target: int, iterations: int = 4) -> dict[str, Any] | None:
    """pf at exactly `target` calls, with the tightest tolerance found by bisection (in log10)
    between one that costs more calls and one that costs at most `target`."""
    if (target - 2) % PF_NFE_STEP:
        return None
    tight, loose = PF_LOG_TOL
    calls, found = pf_try(problem, target, loose)
    if calls > target:
        return None  # even the loosest tolerance costs more
    for _ in range(iterations):
        middle = (tight + loose) / 2
        calls, hit = pf_try(problem, target, middle)
        found = hit or found  # a later hit has a tighter tolerance
        tight, loose = (middle, loose) if calls > target else (tight, middle)
    return found


# ----------------------------------------------------------------------------- diffusers' peers


def peer_options(peer: Peer) -> list[dict[str, Any]]:
    """The product of the peer's option values, as dicts."""
    keys = list(peer.options)
    values = itertools.product(*peer.options.values())
    return [dict(zip(keys, v, strict=True)) for v in values]


def make_scheduler(peer: Peer, config: dict[str, Any], option: dict[str, Any], n: int):
    """The peer's scheduler after set_timesteps(n); None if diffusers rejects the combination."""
    cls = getattr(diffusers, peer.scheduler)
    try:
        scheduler = cls(**{**config, **peer.fixed, **option})
        scheduler.set_timesteps(n)
    except ValueError:
        return None
    if peer.ends_at_zero:
        scheduler.sigmas[-1] = final_sigma(scheduler)
    return scheduler


def final_sigma(scheduler: Any) -> float:
    """σ̃(ᾱ_0), as diffusers computes it for final_sigmas_type="sigma_min" (float32)."""
    a0 = scheduler.alphas_cumprod[0]
    return float(((1 - a0) / a0) ** 0.5)


def peer_steps(peer: Peer, config: dict, option: dict, target: int):
    """The scheduler whose timesteps (= model calls) number exactly `target`, or None."""
    found: dict[int, Any] = {}

    def count(n: int) -> int | None:
        found[n] = make_scheduler(peer, config, option, n)
        return None if found[n] is None else len(found[n].timesteps)

    n = steps_for_nfe(target, count)
    return None if n is None else found[n]


def assumed_time(scheduler: Any, i: int, t: Any, schedule: NoiseSchedule, batch: int):
    """The time of the ᾱ that step i assumes: t itself (ᾱ[t]) for DDIM and PNDM, else the time of
    ᾱ = 1/(1 + sigmas[i]²) (clamped to the schedule's σ̃ range against float32 round-off)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:
        return torch.full((batch,), float(t), dtype=torch.float64)
    lo, hi = (float(v) for v in schedule.sigma_tilde([schedule.t_min, schedule.t_max]))
    sigma = min(max(float(sigmas[i]), lo), hi)
    return schedule.timestep_from_sigma(torch.tensor(sigma, dtype=torch.float64)).expand(batch)


@torch.no_grad()
def run_peer(problem: Problem, peer: Peer, scheduler: Any) -> tuple[torch.Tensor, int]:
    """diffusers' own loop: scale_model_input, ε, step; returns (x at ᾱ_end, model calls)."""
    counter = CountingEps(problem.eps_fn)
    x = problem.noise * scheduler.init_noise_sigma
    batch = x.shape[0]
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        eps = counter(x_in, assumed_time(scheduler, i, t, problem.schedule, batch))
        x = scheduler.step(eps, t, x).prev_sample
    if peer.x_bar:
        x = x / math.sqrt(1 + float(scheduler.sigmas[-1]) ** 2)
    return x, counter.calls


def signature(scheduler: Any, option: dict[str, Any]) -> tuple:
    """What decides a peer run: its timesteps, sigmas and non-grid options."""
    sigmas = getattr(scheduler, "sigmas", None)
    grid_keys = ("timestep_spacing", "use_karras_sigmas", "use_lu_lambdas")  # in the arrays
    rest = tuple(sorted((k, v) for k, v in option.items() if k not in grid_keys))
    return (
        tuple(scheduler.timesteps.tolist()),
        () if sigmas is None else tuple(sigmas.tolist()),
        rest,
    )


def sweep_peers(problem: Problem, nfes: tuple[int, ...], tries: Callable) -> Iterator[dict]:
    """Every peer at every NFE with each option ``tries(peer, nfe)`` lists (once per schedule)."""
    for peer, target in itertools.product(PEERS, nfes):
        seen: set[tuple] = set()
        for option in tries(peer, target):
            scheduler = peer_steps(peer, problem.config, option, target)
            if scheduler is None or signature(scheduler, option) in seen:
                continue
            seen.add(signature(scheduler, option))
            x, calls = run_peer(problem, peer, scheduler)
            steps = getattr(scheduler, "num_inference_steps", len(scheduler.timesteps))
            yield row(problem, peer.name, target, calls, int(steps), option, x)


# ----------------------------------------------------------------------------- the two problems


def shipped_config() -> dict[str, Any]:
    """The shipped model's scheduler config, β keys only (shared by every peer)."""
    config = read_json(shipped_model_path() / "scheduler" / "scheduler_config.json")
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
    c = pipe.unet.config
    shape = (n_samples, c.in_channels, c.sample_size, c.sample_size)
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


# ----------------------------------------------------------------------------- sweeps and results


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the module was loaded."""
    print(f"[{time.perf_counter() - LOADED:6.0f} s] {message}", file=sys.stderr, flush=True)


def every_grid(method: str, target: int) -> list[dict[str, Any]]:
    return [{"grid": g} for g in GRIDS]


def every_option(peer: Peer, target: int) -> list[dict[str, Any]]:
    return peer_options(peer)


def sweep(problem: Problem, nfes: tuple[int, ...], pndm_tries, peer_tries) -> list[dict]:
    """All runs on `problem`: pndm methods, pf, then the peers (``None`` rows dropped)."""
    rows = list(sweep_pndm(problem, nfes, pndm_tries))
    rows += [r for r in (pf_row(problem, target) for target in nfes) if r]
    log(f"{problem.name}: pndm methods done")
    rows += list(sweep_peers(problem, nfes, peer_tries))
    log(f"{problem.name}: diffusers peers done")
    return rows


def best(rows: list[dict], method: str, target: int, k: int = 1) -> list[dict]:
    """The k lowest-error runs of `method` at `target` NFE with distinct errors (options that
    change nothing, e.g. euler_at_final below 15 steps, give the same error); no failed runs."""
    sel = [r for r in rows if (r["method"], r["nfe"]) == (method, target)]
    sel = [r for r in sel if r["error"] is not None]
    distinct: dict[float, dict] = {}
    for r in sorted(sel, key=lambda r: r["error"]):
        distinct.setdefault(r["error"], r)  # the first option listed of equal ones
    return list(distinct.values())[:k]


def candidates(rows: list[dict], k: int) -> tuple[Callable, Callable]:
    """(pndm tries, peer tries) for digits: the k best mixture options; DDIM with and without
    clip_sample."""

    def pndm_tries(method: str, target: int) -> list[dict]:
        return [r["option"] for r in best(rows, method, target, k)]

    def peer_tries(peer: Peer, target: int) -> list[dict]:
        options = [r["option"] for r in best(rows, peer.name, target, k)]
        if peer.scheduler == "DDIMScheduler":
            options = [{**o, "clip_sample": clip} for o in options for clip in (False, True)]
        return options

    return pndm_tries, peer_tries


def table(rows: list[dict], nfes: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """method -> str(NFE) -> the best run (error, option, steps, options tried), unreachable, or
    failed (every run non-finite)."""
    out: dict[str, dict[str, Any]] = {}
    for method in (*METHODS, "pf", *PEER_NAMES):
        out[method] = {}
        for target in nfes:
            tried = [r for r in rows if r["method"] == method and r["nfe"] == target]
            top = best(rows, method, target)
            cell = {**top[0], "tried": len(tried)} if top else {"reachable": False}
            cell = {"failed": len(tried)} if tried and not top else cell
            out[method][str(target)] = {k: v for k, v in cell.items() if k not in ("method", "nfe")}
    return out


def label(option: dict[str, Any]) -> str:
    """A compact tag for a table cell: grid or spacing, K(arras), lu, o3, eaf, clip; pf's rtol."""
    if "rtol" in option:
        return f"rtol {option['rtol']:.0e}"
    if "grid" in option:
        return GRID_LABELS[option["grid"]]
    parts = [GRID_LABELS[option["timestep_spacing"]]]
    parts += ["K"] if option.get("use_karras_sigmas") else []
    parts += ["lu"] if option.get("use_lu_lambdas") else []
    parts += ["o3"] if option.get("solver_order") == 3 else []
    parts += ["eaf"] if option.get("euler_at_final") else []
    parts += ["clip"] if option.get("clip_sample") else []
    return "+".join(parts)


# ----------------------------------------------------------------------------- report


def markdown_table(results: dict[str, dict[str, Any]], nfes: tuple[int, ...]) -> list[str]:
    lines = ["| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |"]
    lines.append("|---" * (len(nfes) + 1) + "|")
    for method, cells in results.items():
        row_cells = []
        for n in nfes:
            c = cells[str(n)]
            row_cells.append(f"{c['error']:.2e} {label(c['option'])}" if "error" in c else "–")
        if any(c != "–" for c in row_cells):
            lines.append(f"| {method} | " + " | ".join(row_cells) + " |")
    return lines


def head_to_head(results: dict[str, dict[str, Any]], nfes: tuple[int, ...]) -> list[str]:
    """Per NFE: the best pndm method against the best diffusers scheduler."""
    lines = ["| NFE | best pndm | error | best diffusers | error | diffusers/pndm |"]
    lines.append("|---|---|---|---|---|---|")
    for n in nfes:
        picks = []
        for names in ((*METHODS, "pf"), PEER_NAMES):
            cells = [(results[m][str(n)], m) for m in names if "error" in results[m][str(n)]]
            picks.append(min(cells, key=lambda c: c[0]["error"]))
        (p, pm), (d, dm) = picks
        lines.append(
            f"| {n} | {pm} ({label(p['option'])}) | {p['error']:.2e} | {dm} "
            f"({label(d['option'])}) | {d['error']:.2e} | {d['error'] / p['error']:.2g}x |"
        )
    return lines


def _intro(report: dict[str, Any], command: str) -> list[str]:
    return [
        "## Every solver at equal NFE: error to the exact solution (`benchmarks/quality.py`)",
        "",
        f"`{command}` — {report['setup']['wall_seconds'] / 60:.1f} min on one thread of "
        f"{report['setup']['device']}; torch {report['setup']['torch']}, diffusers "
        f"{report['setup']['diffusers']}. Results: `results/quality.json`, "
        "`results/quality_mixture.png`, `results/quality_digits.png`.",
        "",
        "Every method starts from the same x_T and ends at ᾱ_0 = 0.9999 (the shipped config's "
        "final value); the error is the RMS over samples and pixels against the ODE solution "
        "from (x_T, t = 999) to ᾱ_0. diffusers' schedulers run their own `set_timesteps`/`step` "
        'loop, set to end there (`set_alpha_to_one=False`, `final_sigmas_type="sigma_min"`; '
        "Heun's last sigma patched), with ε evaluated exactly at the ᾱ each step assumes. NFE is "
        "counted; '–' = no step count gives exactly that NFE. Each cell is the best option tried "
        "(see the module docstring for the rules).",
        "",
    ]


def markdown(report: dict[str, Any], command: str) -> str:
    nfes = tuple(report["setup"]["nfes"])
    mix, dig = report["models"]["mixture"], report["models"]["digits"]
    mn, dn = mix["notes"], dig["notes"]
    ref_steps = report["setup"]["ref_steps"]
    lines = [
        *_intro(report, command),
        f"**(a) Gaussian mixture** (3x32x32, {len(mn['weights'])} components, stds "
        f"{', '.join(map(str, mn['stds']))}; {mn['samples']} samples, float64). Reference: "
        f"DOP853 in σ̃ at rtol = atol = 1e-13; it differs from a 1e-11 run by "
        f"{mn['reference_vs_rtol_1e-11']:.1e}. (The digits reference method, vab with {ref_steps} "
        f"steps on the edm grid, is {mn[f'vab_{ref_steps}_edm_vs_dop853']:.1e} from it.)",
        "",
        *markdown_table(mix["results"], nfes),
        "",
        f"**(b) Shipped digits model** (1x16x16, {dn['samples']} noises, float32 UNet, float64 "
        f"solver state). Reference: vab (order 4) with {ref_steps} steps on the edm grid; pec with "
        f"{ref_steps} steps on the logsnr grid differs from it by "
        f"{dn[f'reference_vs_pec_{ref_steps}_logsnr']:.1e}. Options tried per (method, NFE): the "
        f"{report['setup']['candidates']} best on the mixture (DDIM: each with and without "
        "clip_sample).",
        "",
        *markdown_table(dig["results"], nfes),
        "",
        "Tags: grids tr/ld/ls = trailing/leading/linspace, un = uniform (original code), dq = DDIM "
        "quadratic, edm = Karras ρ = 7, lsnr = uniform log-SNR, tu/tq = uniform/quadratic in t; "
        "K = Karras sigmas, lu = lu-λ, o3 = solver_order 3, eaf = euler_at_final, clip = "
        "clip_sample; pf: its rtol (it reaches exactly 50 calls only with a loose tolerance).",
        "",
        "Best pndm method against the best diffusers scheduler, mixture:",
        "",
        *head_to_head(mix["results"], nfes),
        "",
        "and on the digits model:",
        "",
        *head_to_head(dig["results"], nfes),
    ]
    return "\n".join(lines) + "\n"


def plot(model: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = plt.get_cmap("tab20").colors
    for i, method in enumerate((*METHODS, "pf", *PEER_NAMES)):  # a fixed colour per method
        cells = model["results"][method]
        points = sorted((int(n), c["error"]) for n, c in cells.items() if "error" in c)
        if points:
            style = "-" if method in (*METHODS, "pf") else "--"
            nfe_, err = zip(*points, strict=True)
            ax.loglog(nfe_, err, style, marker="o", ms=3, color=colors[i % 20], label=method)
    nfes = sorted({int(n) for cells in model["results"].values() for n in cells})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_xlabel("NFE (model calls)")
    ax.set_ylabel("RMS error per pixel vs reference")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    nfes = QUICK_NFES if args.quick else NFES
    start = time.perf_counter()
    mixture = mixture_problem(args.mixture_samples, args.seed, args.ref_steps)
    mix_rows = sweep(mixture, nfes, every_grid, every_option)
    mix_seconds = time.perf_counter() - start
    digits = digits_problem(args.digits_samples, args.seed, args.ref_steps)
    dig_rows = sweep(digits, nfes, *candidates(mix_rows, args.candidates))
    models = {}
    for problem, rows, seconds in (
        (mixture, mix_rows, mix_seconds),
        (digits, dig_rows, time.perf_counter() - start - mix_seconds),
    ):
        models[problem.name] = {
            "notes": problem.notes,
            "seconds": seconds,
            "results": table(rows, nfes),
            "runs": rows,
        }
    return {"setup": setup(args, nfes, time.perf_counter() - start), "models": models}


def setup(args: argparse.Namespace, nfes: tuple[int, ...], wall: float) -> dict[str, Any]:
    return {
        "nfes": nfes,
        "grids": GRIDS,
        "peers": {
            p.name: {"scheduler": p.scheduler, "fixed": p.fixed, "swept": p.options} for p in PEERS
        },
        "candidates": args.candidates,
        "ref_steps": args.ref_steps,
        "seed": args.seed,
        "schedule": shipped_config(),
        "end": "alpha_bar_0 = alphas_cumprod[0] (sigma_tilde 0.0100); start x_T at t = 999",
        "error": "RMS over samples and pixels of x - x_ref",
        "rules": __doc__.split("Rules (the same for both problems and every method):")[1]
        .split("    python")[0]
        .strip(),
        "wall_seconds": wall,
        "threads": torch.get_num_threads(),
        "device": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "pndm": pndm.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help=f"NFE {QUICK_NFES}, few samples")
    parser.add_argument("--markdown", type=Path, help="write the README section here")
    parser.add_argument("--mixture-samples", type=int, default=32)
    parser.add_argument("--digits-samples", type=int, default=16)
    parser.add_argument("--ref-steps", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=2, help="options per method on digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.mixture_samples, args.digits_samples = 4, 4
        args.ref_steps, args.candidates = 100, 1
    torch.set_num_threads(1)  # small batches; another job may share the machine
    report = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quality_quick" if args.quick else "quality"  # a smoke check keeps the real results
    write_json(args.out / f"{stem}.json", report)
    for name in ("mixture", "digits"):
        title = f"{name}: RMS error vs NFE, best option per point (solid: pndm, dashed: diffusers)"
        plot(report["models"][name], title, args.out / f"{stem}_{name}.png")
    command = "python benchmarks/quality.py" + (" --quick" if args.quick else "")
    text = markdown(report, command)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
