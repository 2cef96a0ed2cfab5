"""Sampling the shipped class-conditional digits-cond under classifier-free guidance: the RMS
error to a reference of every pndm method (on each built-in grid) and of diffusers' solvers (their
own loops over the same guided ε, each at its default options with trailing and leading
spacing), at equal model calls, for guidance scales 1 (none), 2 and 5; and the conditional
accuracy: how often the shipped digits classifier (`pndm.metrics.digits`) names the requested
digit, for the reference and for the best run of each family at NFE 6.

The problem for each scale: ``--samples`` noises (torch seed 0, float64) with labels 0, 1, 2, ...
(cycling), the guided ε ε_u + w (ε_c - ε_u) of digits-cond (float32 UNet, float64 state);
reference: vab (order 4) with ``--ref-steps`` steps on the edm grid, checked against pec on the
logsnr grid. Not tuned grids: tuning digits-cond under guidance is ``pndm tune --model
digits-cond --class random --guidance W`` (this benchmark does not pay for it).

    python benchmarks/guidance.py [--samples 8] [--ref-steps 200] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from benchlib.digits_metric import class_accuracy
from benchlib.machine import device_name
from benchlib.methods import GRIDS, sweep_pndm
from benchlib.peers import PEERS, Peer, peer_steps, run_peer, sweep_peers
from benchlib.problems import Problem, guided_digits, solver_reference

import pndm
from pndm.files.jsonfile import write_json
from pndm.grids import make_grid
from pndm.samplers import SAMPLERS

SCALES = (1.0, 2.0, 5.0)
NFES = (4, 6, 8, 10)
SPACINGS = ("trailing", "leading")
ACCURACY_NFE = 6


def problem(scale: float, samples: int, ref_steps: int) -> Problem:
    """The guided problem (labels 0, 1, 2, ... cycling) with its reference."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((samples, 1, 16, 16), generator=g, dtype=torch.float64)
    found = guided_digits(scale, noise, torch.arange(samples) % 10)
    found.reference, check = solver_reference(found, ref_steps)
    found.notes = {"reference_vs_pec": found.error(check), "guidance_scale": scale}
    return found


def best(rows: list[dict], names: set[str], nfe: int) -> dict | None:
    runs = [r for r in rows if r["method"] in names and r["nfe"] == nfe and r["error"] is not None]
    return min(runs, key=lambda r: r["error"]) if runs else None


def rerun(found: Problem, row: dict) -> torch.Tensor:
    """The end point of a recorded run (for its accuracy)."""
    if row["method"] in SAMPLERS:
        times = make_grid(row["option"]["grid"], found.schedule, row["steps"])
        return SAMPLERS[row["method"]](found.eps_fn, found.noise, times, found.schedule)
    peer = next(p for p in PEERS if p.name == row["method"])
    return run_peer(found, peer, peer_steps(peer, found.config, row["option"], row["nfe"]))[0]


def spacings(peer: Peer, nfe: int) -> list[dict[str, Any]]:
    return [{"timestep_spacing": s} for s in SPACINGS]


def measure_scale(scale: float, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    found = problem(scale, args.samples, args.ref_steps)
    rows = list(sweep_pndm(found, NFES, lambda m, n: [{"grid": g} for g in GRIDS]))
    rows += list(sweep_peers(found, NFES, spacings))
    ours, theirs = set(SAMPLERS), {p.name for p in PEERS}
    table = {}
    for nfe in NFES:
        a, b = best(rows, ours, nfe), best(rows, theirs, nfe)
        table[nfe] = {"pndm": a, "diffusers": b,
                      "ratio": a["error"] / b["error"] if a and b else None}  # fmt: skip
    acc = {"reference": class_accuracy(found.reference, found.labels)}
    for family in ("pndm", "diffusers"):
        row = table[ACCURACY_NFE][family]
        acc[f"{family} NFE {ACCURACY_NFE}"] = class_accuracy(rerun(found, row), found.labels)
    return {"notes": found.notes, "best": table, "accuracy": acc, "runs": rows,
            "seconds": time.perf_counter() - start}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = ["| w | NFE | best pndm (grid) | RMS | best diffusers (spacing) | RMS | ratio |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for scale, result in report["scales"].items():
        for nfe, cell in result["best"].items():
            a, b = cell["pndm"], cell["diffusers"]
            lines.append(
                f"| {scale} | {nfe} | {a['method']} ({a['option']['grid']}) | {a['error']:.4f} | "
                f"{b['method']} ({b['option']['timestep_spacing']}) | {b['error']:.4f} | "
                f"{cell['ratio']:.2f} |"
            )
    lines += ["", "| w | accuracy: reference | pndm NFE 6 | diffusers NFE 6 |", "|---|---|---|---|"]
    for scale, result in report["scales"].items():
        acc = result["accuracy"]
        lines.append(f"| {scale} | {acc['reference']:.3f} | {acc['pndm NFE 6']:.3f} | "
                     f"{acc['diffusers NFE 6']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ref-steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    scales = {f"{w:g}": measure_scale(w, args) for w in SCALES}
    report = {
        "setup": {"samples": args.samples, "ref_steps": args.ref_steps, "nfes": NFES,
                  "grids": GRIDS, "peer_spacings": SPACINGS, "threads": 1,
                  "device": device_name(torch.device("cpu")), "torch": torch.__version__,
                  "diffusers": diffusers.__version__, "numpy": np.__version__,
                  "pndm": pndm.__version__, "python": platform.python_version(),
                  "wall_seconds": time.perf_counter() - start},
        "scales": scales,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "guidance_digits.json", report)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
