"""Scheduler step overhead: pndm.PNDMScheduler.step against diffusers' PNDMScheduler.step.

No model: each call gets a fixed random model output, so only the scheduler's own work is timed
(tensor arithmetic, history bookkeeping, Python overhead). Batch 256x3x32x32 float32 by default,
F-PNDM (skip_prk_steps=False) and PLMS, 50 steps (59 and 51 calls). The two schedulers alternate
over ``--repeats`` full runs. The statistic is the mean over calls of each call's fastest time
across runs (other load on a shared machine only ever adds time); the median run is reported too.

    python benchmarks/scheduler_step.py [--device cpu] [--threads N] [--repeats 11]
                                        [--out benchmarks/results/scheduler_step.json]

The headline ``ratio`` is ours / diffusers for the default F-PNDM configuration (target <= 0.5).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch

import pndm
from pndm.files.jsonfile import write_json

SHAPE = (256, 3, 32, 32)
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
        scheduler.step(output, t, x)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return times


def compare(config: dict, steps: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Median per-call seconds (whole run, warm-up calls, multistep calls) for both schedulers."""
    from diffusers import PNDMScheduler as DiffusersPNDM

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=gen).to(device)
    output = torch.randn(SHAPE, generator=gen).to(device)
    schedulers = {"ours": pndm.PNDMScheduler(**config), "diffusers": DiffusersPNDM(**config)}
    warmup = 1 if config.get("skip_prk_steps") else 12
    runs: dict[str, list[list[float]]] = {name: [] for name in schedulers}
    for s in schedulers.values():  # warm caches and the allocator
        time_run(s, steps, x, output)
    for _ in range(repeats):
        for name, s in schedulers.items():
            runs[name].append(time_run(s, steps, x, output))
    result: dict[str, Any] = {"config": config, "calls": len(runs["ours"][0])}
    for name, per_run in runs.items():
        fastest = [min(times) for times in zip(*per_run, strict=True)]  # per call, over runs
        result[name] = {
            "ms_per_call": 1e3 * mean(fastest),
            "ms_per_warmup_call": 1e3 * mean(fastest[:warmup]),
            "ms_per_multistep_call": 1e3 * mean(fastest[warmup:]),
            "ms_per_call_median_run": 1e3 * statistics.median(mean(r) for r in per_run),
        }
    ours, theirs = result["ours"], result["diffusers"]
    result["ratio"] = ours["ms_per_call"] / theirs["ms_per_call"]
    result["ratio_median_run"] = ours["ms_per_call_median_run"] / theirs["ms_per_call_median_run"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import diffusers

    device = torch.device(args.device)
    cases = {
        "f-pndm": {},
        "plms": {"skip_prk_steps": True},
        "f-pndm v_prediction": {"prediction_type": "v_prediction"},
    }
    results = {name: compare(cfg, args.steps, args.repeats, device) for name, cfg in cases.items()}
    report = {
        "benchmark": "scheduler_step",
        "shape": list(SHAPE),
        "dtype": "float32",
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "ratio": results["f-pndm"]["ratio"],
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print("| case | calls | ours ms/call | diffusers ms/call | ratio | ratio (median runs) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ours, theirs = r["ours"]["ms_per_call"], r["diffusers"]["ms_per_call"]
        print(
            f"| {name} | {r['calls']} | {ours:.3f} | {theirs:.3f} | {r['ratio']:.3f} "
            f"| {r['ratio_median_run']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
