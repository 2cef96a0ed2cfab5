"""Adaptive samplers at equal tolerance: pec-adaptive (AB/AM in σ̃, Milne's estimate) against pf.

The problem is quality.py's ``mixture``: an image-shaped (3x32x32) 4-component Gaussian mixture
with exact ε, on the shipped model's discrete linear schedule (β 1e-4..0.02, T = 1000), float64,
from x_T ~ N(0, I) at t = 999 to ᾱ_0 (t = 0, the config's final value). Reference: scipy DOP853
in σ̃ at rtol = atol = 1e-13 (`pndm.analytic.reference_flow`). Error: RMS over samples and pixels.
NFE: counted model calls (and each method's own stats["nfe"], checked equal).

Both methods run at rtol = atol = tol for each tol in --tols. For context, fixed-step ``pec``
(the same AB4/AM5 pair) on the logsnr grid is run with the step count that costs the same NFE as
each pec-adaptive run. The second table gives, for each error level, the fewest calls with which
a method reached it in the sweep.

    python benchmarks/adaptive.py [--samples 8] [--tols 1e-2 1e-3 ...] [--out benchmarks/results]

Writes adaptive.json to --out and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import torch
from benchlib.measure import CountingEps
from benchlib.problems import (
    MIX_SHAPE,
    MIX_STDS,
    MIX_WEIGHTS,
    T_END,
    T_START,
    mixture_means,
    shipped_config,
)

from pndm.analytic import GaussianMixture, reference_flow
from pndm.files.jsonfile import write_json
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS
from pndm.schedule import NoiseSchedule

TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
LEVELS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
ORDER = 4  # pec-adaptive's default; the fixed-step context uses the same pair


def problem(samples: int, seed: int) -> dict[str, Any]:
    schedule = NoiseSchedule.from_config(shipped_config())
    eps_fn = GaussianMixture(MIX_WEIGHTS, mixture_means(seed), MIX_STDS).eps_fn(schedule)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples, *MIX_SHAPE), generator=g, dtype=torch.float64)
    start = time.perf_counter()
    reference = reference_flow(eps_fn, noise, T_START, T_END, schedule)
    seconds = time.perf_counter() - start
    return {
        "schedule": schedule,
        "eps_fn": eps_fn,
        "noise": noise,
        "reference": reference,
        "reference_seconds": seconds,
    }


def rms(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).square().mean().sqrt())


def run(p: dict[str, Any], method: str, times: torch.Tensor, **options: Any) -> dict[str, Any]:
    """One run: counted calls, the method's stats (adaptive ones), RMS error, seconds."""
    counter, stats = CountingEps(p["eps_fn"]), {}
    adaptive = method != "pec"
    start = time.perf_counter()
    extra = {"stats": stats} if adaptive else {}
    x = SAMPLERS[method](counter, p["noise"], times, p["schedule"], **options, **extra)
    seconds = time.perf_counter() - start
    if adaptive and stats["nfe"] != counter.calls:  # the method's own count must be honest
        raise RuntimeError(f"{method}: stats nfe {stats['nfe']} != {counter.calls} counted calls")
    return {
        "method": method,
        "nfe": counter.calls,
        "error": rms(x, p["reference"]),
        "steps": stats.get("steps"),
        "rejected": stats.get("rejected"),
        "seconds": seconds,
    }


def fixed_pec(p: dict[str, Any], nfe: int) -> dict[str, Any]:
    """pec with N = nfe steps (NFE = N) on the logsnr grid: the context column."""
    return {**run(p, "pec", make_grid("logsnr", p["schedule"], nfe), order=ORDER), "grid": "logsnr"}


def sweep(p: dict[str, Any], tols: tuple[float, ...]) -> list[dict[str, Any]]:
    ends = torch.tensor([T_START, T_END], dtype=torch.float64)  # both use only the end points
    rows = []
    for tol in tols:
        ours = run(p, "pec-adaptive", ends, rtol=tol, atol=tol, order=ORDER)
        pf = run(p, "pf", ends, rtol=tol, atol=tol)
        rows += [{**row, "tol": tol} for row in (ours, pf, fixed_pec(p, ours["nfe"]))]
        print(f"tol {tol:.0e}: pec-adaptive {ours['nfe']} calls, pf {pf['nfe']}", flush=True)
    return rows


def fewest_calls(rows: list[dict[str, Any]], method: str, level: float) -> int | None:
    hits = [r["nfe"] for r in rows if r["method"] == method and r["error"] <= level]
    return min(hits) if hits else None


def markdown(rows: list[dict[str, Any]], tols: tuple[float, ...]) -> str:
    def pick(method: str, tol: float) -> dict[str, Any]:
        return next(r for r in rows if r["method"] == method and r["tol"] == tol)

    lines = [
        "| tol | pec-adaptive error | NFE (rejected) | pf error | NFE (rejected) "
        "| pec, logsnr grid, same NFE: error |",
        "|---|---|---|---|---|---|",
    ]
    for tol in tols:
        ours, pf, fixed = (pick(m, tol) for m in ("pec-adaptive", "pf", "pec"))
        lines.append(
            f"| {tol:.0e} | {ours['error']:.2e} | {ours['nfe']} ({ours['rejected']}) "
            f"| {pf['error']:.2e} | {pf['nfe']} ({pf['rejected']}) | {fixed['error']:.2e} |"
        )
    lines += ["", "| RMS error <= | pec-adaptive NFE | pf NFE |", "|---|---|---|"]
    for level in LEVELS:
        cells = [fewest_calls(rows, m, level) for m in ("pec-adaptive", "pf")]
        text = " | ".join("not reached" if c is None else str(c) for c in cells)
        lines.append(f"| {level:.0e} | {text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tols", type=float, nargs="+", default=TOLS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    tols = tuple(args.tols)
    p = problem(args.samples, args.seed)
    rows = sweep(p, tols)
    report = {
        "setup": {
            "problem": "quality.py mixture: 3x32x32 4-component GMM, exact eps, float64",
            "schedule": "shipped config: linear beta 1e-4..0.02, T = 1000; t = 999 -> 0",
            "samples": args.samples,
            "seed": args.seed,
            "reference": "scipy DOP853 in sigma_tilde, rtol = atol = 1e-13",
            "reference_seconds": p["reference_seconds"],
            "error": "RMS over samples and pixels of x - reference",
            "pec_adaptive_order": ORDER,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "adaptive.json", report)
    print(markdown(rows, tols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
