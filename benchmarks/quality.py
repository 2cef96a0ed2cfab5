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
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from benchlib.machine import device_name
from benchlib.methods import GRIDS, pf_row, sweep_pndm
from benchlib.peers import PEERS, Peer, peer_options, sweep_peers
from benchlib.problems import Problem, digits_problem, mixture_problem, shipped_config
from benchlib.progress import log
from benchlib.report import markdown, plot
from benchlib.results import best, table

import pndm
from pndm.files.jsonfile import write_json

NFES = (5, 6, 8, 10, 15, 20, 50)
QUICK_NFES = (5, 8)


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
