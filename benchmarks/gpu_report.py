"""One command for a CUDA machine: the CUDA tests, and pipeline speed, memory and accuracy
against diffusers, written to one JSON (benchmarks/results/gpu_report.json).

1. The CUDA tests (``pytest -m gpu``, the ones skipped elsewhere as "needs CUDA"): counts of
   passed, failed, skipped and errors, and the names of the failures.
2. The google/ddpm-cifar10-32 architecture with random weights (`speed.build`), PLMS
   (``skip_prk_steps=True``), batch 256, 50 steps, the same seeds everywhere. Variants, each in
   float32 and bfloat16: diffusers' PNDMPipeline (in bfloat16 only its UNet, see `_half`), and
   ours plain (NCHW), channels-last, channels-last + CUDA graphs, channels-last + torch.compile.
   Per variant: images/s (fastest of ``--repeats`` calls after a warm-up, where compile and
   graph capture happen), ratio to diffusers float32, peak CUDA memory, mean and max
   |pixel - ours float32| on the 0..255 scale.
3. Solver overhead: our pipeline with the UNet's forward replaced by a constant (noise, grid,
   solver, post-processing only), per model call, as a share of the float32 and bfloat16
   channels-last step times.

On a machine without CUDA it prints one line and exits with status 2. ``--device cpu`` runs the
same code on tiny sizes as a smoke test (``--device cpu --batch 2 --steps 2``; float32 only,
no tests, no compile, no graphs).

    python benchmarks/gpu_report.py [--batch 256] [--steps 50] [--repeats 2]
        [--out benchmarks/results/gpu_report.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.machine import device_name
from speed import PeakMemory, build, count_calls, sync  # this folder: run as a script

import pndm
from pndm.files.jsonfile import write_json
from pndm.models.unet_2d import DDPM_CIFAR10_CONFIG

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).parent / "results" / "gpu_report.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
OURS = {  # name -> pipeline options
    "ours_nchw": {"channels_last": False},
    "ours_channels_last": {"channels_last": True},
    "ours_cuda_graphs": {"channels_last": True, "cuda_graphs": True},
    "ours_compile": {"channels_last": True, "compile": True},
}
Run = Callable[[], np.ndarray]


def cuda_tests(timeout: int) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess: outcome counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", f"--junitxml={xml}"]
        path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        start = time.perf_counter()
        try:
            subprocess.run(
                command, cwd=ROOT, env=env, timeout=timeout, capture_output=True, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if not xml.exists():
            return {"error": "pytest wrote no report"}
        cases = ET.parse(xml).getroot().iter("testcase")
        outcomes = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "failures": []}
        for case in cases:
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
            key = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(kind, "passed")
            outcomes[key] += 1
            if kind in ("failure", "error"):
                outcomes["failures"].append(f"{case.get('classname')}::{case.get('name')}")
        outcomes["seconds"] = time.perf_counter() - start
        return outcomes


def dtypes(device: torch.device) -> dict[str, torch.dtype]:
    """Both dtypes on CUDA; float32 alone in the CPU smoke run (bfloat16 convolutions there take
    minutes)."""
    return DTYPES if device.type == "cuda" else {"float32": torch.float32}


def pipelines(device: torch.device, args: argparse.Namespace) -> dict[str, tuple[Run, Any]]:
    """name -> (one pipeline call -> NHWC float images, the UNet it calls), same weights."""
    import diffusers

    theirs32, ours32, config = build(device, skip_prk=True)
    runs: dict[str, tuple[Run, Any]] = {}
    seeds = list(range(args.batch))
    for label, dtype in dtypes(device).items():
        theirs = theirs32 if dtype == torch.float32 else _half(_copy(theirs32), dtype)
        d_pipe = diffusers.PNDMPipeline(theirs, diffusers.PNDMScheduler(**config))
        d_pipe.set_progress_bar_config(disable=True)
        runs[f"diffusers_{label}"] = (_diffusers_run(d_pipe, args), theirs)
        unet = ours32 if dtype == torch.float32 else _copy(ours32).to(dtype)
        pipe = pndm.PNDMPipeline(unet, pndm.PNDMScheduler(**config))
        pipe.set_progress_bar_config(disable=True)
        for name, options in OURS.items():
            if device.type == "cpu" and ("compile" in options or "cuda_graphs" in options):
                continue  # the smoke run: neither exists without CUDA worth measuring

            def run(pipe: Any = pipe, options: dict = options) -> np.ndarray:
                out = pipe(args.batch, args.steps, seeds=seeds, output_type="np", **options)
                return out.images

            runs[f"{name}_{label}"] = (run, unet)
    return runs


def _copy(module: Any) -> Any:
    return copy.deepcopy(module)


def _half(unet: Any, dtype: torch.dtype) -> Any:
    """diffusers' UNet in ``dtype``, its input cast on the way in: its PNDMPipeline draws float32
    noise and keeps a float32 sample (the scheduler promotes the 16-bit output)."""
    unet.to(dtype).register_forward_pre_hook(lambda m, a: (a[0].to(dtype), *a[1:]))
    return unet


def _diffusers_run(pipe: Any, args: argparse.Namespace) -> Run:
    def run() -> np.ndarray:
        gens = [torch.Generator("cpu").manual_seed(s) for s in range(args.batch)]
        out = pipe(args.batch, generator=gens, num_inference_steps=args.steps, output_type="np")
        return out[0]

    return run


def measure(run: Run, unet: Any, device: torch.device, repeats: int) -> dict[str, Any]:
    """Warm-up (compile, capture), then the fastest of ``repeats`` calls, its peak memory,
    and the model calls per pipeline call."""
    start = time.perf_counter()
    calls = count_calls(unet, run)
    first = time.perf_counter() - start
    seconds = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            images = run()
            sync(device)
            seconds.append(time.perf_counter() - start)
    return {
        "first_call_s": first,
        "seconds": seconds,
        "model_calls": calls,
        "ms_per_model_call": 1e3 * min(seconds) / max(calls, 1),
        "peak_memory_mib": memory.peak_mib,
        "memory_growth_mib": memory.growth_mib,
        "images": images,
    }


def solver_overhead(device: torch.device, dtype: torch.dtype, args: argparse.Namespace) -> float:
    """ms per model call of our channels-last pipeline whose UNet returns a constant."""
    unet = pndm.UNet2DModel(**DDPM_CIFAR10_CONFIG).eval().to(device, dtype)
    out = torch.zeros(args.batch, 3, 32, 32, device=device, dtype=dtype)
    unet.forward = lambda *_, **__: (out,)
    pipe = pndm.PNDMPipeline(unet, pndm.PNDMScheduler(skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.batch))

    def run() -> np.ndarray:
        return pipe(args.batch, args.steps, seeds=seeds, output_type="np").images

    return measure(run, unet, device, args.repeats)["ms_per_model_call"]


def report(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    results = {
        name: measure(run, unet, device, args.repeats)
        for name, (run, unet) in pipelines(device, args).items()
    }
    reference = results["ours_nchw_float32"]["images"]
    base = args.batch / min(results["diffusers_float32"]["seconds"])
    for r in results.values():
        diff = np.abs(r.pop("images").astype(np.float64) - reference) * 255
        r["pixel_diff_to_float32_mean"] = float(diff.mean())
        r["pixel_diff_to_float32_max"] = float(diff.max())
        r["images_per_s"] = args.batch / min(r["seconds"])
        r["ratio_to_diffusers_float32"] = r["images_per_s"] / base
    overhead = {}
    for label, dtype in dtypes(device).items():
        ms = solver_overhead(device, dtype, args)
        step = results[f"ours_channels_last_{label}"]["ms_per_model_call"]
        overhead[label] = {"ms_per_model_call": ms, "share_of_step": ms / step}
    return {"variants": results, "solver_overhead": overhead}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke run)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--test-timeout", type=int, default=240, help="seconds for the CUDA tests")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_report: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import diffusers

    start = time.perf_counter()
    tests = cuda_tests(args.test_timeout) if device.type == "cuda" else {"not run": "cpu"}
    result = {
        "benchmark": "gpu_report",
        "device": str(device),
        "device_name": device_name(device),
        "model": "google/ddpm-cifar10-32 architecture, random weights (seed 0)",
        "scheduler": "PNDM, skip_prk_steps=True (PLMS)",
        "batch": args.batch,
        "steps": args.steps,
        "statistic": f"fastest of {args.repeats} calls after a warm-up",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pndm": pndm.__version__,
            "cuda": torch.version.cuda,
        },
        "cuda_tests": tests,
        **report(device, args),
    }
    result["total_seconds"] = time.perf_counter() - start
    write_json(args.out, result)
    for name, v in result["variants"].items():
        print(
            f"{name}: {v['images_per_s']:.1f} img/s, x{v['ratio_to_diffusers_float32']:.2f}, "
            f"{v['peak_memory_mib']:.0f} MiB, mean diff {v['pixel_diff_to_float32_mean']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
