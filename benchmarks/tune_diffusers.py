"""The cost of tuning a diffusers pipeline: `pndm.tuning.tune_diffusers_pipeline` for 8 UNet
calls on the tiny random Stable Diffusion pipeline of `benchlib.tiny_diffusers` (4 x 8 x 8
latents), with its defaults (64 tuning noises, 256 with calibration; the default Nelder-Mead
budget; guidance 7.5; 8 latents per UNet call).

The machine-independent cost is the count: ``model_calls`` guided evaluations of all tuning
noises (each ``ceil(samples / batch_size)`` UNet calls on ``2 * batch_size`` latents), so a real
pipeline costs about ``unet_calls`` times one of its UNet calls at that batch. Seconds are this
machine's on the tiny UNet. The grid is judged against the teacher on held-out noise and prompts.

    python benchmarks/tune_diffusers.py [--threads N]
                                        [--out benchmarks/results/tune_diffusers_cpu.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchlib.machine import device_name
from benchlib.tiny_diffusers import CallCounter, tiny_sd

from pndm import SamplerScheduler
from pndm.files.jsonfile import write_json
from pndm.samplers import SAMPLERS
from pndm.tuning.diffusers import latent_noise, latent_size, pipeline_eps, tune_diffusers_pipeline
from pndm.tuning.objective import rms, teacher
from pndm.tuning.search import steps_for_nfe
from pndm.tuning.spaces import start_grid

PROMPTS = ["a red cube on a table", "two cats", "a lighthouse at night", "an old car"]
HELD_OUT = ["a blue house", "green trees in fog", "a bowl of fruit"]
CASES = [("ipndm", False), ("pec-data", False), ("ipndm", True)]
NFE = 8
DEFAULT_OUT = Path(__file__).parent / "results" / "tune_diffusers_cpu.json"


def held_out(pipe: Any, tuned: Any) -> dict[str, float]:
    """RMS error against the teacher on 32 other noises and other prompts: start grid, tuned."""
    eps = pipeline_eps(pipe, HELD_OUT, 32)
    schedule = SamplerScheduler.from_config(pipe.scheduler.config).schedule
    x = latent_noise(pipe, 32, seed=12345, size=latent_size(pipe, None, None))
    steps = steps_for_nfe(tuned.method, NFE, tuned.options)
    grids = {"start": start_grid(tuned.start_grid, schedule, steps), "tuned": tuned.timesteps}
    with torch.no_grad():
        reference = teacher(eps, schedule, x)
        errors = {}
        for name, grid in grids.items():
            calibrated = name == "tuned" and tuned.calibration is not None
            fn = tuned.calibration.apply(eps) if calibrated else eps
            out = SAMPLERS[tuned.method](fn, x, grid, schedule, **tuned.options)
            errors[name] = rms(out, reference)
    return errors


def run_case(pipe: Any, method: str, calibrate: bool) -> dict[str, Any]:
    with CallCounter(pipe.unet) as counter:
        start = time.perf_counter()
        tuned = tune_diffusers_pipeline(pipe, PROMPTS, method=method, nfe=NFE, calibrate=calibrate)
        seconds = time.perf_counter() - start
    return {
        "method": method, "nfe": NFE, "calibrate": calibrate, "seconds": seconds,
        "model_calls": tuned.model_calls, "unet_calls": counter.calls,
        "samples": 256 if calibrate else 64, "batch_size": 8, "start_grid": tuned.start_grid,
        "error_start": tuned.start_error, "error_tuned": tuned.error,
        "held_out": held_out(pipe, tuned), "timesteps": tuned.timesteps.tolist(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        pipe = tiny_sd(Path(folder))
    results = [run_case(pipe, method, calibrate) for method, calibrate in CASES]
    report = {
        "benchmark": "tune_diffusers",
        "pipeline": "benchlib.tiny_diffusers.tiny_sd (random weights, 4x8x8 latents)",
        "cpu": device_name(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print("| method | calibrate | s | model calls | UNet calls | held-out error start -> tuned |")
    print("|---|---|---|---|---|---|")
    for r in results:
        h = r["held_out"]
        print(f"| {r['method']} | {r['calibrate']} | {r['seconds']:.1f} | {r['model_calls']} | "
              f"{r['unet_calls']} | {h['start']:.4f} -> {h['tuned']:.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
