"""End-to-end sampling speed: pndm.PNDMPipeline against diffusers' PNDMPipeline, same weights.

Both pipelines get the google/ddpm-cifar10-32 UNet architecture with the same random weights
(built by diffusers after ``torch.manual_seed(0)``, loaded into ours), the same PNDMScheduler
config and the same noise (one CPU generator per call, same seed), on the same device, in one
process. The variants alternate within every repeat (their order rotates), after one warm-up call
each (where torch.compile and CUDA-graph capture happen). Variants:

    diffusers   diffusers.PNDMPipeline, float32
    ours        pndm.PNDMPipeline, default options (float32; on the CPU channels-last inputs)
    ours_fast   pndm.PNDMPipeline with the fast options: --dtype weights/activations (solver in
                float32), channels_last, --compile, CUDA graphs on CUDA (--no-cuda-graphs)

Timing: wall clock of a whole pipeline call (noise to numpy images), synchronised on CUDA. The
headline statistic is the fastest call of each variant (other load on a shared machine only ever
adds time); the median is reported too. Peak memory: CUDA allocator peak, or on CPU the peak
resident-set growth during one call (sampled every 2 ms). TFLOP/s: the UNet's nominal FLOPs
(counted on diffusers' forward; 2 FLOPs per multiply-add) times the model calls, over the time;
against the card's dense bf16 peak where the card is known (none for CPUs).

Everything but the UNet: ours_fast's pipeline once more with the UNet's forward replaced by a
constant output (noise, grid, ε wrapper, solver, post-processing), per model call and as a
fraction of ours_fast's time per model call: an upper bound on the solver's work between calls.

Quality guard: max and mean |ours_fast - ours| on the 0..255 pixel scale (same seeds), and
max |ours - diffusers|, |ours_fast - diffusers| on the [0, 1] images.

    python benchmarks/speed.py [--device cpu] [--batch-size 8] [--steps 10] [--dtype float32]
        [--mode both | --skip-prk] [--repeats 5] [--threads N] [--compile [MODE]]
        [--out benchmarks/results/speed_cpu.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.machine import device_name

import pndm
from pndm.files.jsonfile import write_json
from pndm.models.unet_2d import DDPM_CIFAR10_CONFIG

DEFAULT_OUT = Path(__file__).parent / "results" / "speed_cpu.json"
CIFAR10 = DDPM_CIFAR10_CONFIG
# Dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets; SXM forms unless named).
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
Pipe = Callable[[int], np.ndarray]


# --- environment --------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak(name: str) -> float | None:
    """The card's dense bf16 peak (TFLOP/s), matching the longest known name; None if unknown."""
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory of one block: CUDA allocator peak, or sampled CPU resident-set growth."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        self.growth_mib = (self.peak - self._base) / 2**20
        self.peak_mib = self.peak / 2**20


# --- pipelines ----------------------------------------------------------------------------------


def build(device: torch.device, skip_prk: bool) -> tuple[Any, Any, Any]:
    """(diffusers UNet, our UNet with its weights, scheduler config), on ``device``."""
    import diffusers

    torch.manual_seed(0)
    theirs = diffusers.UNet2DModel(**CIFAR10).eval().to(device)
    ours = pndm.UNet2DModel(**CIFAR10).eval()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours.to(device), {"skip_prk_steps": skip_prk}


def nominal_gflop(unet: Any, device: torch.device) -> float:
    """GFLOP of one forward at batch 1 (conv + matmul, 2 per multiply-add), by torch's counter;
    a class-conditional UNet gets label 0."""
    from torch.utils.flop_counter import FlopCounterMode

    from pndm.images import image_shape

    x = torch.zeros(1, *image_shape(unet.config), device=device)
    conditional = unet.config.get("num_class_embeds")
    labels = torch.zeros(1, dtype=torch.long, device=device) if conditional else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(x, torch.tensor([500], device=device), class_labels=labels)
    return counter.get_total_flops() / 1e9


def count_calls(unet: Any, run: Callable[[], Any]) -> int:
    calls = 0

    def hook(*_: Any) -> None:
        nonlocal calls
        calls += 1

    handle = unet.register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return calls


