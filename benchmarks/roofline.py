"""A roofline report on the CPU: how close each sampling path comes to the machine's matrix rate.

On the machine it runs on, at the thread count used (--threads; default torch's, all cores):

(a) the matmul rate: a square --mm-size product in float32 and in bfloat16, fastest of
    --mm-repeats, in GFLOP/s;
(b) the UNet's FLOPs per image and call, counted (torch.utils.flop_counter, 2 per multiply-add)
    on diffusers' forward of the ddpm-cifar10-32 architecture and of the shipped digits and
    digits-cond models: the direct convolutions of the architecture, no shortcut;
(c) whole pipeline calls (noise to images) on the CIFAR-10 architecture (random weights, seed 0),
    PLMS with --steps steps, --batch images, the paths alternating within every repeat (their
    order rotates) after one warm-up call each:

        diffusers  diffusers' PNDMPipeline, float32
        fp32       pndm, float32, default layout
        fp32_cl    pndm, float32, channels_last=True
        bf16       pndm, torch_dtype=bfloat16 (the solver in float32), default layout
        bf16_cl    pndm, bfloat16, channels_last=True
        bf16_cl_compiled  (with --compile) bf16_cl with compile=True, inductor freezing

    images/s (fastest repeat: other load only ever adds time; the median is kept too), achieved
    GFLOP/s = counted FLOPs x model calls x batch / seconds, and its fraction of the matmul rate
    of the path's dtype;
(d) each path's time per operator class (`benchlib.opclass`): convolutions, matmul/linear,
    norms, activations, attention, conversions (copy_, to, contiguous, clone), elementwise,
    solver (everything outside the UNet), other; the fastest of two profiled calls.

Quality guard: mean and max pixel difference (0-255) of each pndm path to pndm fp32, and
max |fp32 - diffusers| on the [0, 1] images. Writes JSON and prints a markdown table.

    python benchmarks/roofline.py [--batch 8 | --batch 64] [--steps 4] [--repeats 3]
        [--threads N] [--compile] [--paths fp32,fp32_cl] [--no-profile]
        [--out benchmarks/results/roofline_cpu.json]

An AVX2 CPU, emulated on an AVX-512 one (the variables are recorded in the JSON):

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        python benchmarks/roofline.py --paths fp32,fp32_cl --out .../roofline_cpu_avx2.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.machine import device_name
from benchlib.opclass import CLASS_NAMES, profile_call
from benchlib.rounding import pixel_difference
from speed import build, count_calls, nominal_gflop

import pndm
from pndm.assets import shipped_model_path
from pndm.files.jsonfile import write_json

DEFAULT_OUT = Path(__file__).parent / "results" / "roofline_cpu.json"
# Environment variables that cap the instruction set of oneDNN (convolutions), MKL (matmuls) and
# ATen's own kernels: with all three at AVX2 an AVX-512 machine stands in for an AVX2 one.
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
CPU = torch.device("cpu")
# path -> (UNet dtype, channels_last, compile)
PATHS = {
    "fp32": (torch.float32, None, False),
    "fp32_cl": (torch.float32, True, False),
    "bf16": (torch.bfloat16, None, False),
    "bf16_cl": (torch.bfloat16, True, False),
}
COMPILED = {"bf16_cl_compiled": (torch.bfloat16, True, True)}


def matmul_rate(dtype: torch.dtype, n: int, repeats: int) -> float:
    """GFLOP/s of an n x n matmul in ``dtype``, fastest of ``repeats`` after a warm-up."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def counted_gflop(cifar: Any) -> dict[str, float]:
    """GFLOP per image per model call of diffusers' forward: CIFAR-10 and the shipped models."""
    import diffusers

    gflop = {"ddpm-cifar10-32": nominal_gflop(cifar, CPU)}
    for name in ("digits", "digits-cond"):
        unet = diffusers.UNet2DModel.from_pretrained(shipped_model_path(name), subfolder="unet")
        gflop[name] = nominal_gflop(unet.eval(), CPU)
    return gflop


Run = Callable[[int], np.ndarray]


