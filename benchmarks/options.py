"""lower_order_final and clip_sample measured: RMS error on the shipped digits model, NFE 5-10,
or on digits-cond under classifier-free guidance (--guidance W): where the PNDM family breaks down
as guidance grows, and whether a lower-order final step, clipping or data prediction fixes it.

The problem is quality.py's ``digits`` (the shipped UNet, float32 network, float64 solver state,
fixed noise from t = 999 to ᾱ_0, every run at exactly the target NFE), so the numbers line up with
quality.json. Each of ddim, plms, ipndm, vab (order 4) and pec (order 3) runs on the edm (ρ = 7)
and logsnr grids with every combination of its options among ``lower_order_final`` (not ddim: a
one-step method) and ``clip_sample`` (x̂_0 clipped to [-1, 1], the digits data range); so do
the data-prediction methods dpmpp-2m and pec-data (order 2 and 3, multistep in x̂_0). Dynamic
thresholding (Imagen; diffusers' ``thresholding=True``) clips x̂_0 to [-s, s] with s the
per-sample quantile bounded to [1, ``sample_max_value``]: with diffusers' default
``sample_max_value`` = 1, the data range of pixel models, it is exactly ``clip_sample``.
With --guidance the problem is digits-cond, ε = ε_u + w (ε_c - ε_u), toward labels 0, 1, ..., 9,
0, ... (benchlib.problems.guided_digits).

Reference: vab (order 4) with ``--ref-steps`` steps on the edm grid; its accuracy is stated as the
RMS difference to pec (order 3) with as many steps on the logsnr grid
(benchlib.problems.solver_reference).
Error: RMS over all samples and pixels of x - x_ref. The reference solves the unclipped ODE:
clipping changes the limit a method converges to, so its error here is its distance to the ODE.

    python benchmarks/options.py [--samples 16] [--ref-steps 250] [--out benchmarks/results]
    python benchmarks/options.py --guidance 5 --nfes 4,6,8

Writes options.json (options_digits-cond_w<W>.json) to --out and prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchlib.measure import CountingEps
from benchlib.methods import pndm_grid
from benchlib.problems import Problem, digits_problem, guided_digits, row, solver_reference
from benchlib.progress import log

import pndm
from pndm.files.jsonfile import write_json
from pndm.samplers import SAMPLERS

NFES = (5, 8, 10)
GRIDS = ("edm", "logsnr")
# The flags each method takes (ddim has no multistep order to lower); order = the defaults.
METHODS: dict[str, tuple[str, ...]] = {
    "ddim": ("clip_sample",),
    "plms": ("lower_order_final", "clip_sample"),
    "ipndm": ("lower_order_final", "clip_sample"),
    "vab": ("lower_order_final", "clip_sample"),
    "pec": ("lower_order_final", "clip_sample"),
    "dpmpp-2m": ("lower_order_final", "clip_sample"),
    "pec-data": ("lower_order_final", "clip_sample"),
}
COLUMNS = ("off", "lof", "clip", "lof+clip")


def option_sets(method: str) -> list[dict[str, bool]]:
    """Every on/off combination of the method's flags, all off first."""
    flags = METHODS[method]
    combos = itertools.product((False, True), repeat=len(flags))
    return [dict(zip(flags, bits, strict=True)) for bits in combos]


def label(options: dict[str, bool]) -> str:
    """The table column of an option set."""
    on = ["lof" if options.get("lower_order_final") else "", "clip" * options["clip_sample"]]
    return "+".join(filter(None, on)) or "off"


def run(problem: Problem, method: str, grid: str, target: int, options: dict) -> dict[str, Any]:
    """One run at exactly ``target`` model calls; its row as quality.py records it."""
    times = pndm_grid(method, grid, problem.schedule, target)
    if times is None:
        raise RuntimeError(f"{method} on {grid}: no step count costs {target} calls")
    counter = CountingEps(problem.eps_fn)
    x = SAMPLERS[method](counter, problem.noise, times, problem.schedule, **options)
    steps = times.numel() - 1
    return row(problem, method, target, counter.calls, steps, {"grid": grid, **options}, x)


def guided_problem(scale: float, samples: int, seed: int, ref_steps: int) -> Problem:
    """digits-cond under guidance ``scale`` with its reference (as digits_problem's)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples, 1, 16, 16), generator=g, dtype=torch.float64)
    problem = guided_digits(scale, noise, torch.arange(samples) % 10)
    problem.reference, check = solver_reference(problem, ref_steps)
    problem.notes = {
        "reference": f"vab (order 4), {ref_steps} steps, edm grid, float64 state, float32 UNet",
        f"reference_vs_pec_{ref_steps}_logsnr": problem.error(check),
        "samples": samples, "guidance_scale": scale, "labels": "i % 10",
        "noise": f"torch.randn(generator=torch.Generator().manual_seed({seed})), float64",
    }  # fmt: skip
    return problem


def sweep(problem: Problem, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for method, grid, target in itertools.product(METHODS, GRIDS, nfes):
        for options in option_sets(method):
            rows.append(run(problem, method, grid, target, options))
        log(f"{method} {grid} NFE {target} done")
    return rows


def markdown(rows: list[dict[str, Any]], notes: dict[str, Any]) -> str:
    """One line per (method, grid, NFE), one column per option set; the best of a line in bold."""
    cells: dict[tuple, dict[str, float | None]] = {}
    for r in rows:
        key = (r["method"], r["option"]["grid"], r["nfe"])
        cells.setdefault(key, {})[label(r["option"])] = r["error"]
    lines = [
        "| method | grid | NFE | " + " | ".join(COLUMNS) + " |",
        "|---" * (3 + len(COLUMNS)) + "|",
    ]
    for (method, grid, target), errors in cells.items():
        best = min(e for e in errors.values() if e is not None)
        shown = [_cell(errors.get(c), best) for c in COLUMNS]
        lines.append(f"| {method} | {grid} | {target} | " + " | ".join(shown) + " |")
    ref = next(v for k, v in notes.items() if k.startswith("reference_vs"))
    lines.append(
        f"\nRMS error to the reference ({notes['reference']}; {notes['samples']} samples); "
        f"reference vs pec on logsnr with as many steps: {ref:.1e}."
    )
    return "\n".join(lines)


def _cell(error: float | None, best: float) -> str:
    if error is None:
        return "–"
    text = f"{error:.2e}"
    return f"**{text}**" if error == best else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--ref-steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None, help="digits-cond at scale W")
    parser.add_argument("--nfes", default=",".join(map(str, NFES)))
    args = parser.parse_args(argv)
    nfes = tuple(int(v) for v in args.nfes.split(","))
    torch.set_num_threads(1)  # small batches; another job may share the machine
    start = time.perf_counter()
    if args.guidance is None:
        problem, name = digits_problem(args.samples, args.seed, args.ref_steps), "options"
    else:
        problem = guided_problem(args.guidance, args.samples, args.seed, args.ref_steps)
        name = f"options_digits-cond_w{args.guidance:g}"
    rows = sweep(problem, nfes)
    report = {
        "command": "python benchmarks/options.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "notes": problem.notes,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "versions": {"pndm": pndm.__version__, "torch": torch.__version__},
        "machine": platform.processor() or platform.machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", report)
    print(markdown(rows, problem.notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