def make_variants(args: argparse.Namespace, device: torch.device, skip_prk: bool) -> dict:
    """name -> (pipeline call(seed) -> NHWC images, UNet whose calls are counted)."""
    import diffusers

    theirs, ours, config = build(device, skip_prk)
    fast_unet = pndm.UNet2DModel.from_config(ours.config).eval()
    fast_unet.load_state_dict(ours.state_dict())
    fast_unet.to(device, DTYPES[args.dtype])
    d_pipe = diffusers.PNDMPipeline(theirs, diffusers.PNDMScheduler(**config))
    o_pipe = pndm.PNDMPipeline(ours, pndm.PNDMScheduler(**config))
    f_pipe = pndm.PNDMPipeline(fast_unet, pndm.PNDMScheduler(**config))
    for pipe in (d_pipe, o_pipe, f_pipe):
        pipe.set_progress_bar_config(disable=True)
    fast = fast_options(args, device)
    steps, batch = args.steps, args.batch_size

    def gen(seed: int) -> torch.Generator:
        return torch.Generator("cpu").manual_seed(seed)

    return {
        "diffusers": (
            lambda s: d_pipe(batch, generator=gen(s), num_inference_steps=steps, output_type="np")[
                0
            ],
            theirs,
        ),
        "ours": (
            lambda s: o_pipe(batch, steps, gen(s), output_type="np").images,
            ours,
        ),
        "ours_fast": (
            lambda s: f_pipe(batch, steps, gen(s), output_type="np", **fast).images,
            fast_unet,
        ),
    }


def without_unet(args: argparse.Namespace, device: torch.device, skip_prk: bool) -> dict:
    """ms per model call of ours_fast's pipeline when the UNet costs nothing (its forward returns
    a constant), fastest of the repeats after a warm-up."""
    dtype = DTYPES[args.dtype]
    unet = pndm.UNet2DModel(**CIFAR10).eval().to(device, dtype)
    out = torch.zeros(args.batch_size, 3, 32, 32, device=device, dtype=dtype)
    unet.forward = lambda *_, **__: (out,)  # instance attribute: hooks still see each call
    pipe = pndm.PNDMPipeline(unet, pndm.PNDMScheduler(skip_prk_steps=skip_prk))
    pipe.set_progress_bar_config(disable=True)
    options = {"channels_last": not args.no_channels_last}

    def run(seed: int) -> np.ndarray:
        gen = torch.Generator("cpu").manual_seed(seed)
        return pipe(args.batch_size, args.steps, gen, output_type="np", **options).images

    calls = count_calls(unet, lambda: run(args.seed))
    best = min(timed(run, args.seed, device)[0] for _ in range(args.repeats))
    return {"model_calls": calls, "ms_per_model_call": 1e3 * best / calls}