def make_paths(args: argparse.Namespace) -> dict[str, tuple[Run, Any, torch.dtype]]:
    """path -> (pipeline call(seed) -> NHWC images, the UNet whose calls are counted, dtype)."""
    import diffusers

    theirs, ours, config = build(CPU, skip_prk=True)
    d_pipe = diffusers.PNDMPipeline(theirs, diffusers.PNDMScheduler(**config))
    d_pipe.set_progress_bar_config(disable=True)
    batch, steps = args.batch, args.steps
    gen = lambda s: torch.Generator("cpu").manual_seed(s)  # noqa: E731

    def diffusers_run(seed: int) -> np.ndarray:
        return d_pipe(batch, generator=gen(seed), num_inference_steps=steps, output_type="np")[0]

    paths: dict[str, tuple[Run, Any, torch.dtype]] = {
        "diffusers": (diffusers_run, theirs, torch.float32)
    }
    unets = {torch.float32: ours, torch.bfloat16: cast(ours, torch.bfloat16)}
    chosen = {name: PATHS[name] for name in args.paths}
    for name, (dtype, last, compiled) in {**chosen, **(COMPILED if args.compile else {})}.items():
        pipe = pndm.PNDMPipeline(unets[dtype], pndm.PNDMScheduler(**config))
        pipe.set_progress_bar_config(disable=True)
        options = {"channels_last": last, "compile": compiled}
        run = lambda s, p=pipe, o=options: p(batch, steps, gen(s), output_type="np", **o).images  # noqa: E731
        paths[name] = (run, unets[dtype], dtype)
    return paths


def cast(unet: Any, dtype: torch.dtype) -> Any:
    """A copy of our UNet in ``dtype`` (the float32 one stays as it is)."""
    copy = pndm.UNet2DModel.from_config(unet.config).eval()
    copy.load_state_dict(unet.state_dict())
    return copy.to(dtype)


