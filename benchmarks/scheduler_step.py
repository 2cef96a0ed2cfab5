"""Scheduler step overhead: pndm's schedulers' ``step`` against diffusers' on the same tensors.

No model: each call gets a fixed random model output, so only the scheduler's own work is timed
(tensor arithmetic, history bookkeeping, Python overhead); the sample is fed back, as a pipeline
does. The schedulers alternate over ``--repeats`` full runs. The statistic is the mean over calls
of each call's fastest time across runs (other load on a shared machine only ever adds time); the
median run is reported too. Two comparisons:

* ``pndm``: pndm.PNDMScheduler against diffusers' PNDMScheduler, batch 256x3x32x32 float32,
  F-PNDM (skip_prk_steps=False) and PLMS, 50 steps (59 and 51 calls).
* ``sampler``: pndm.SamplerScheduler (dpmpp-2m, ipndm, pec-data, plms) against diffusers'
  DPMSolverMultistepScheduler (DPM-Solver++(2M), the same algorithm as dpmpp-2m) on Stable
  Diffusion latents, 20 steps, Stable Diffusion's schedule: 1x4x64x64 (512 px) and 2x4x128x128
  (SDXL, 1024 px, two images), and pec-data, a predictor-corrector, against UniPCMultistepScheduler
  (also one). Headline ``sampler_ratio``: dpmpp-2m / DPMSolver++ on the larger.

    python benchmarks/scheduler_step.py [--device cpu] [--threads N] [--repeats 11]
                                        [--out benchmarks/results/scheduler_step.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from benchlib.machine import device_name

import pndm
from pndm.files.jsonfile import write_json

PNDM_SHAPE = (256, 3, 32, 32)
LATENTS = {"sd_512": (1, 4, 64, 64), "sdxl_1024_x2": (2, 4, 128, 128)}
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SAMPLER_METHODS = ("dpmpp-2m", "ipndm", "pec-data", "plms")
DEFAULT_OUT = Path(__file__).parent / "results" / "scheduler_step.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_run(scheduler: Any, steps: int, x: torch.Tensor, output: torch.Tensor) -> list[float]:
    """Seconds per step call over one full sampling run (model output fixed, sample fed back)."""
    scheduler.set_timesteps(steps, device=x.device)
    times = []
    for t in scheduler.timesteps:
        _sync(x.device)
        start = time.perf_counter()
        x = scheduler.step(output, t, x, return_dict=False)[0]
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return times


def measure(
    schedulers: dict[str, Any], steps: int, repeats: int, shape: tuple, device: torch.device
) -> dict[str, Any]:
    """Per scheduler: ms per call (mean of each call's fastest run) and of the median run."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    output = (0.1 * torch.randn(shape, generator=gen)).to(device)
    runs: dict[str, list[list[float]]] = {name: [] for name in schedulers}
    for s in schedulers.values():  # warm caches and the allocator
        time_run(s, steps, x, output)
    for _ in range(repeats):
        for name, s in schedulers.items():
            runs[name].append(time_run(s, steps, x, output))
    result: dict[str, Any] = {"shape": list(shape), "steps": steps}
    for name, per_run in runs.items():
        fastest = [min(times) for times in zip(*per_run, strict=True)]  # per call, over runs
        result[name] = {
            "calls": len(fastest),
            "ms_per_call": 1e3 * mean(fastest),
            "ms_per_call_median_run": 1e3 * statistics.median(mean(r) for r in per_run),
        }
    return result


def pndm_cases(steps: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """pndm.PNDMScheduler against diffusers' PNDMScheduler; ratio = ours / diffusers."""
    from diffusers import PNDMScheduler as DiffusersPNDM

    cases = {
        "f-pndm": {},
        "plms": {"skip_prk_steps": True},
        "f-pndm v_prediction": {"prediction_type": "v_prediction"},
    }
    results = {}
    for name, config in cases.items():
        schedulers = {"ours": pndm.PNDMScheduler(**config), "diffusers": DiffusersPNDM(**config)}
        r = measure(schedulers, steps, repeats, PNDM_SHAPE, device)
        r["ratio"] = r["ours"]["ms_per_call"] / r["diffusers"]["ms_per_call"]
        results[name] = r
    return results


def sampler_cases(repeats: int, device: torch.device) -> dict[str, Any]:
    """pndm.SamplerScheduler's methods against DPMSolverMultistepScheduler; ratio per method."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    results = {}
    for label, shape in LATENTS.items():
        schedulers = {
            "diffusers DPMSolverMultistep": DPMSolverMultistepScheduler(**SD_SCHEDULE),
            "diffusers UniPCMultistep": UniPCMultistepScheduler(**SD_SCHEDULE),
        }
        for method in SAMPLER_METHODS:
            schedulers[method] = pndm.SamplerScheduler(method=method, **SD_SCHEDULE)
        r = measure(schedulers, 20, repeats, shape, device)
        theirs = r["diffusers DPMSolverMultistep"]["ms_per_call"]
        r["ratio"] = {m: r[m]["ms_per_call"] / theirs for m in SAMPLER_METHODS}
        # pec-data corrects and predicts at each call, as UniPC does: that is its like
        unipc = r["diffusers UniPCMultistep"]["ms_per_call"]
        r["ratio_pec_data_to_unipc"] = r["pec-data"]["ms_per_call"] / unipc
        results[label] = r
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=50, help="PNDMScheduler's steps")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import diffusers

    device = torch.device(args.device)
    pndm_results = pndm_cases(args.steps, args.repeats, device)
    sampler_results = sampler_cases(args.repeats, device)
    report = {
        "benchmark": "scheduler_step",
        "dtype": "float32",
        "device": str(device),
        "cpu": device_name(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "ratio": pndm_results["f-pndm"]["ratio"],
        "sampler_ratio": sampler_results["sdxl_1024_x2"]["ratio"]["dpmpp-2m"],
        "pndm": pndm_results,
        "sampler": sampler_results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print_tables(pndm_results, sampler_results)
    return 0


def print_tables(pndm_results: dict[str, Any], sampler_results: dict[str, Any]) -> None:
    print("| PNDMScheduler case | calls | ours ms/call | diffusers ms/call | ratio |")
    print("|---|---|---|---|---|")
    for name, r in pndm_results.items():
        ours, theirs = r["ours"]["ms_per_call"], r["diffusers"]["ms_per_call"]
        print(f"| {name} | {r['ours']['calls']} | {ours:.3f} | {theirs:.3f} | {r['ratio']:.3f} |")
    print("\n| latents | DPMSolver++ ms/call | " + " | ".join(SAMPLER_METHODS) + " |")
    print("|---|---|" + "---|" * len(SAMPLER_METHODS))
    for label, r in sampler_results.items():
        cells = " | ".join(
            f"{r[m]['ms_per_call']:.3f} ({r['ratio'][m]:.2f}x)" for m in SAMPLER_METHODS
        )
        print(f"| {label} | {r['diffusers DPMSolverMultistep']['ms_per_call']:.3f} | {cells} |")
    for label, r in sampler_results.items():
        unipc = r["diffusers UniPCMultistep"]["ms_per_call"]
        print(f"{label}: UniPC {unipc:.3f} ms/call, pec-data {r['ratio_pec_data_to_unipc']:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