def fast_options(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    options: dict[str, Any] = {"channels_last": not args.no_channels_last}
    if args.compile:
        options["compile"] = True if args.compile == "default" else args.compile
    if device.type == "cuda" and not args.no_cuda_graphs and not args.compile:
        options["cuda_graphs"] = True
    return options


# --- measurement --------------------------------------------------------------------------------


def timed(run: Pipe, seed: int, device: torch.device) -> tuple[float, np.ndarray]:
    sync(device)
    start = time.perf_counter()
    images = run(seed)
    sync(device)
    return time.perf_counter() - start, images


def measure(args: argparse.Namespace, device: torch.device, skip_prk: bool) -> dict[str, Any]:
    variants = make_variants(args, device, skip_prk)
    names = list(variants)
    result: dict[str, Any] = {"skip_prk_steps": skip_prk, "variants": {}}
    images: dict[str, np.ndarray] = {}
    for name, (run, unet) in variants.items():  # warm-up: compile, capture, allocator
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            calls = count_calls(unet, lambda run=run: run(args.seed))
            first = time.perf_counter() - start
        result["variants"][name] = {
            "first_call_model_calls": calls,  # the layout probe's extra calls included
            "first_call_s": first,
            "peak_memory_mib": memory.peak_mib,
            "memory_growth_mib": memory.growth_mib,
            "seconds": [],
        }
        print(f"  warm-up {name}: {first:.1f} s, {calls} model calls", file=sys.stderr)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run, unet = variants[name]
            out: list[Any] = []
            calls = count_calls(unet, lambda r=run, o=out: o.append(timed(r, args.seed, device)))
            (seconds, images[name]), row = out[0], result["variants"][name]
            row["seconds"].append(seconds)
            if row.setdefault("model_calls", calls) != calls:
                raise RuntimeError(f"{name}: {calls} model calls, {row['model_calls']} before")
        print(f"  repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    summarise(result, args, images)
    overhead = without_unet(args, device, skip_prk)
    overhead["fraction_of_ours_fast_call"] = (
        overhead["ms_per_model_call"] / result["variants"]["ours_fast"]["ms_per_model_call"]
    )
    result["without_unet"] = overhead
    return result


def summarise(result: dict[str, Any], args: argparse.Namespace, images: dict) -> None:
    batch = args.batch_size
    for v in result["variants"].values():
        best, median = min(v["seconds"]), statistics.median(v["seconds"])
        v["images_per_s"] = batch / best
        v["images_per_s_median"] = batch / median
        v["ms_per_model_call"] = 1e3 * best / v["model_calls"]
        v["ms_per_model_call_median"] = 1e3 * median / v["model_calls"]
    vs = result["variants"]
    for name in ("ours", "ours_fast"):
        result[f"ratio_{name}_over_diffusers"] = (
            vs[name]["images_per_s"] / vs["diffusers"]["images_per_s"]
        )
        result[f"ratio_{name}_over_diffusers_median"] = (
            vs[name]["images_per_s_median"] / vs["diffusers"]["images_per_s_median"]
        )
    fast_vs_fp32 = np.abs(images["ours_fast"] - images["ours"]) * 255
    result["quality"] = {
        "fast_vs_ours_float32_max_px": float(fast_vs_fp32.max()),
        "fast_vs_ours_float32_mean_px": float(fast_vs_fp32.mean()),
        "ours_vs_diffusers_max_abs": float(np.abs(images["ours"] - images["diffusers"]).max()),
        "fast_vs_diffusers_max_abs": float(np.abs(images["ours_fast"] - images["diffusers"]).max()),
    }


def add_flops(result: dict[str, Any], gflop: float, batch: int, peak: float | None) -> None:
    for v in result["variants"].values():
        v["tflops"] = gflop * v["model_calls"] * batch / min(v["seconds"]) / 1e3
        v["fraction_of_bf16_peak"] = v["tflops"] / peak if peak else None


# --- main ---------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="ours_fast UNet dtype")
    p.add_argument("--mode", choices=("prk", "skip", "both"), default="both")
    p.add_argument("--skip-prk", action="store_true", help="same as --mode skip")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        help="torch.compile ours_fast (optionally a mode, e.g. max-autotune-no-cudagraphs)",
    )
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.skip_prk:
        args.mode = "skip"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import diffusers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu" and args.compile:
        import torch._inductor.config as inductor

        inductor.freezing = True  # constant weights: oneDNN prepacks them, folds the cats
    modes = {"prk": [False], "skip": [True], "both": [False, True]}[args.mode]
    name = device_name(device)
    peak = bf16_peak(name) if device.type == "cuda" else None
    gflop = nominal_gflop(build(device, False)[0], device)
    cases = {}
    for skip in modes:
        label = "skip_prk" if skip else "prk"
        print(f"case {label}", file=sys.stderr)
        cases[label] = measure(args, device, skip)
        add_flops(cases[label], gflop, args.batch_size, peak)
    report = {
        "benchmark": "speed",
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "model": "google/ddpm-cifar10-32 architecture, random weights (seed 0)",
        "nominal_gflop_per_image_forward": gflop,
        "bf16_peak_tflops": peak,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "dtype_fast": args.dtype,
        "fast_options": fast_options(args, device),
        "inductor_freezing": bool(device.type == "cpu" and args.compile),
        "repeats": args.repeats,
        "statistic": "fastest of the repeats (median also given)",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pndm": pndm.__version__,
            "python": platform.python_version(),
        },
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['device_name']}, threads {report['torch_threads']}, batch "
        f"{report['batch_size']}, {report['steps']} steps, fast dtype {report['dtype_fast']}"
    )
    print("| case | variant | calls | images/s | ms/call | TFLOP/s | peak MiB | vs diffusers |")
    print("|---|---|---|---|---|---|---|---|")
    for label, case in report["cases"].items():
        base = case["variants"]["diffusers"]["images_per_s"]
        for name, v in case["variants"].items():
            print(
                f"| {label} | {name} | {v['model_calls']} | {v['images_per_s']:.3f} | "
                f"{v['ms_per_model_call']:.1f} | {v['tflops']:.3f} | {v['peak_memory_mib']:.0f} | "
                f"{v['images_per_s'] / base:.3f} |"
            )
        q = case["quality"]
        print(
            f"| {label} | quality | fast vs fp32 max {q['fast_vs_ours_float32_max_px']:.3f} px, "
            f"mean {q['fast_vs_ours_float32_mean_px']:.4f} px; max |ours - diffusers| "
            f"{q['ours_vs_diffusers_max_abs']:.2e} | | | | | |"
        )
        o = case["without_unet"]
        print(
            f"| {label} | all but the UNet | {o['model_calls']} | | {o['ms_per_model_call']:.2f} "
            f"| | | {100 * o['fraction_of_ours_fast_call']:.2f}% of ours_fast's ms/call |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
