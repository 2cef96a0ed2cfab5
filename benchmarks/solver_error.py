"""Solver error versus NFE on an exactly known problem (reference/algorithms.md §6).

Data: the 2-D, 3-component Gaussian mixture π = (0.5, 0.3, 0.2), μ = (−1, 0.5), (1, 1), (0.3, −1.2),
τ = (0.3, 0.2, 0.4), whose ε* is exact (`pndm.analytic.GaussianMixture`). Continuous VP linear
schedule, t = 1 → 1e-3 (σ̃ ≈ 152 → 0.0105), 64 trajectories from N(0, I), float64. The reference
end point is scipy's DOP853 at rtol = atol = 1e-13 (`pndm.analytic.reference_flow`); the error is
the RMS over trajectories of |x_N − x_ref|. NFE is counted by wrapping eps_fn, and checked against
`pndm.samplers.nfe`. PF is adaptive: it ignores the grid and is swept over tolerances instead.

    python benchmarks/solver_error.py [--quick] [--out benchmarks/results]

Writes solver_error.json (and solver_error.png when matplotlib is installed) and prints markdown
tables of error versus N per grid.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.measure import CountingEps, rms_error

from pndm.analytic import GaussianMixture, reference_flow
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS, nfe
from pndm.schedule import VPSchedule

WEIGHTS = (0.5, 0.3, 0.2)
MEANS = ((-1.0, 0.5), (1.0, 1.0), (0.3, -1.2))
STDS = (0.3, 0.2, 0.4)
GRIDS = ("edm", "logsnr", "time_quadratic", "time_uniform")
STEPS = (10, 20, 40, 80, 160, 320, 640)
QUICK_STEPS = (10, 20, 40, 80)
PF_TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
# FON as coded maps one DDPM index to Δt; on this t ∈ [1e-3, 1] problem one index is 1e-3.
OPTIONS: dict[str, dict[str, Any]] = {"fon-orig": {"index_size": 1e-3}}


def run_method(name: str, eps_fn: Any, x: torch.Tensor, grid: torch.Tensor, sched: Any, **opts):
    counter = CountingEps(eps_fn)
    start = time.perf_counter()
    out = SAMPLERS[name](counter, x, grid, sched, **OPTIONS.get(name, {}), **opts)
    return out, counter.calls, time.perf_counter() - start


def sweep(steps: tuple[int, ...], n_traj: int, seed: int) -> dict[str, Any]:
    sched = VPSchedule()
    gmm = GaussianMixture(WEIGHTS, MEANS, STDS)
    eps_fn = gmm.eps_fn(sched)
    # numpy's default_rng(0) is the draw behind the algorithms.md §6 tables (reproduces them).
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((n_traj, 2)))
    start = time.perf_counter()
    ref = reference_flow(eps_fn, x, sched.t_max, sched.t_min, sched)
    ref_seconds = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    for grid_name in GRIDS:
        for n in steps:
            grid = make_grid(grid_name, sched, n)
            for name in SAMPLERS:
                if name in ("pf", "pec-adaptive"):  # adaptive: grid points unused, NFE by tol
                    continue
                out, calls, seconds = run_method(name, eps_fn, x, grid, sched)
                rows.append(
                    {
                        "method": name,
                        "grid": grid_name,
                        "steps": n,
                        "nfe": calls,
                        "nfe_declared": nfe(name, n, **OPTIONS.get(name, {})),
                        "rms_error": rms_error(out, ref),
                        "seconds": seconds,
                    }
                )
    for tol in PF_TOLERANCES:
        stats: dict[str, int] = {}
        grid = make_grid("time_uniform", sched, 1)  # only the end points are used
        out, calls, seconds = run_method(
            "pf", eps_fn, x, grid, sched, rtol=tol, atol=tol, stats=stats
        )
        rows.append(
            {
                "method": "pf",
                "grid": "adaptive",
                "rtol": tol,
                "steps": stats.get("steps"),
                "nfe": calls,
                "nfe_declared": stats.get("nfe"),
                "rms_error": rms_error(out, ref),
                "seconds": seconds,
            }
        )
    return {
        "setup": {
            "problem": "2-D 3-component GMM, reference/algorithms.md §6",
            "weights": WEIGHTS,
            "means": MEANS,
            "stds": STDS,
            "schedule": "VPSchedule(beta_min=0.1, beta_max=20), t = 1 -> 1e-3",
            "trajectories": n_traj,
            "seed": f"numpy.random.default_rng({seed}).standard_normal",
            "dtype": "float64",
            "error": "sqrt(mean over trajectories of |x_N - x_ref|^2)",
            "reference": "scipy DOP853 in sigma_tilde, rtol = atol = 1e-13",
            "reference_seconds": ref_seconds,
            "options": OPTIONS,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "results": rows,
    }


def last_order(errors: list[float], steps: list[int]) -> float | None:
    """Observed order from the last two step counts: log(e_{N/2}/e_N)/log 2 for doubling N."""
    if len(errors) < 2 or min(errors[-2:]) <= 0:
        return None
    return math.log(errors[-2] / errors[-1]) / math.log(steps[-1] / steps[-2])


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    lines: list[str] = []
    steps = sorted({r["steps"] for r in rows if r["grid"] != "adaptive"})
    for grid_name in GRIDS:
        lines += [
            f"\nRMS error, **{grid_name}** grid (N = steps; NFE in the last column at N = "
            f"{steps[-1]})\n",
            "| method | " + " | ".join(f"N={n}" for n in steps) + " | last order | NFE |",
            "|---" * (len(steps) + 3) + "|",
        ]
        for name in SAMPLERS:
            sel = [r for r in rows if r["method"] == name and r["grid"] == grid_name]
            if not sel:
                continue
            errs = [r["rms_error"] for r in sel]
            order = last_order(errs, [r["steps"] for r in sel])
            cells = " | ".join(f"{e:.2e}" for e in errs)
            order_s = "–" if order is None else f"{order:.2f}"
            lines.append(f"| {name} | {cells} | {order_s} | {sel[-1]['nfe']} |")
    pf = [r for r in rows if r["method"] == "pf"]
    if pf:
        lines += ["\nPF (adaptive DOPRI5 in t), rtol = atol:\n", "| rtol | NFE | RMS error |"]
        lines.append("|---|---|---|")
        lines += [f"| {r['rtol']:.0e} | {r['nfe']} | {r['rms_error']:.2e} |" for r in pf]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping the plot (pip install matplotlib)")
        return False
    rows = report["results"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 10), sharex=True, sharey=True)
    pf = [r for r in rows if r["method"] == "pf"]
    for ax, grid_name in zip(axes.flat, GRIDS, strict=True):
        for name in SAMPLERS:
            sel = [r for r in rows if r["method"] == name and r["grid"] == grid_name]
            if sel:
                ax.loglog([r["nfe"] for r in sel], [r["rms_error"] for r in sel], "o-", label=name)
        if pf:
            ax.loglog([r["nfe"] for r in pf], [r["rms_error"] for r in pf], "k--", label="pf")
        ax.set_title(f"{grid_name} grid")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error vs DOP853 reference")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("2-D GMM (algorithms.md §6), VP schedule t = 1 → 1e-3, 64 trajectories, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help=f"N in {QUICK_STEPS} only")
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: threading only adds overhead
    report = sweep(QUICK_STEPS if args.quick else STEPS, args.trajectories, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "solver_error.json").write_text(json.dumps(report, indent=2) + "\n")
    mismatched = [
        r for r in report["results"] if r["method"] != "pf" and r["nfe"] != r["nfe_declared"]
    ]
    for r in mismatched:
        declared = r["nfe_declared"]
        print(f"NFE mismatch: {r['method']} N={r['steps']}: {r['nfe']} calls, declared {declared}")
    if not args.no_plot and plot(report, args.out / "solver_error.png"):
        print(f"wrote {args.out / 'solver_error.png'}")
    print(f"wrote {args.out / 'solver_error.json'}")
    print(markdown(report))
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
