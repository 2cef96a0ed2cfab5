"""diffusers' schedulers as peers: the options swept for each, and their own
``set_timesteps``/``step`` loop at exactly a target NFE, with ε at the ᾱ each step assumes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import diffusers
import torch

from benchlib.measure import CountingEps, steps_for_nfe
from benchlib.problems import Problem, row
from pndm.schedule import NoiseSchedule

SPACINGS = ("trailing", "leading", "linspace")


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