def measure(paths: dict, repeats: int, seed: int) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Per path: first-call seconds and model calls (the layout probe's included), the repeats'
    seconds and model calls (the same in every repeat: the probe runs once); its last images."""
    rows: dict[str, dict] = {}
    images: dict[str, np.ndarray] = {}
    for name, (run, unet, _) in paths.items():
        start = time.perf_counter()
        calls = count_calls(unet, lambda run=run: run(seed))
        rows[name] = {"first_call_model_calls": calls, "first_call_s": time.perf_counter() - start}
        rows[name]["seconds"] = []
        print(f"  warm-up {name}: {rows[name]['first_call_s']:.1f} s", file=sys.stderr)
    names = list(paths)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            images[name], seconds, calls = timed_call(*paths[name][:2], seed)
            rows[name]["seconds"].append(seconds)
            if rows[name].setdefault("model_calls", calls) != calls:
                raise RuntimeError(f"{name}: {calls} model calls in repeat {r + 1}, "
                                   f"{rows[name]['model_calls']} in the first")  # fmt: skip
        print(f"  repeat {r + 1}/{repeats} done", file=sys.stderr)
    return rows, images


def timed_call(run: Run, unet: Any, seed: int) -> tuple[np.ndarray, float, int]:
    """(images, wall seconds, model calls) of one pipeline call."""
    out: list[np.ndarray] = []
    start = time.perf_counter()
    calls = count_calls(unet, lambda: out.append(run(seed)))
    return out[0], time.perf_counter() - start, calls


def summarise(rows: dict, paths: dict, rates: dict, gflop: float, batch: int) -> None:
    """images/s, ratio to diffusers, achieved GFLOP/s and fraction of the dtype's matmul rate."""
    base = batch / min(rows["diffusers"]["seconds"])
    for name, row in rows.items():
        best, median = min(row["seconds"]), statistics.median(row["seconds"])
        dtype = str(paths[name][2]).removeprefix("torch.")
        achieved = gflop * row["model_calls"] * batch / best
        row.update(
            dtype=dtype,
            images_per_s=batch / best,
            images_per_s_median=batch / median,
            ratio_to_diffusers=batch / best / base,
            ms_per_model_call=1e3 * best / row["model_calls"],
            achieved_gflops=achieved,
            fraction_of_matmul_rate=achieved / rates[dtype],
        )


def quality(rows: dict, images: dict[str, np.ndarray]) -> None:
    """Pixel differences (0-255) to pndm fp32, and max |fp32 - diffusers| on [0, 1]."""
    for name, row in rows.items():
        row["mean_px_to_fp32"], row["max_px_to_fp32"] = pixel_difference(
            images[name], images["fp32"]
        )
    rows["fp32"]["max_abs_to_diffusers"] = float(np.abs(images["fp32"] - images["diffusers"]).max())


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="PLMS steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--mm-size", type=int, default=2048)
    p.add_argument("--mm-repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also bf16_cl with torch.compile")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--paths", default=",".join(PATHS), help="pndm paths (fp32 among them)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.paths = [name for name in args.paths.split(",") if name]
    unknown = set(args.paths) - set(PATHS)
    if unknown or "fp32" not in args.paths:
        p.error(
            f"--paths: a comma-separated subset of {', '.join(PATHS)} with fp32 (the images "
            f"the others are compared to); given: {', '.join(args.paths) or 'none'}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import diffusers

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:
        import torch._inductor.config as inductor

        inductor.freezing = True  # constant weights: oneDNN prepacks them (as speed.py)
    rates = {str(d).removeprefix("torch."): matmul_rate(d, args.mm_size, args.mm_repeats)
             for d in (torch.float32, torch.bfloat16)}  # fmt: skip
    print(f"matmul GFLOP/s: {rates}", file=sys.stderr)
    paths = make_paths(args)
    gflop = counted_gflop(paths["diffusers"][1])
    rows, images = measure(paths, args.repeats, args.seed)
    summarise(rows, paths, rates, gflop["ddpm-cifar10-32"], args.batch)
    quality(rows, images)
    if not args.no_profile:
        for name, (run, unet, _) in paths.items():
            rows[name]["profile"] = profile_call(lambda run=run: run(args.seed), unet)
    report = {
        "benchmark": "roofline",
        "device_name": device_name(CPU),
        "cpu_flags_bf16": bf16_flags(),
        "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "model": "google/ddpm-cifar10-32 architecture, random weights (seed 0); PLMS",
        "batch_size": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "statistic": "fastest of the repeats (median also given)",
        "matmul_gflops": rates,
        "matmul_size": args.mm_size,
        "counted_gflop_per_image_call": gflop,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pndm": pndm.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "paths": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print_table(report)
    return 0


def bf16_flags() -> list[str]:
    """The CPU's bfloat16 flags (avx512_bf16, amx_bf16) as /proc/cpuinfo lists them."""
    from pndm.runtime.precision import BF16_FLAGS, cpu_flags

    return sorted(cpu_flags() & set(BF16_FLAGS))


def print_table(report: dict[str, Any]) -> None:
    rates = report["matmul_gflops"]
    print(
        f"{report['device_name']}, {report['torch_threads']} threads, torch "
        f"{report['versions']['torch']}; matmul {report['matmul_size']}: float32 "
        f"{rates['float32']:.0f}, bfloat16 {rates['bfloat16']:.0f} GFLOP/s; UNet "
        f"{report['counted_gflop_per_image_call']['ddpm-cifar10-32']:.2f} GFLOP per image and call;"
        f" batch {report['batch_size']}, {report['steps']} PLMS steps"
    )
    print("\n| path | images/s | vs diffusers | ms/call | GFLOP/s | of matmul rate | px to fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in report["paths"].items():
        print(
            f"| {name} | {r['images_per_s']:.2f} | {r['ratio_to_diffusers']:.2f}x | "
            f"{r['ms_per_model_call']:.0f} | {r['achieved_gflops']:.0f} | "
            f"{100 * r['fraction_of_matmul_rate']:.0f} % ({r['dtype']}) | "
            f"{r['mean_px_to_fp32']:.3f} / {r['max_px_to_fp32']:.2f} |"
        )
    if all("profile" in r for r in report["paths"].values()):
        print_profile(report["paths"])


def print_profile(rows: dict[str, Any]) -> None:
    print("\nShare of each path's traced time per operator class (%):\n")
    print("| path | " + " | ".join(CLASS_NAMES) + " |")
    print("|---|" + "---|" * len(CLASS_NAMES))
    for name, r in rows.items():
        shares = r["profile"]["shares"]
        print(f"| {name} | " + " | ".join(f"{100 * shares[c]:.1f}" for c in CLASS_NAMES) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
