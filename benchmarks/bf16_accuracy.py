"""How far bfloat16 moves the images: pndm's bfloat16 UNet (the solver in float32) against float32.

For the shipped digits and digits-cond models (their pipelines' defaults: F-PNDM, --steps steps;
digits-cond with each image's label drawn from its seed) and the ddpm-cifar10-32 architecture
(random weights, seed 0, PLMS, --cifar-steps steps), the same seeds in float32 and bfloat16
(default layout and channels_last=True): mean and max pixel difference (0-255) to float32. Next
to them, the differences that one unit roundoff of bfloat16 (2^-8) per model call makes: float32
with every model output times 1 + 2^-8 z, z ~ N(0, 1) drawn at every call or once per run
(`benchlib.rounding`). Then the digits metric
(`pndm fid ... digits`) of --metric-samples digits images in float32 and in bfloat16.

    python benchmarks/bf16_accuracy.py [--samples 64] [--metric-samples 1000] [--steps 50]
        [--cifar-steps 10] [--threads N] [--out benchmarks/results/bf16_accuracy.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.digits_metric import digits_score
from benchlib.machine import device_name
from benchlib.rounding import (
    BF16_UNIT_ROUNDOFF,
    ERROR_MODELS,
    perturbed_outputs,
    pixel_difference,
)
from roofline import bf16_flags, cast
from speed import build

import pndm
from pndm.assets import shipped_model_path
from pndm.files.jsonfile import write_json

DEFAULT_OUT = Path(__file__).parent / "results" / "bf16_accuracy.json"
CHUNK = 250  # images per pipeline call


def pipelines(name: str) -> tuple[Any, Any]:
    """(float32, bfloat16) pipelines of a shipped model, or of the CIFAR-10 architecture."""
    if name == "ddpm-cifar10-32":
        _, unet, config = build(torch.device("cpu"), skip_prk=True)
        pipes = [pndm.PNDMPipeline(u, pndm.PNDMScheduler(**config))
                 for u in (unet, cast(unet, torch.bfloat16))]  # fmt: skip
    else:
        folder = shipped_model_path(name)
        pipes = [pndm.PNDMPipeline.from_pretrained(folder, torch_dtype=d)
                 for d in (torch.float32, torch.bfloat16)]  # fmt: skip
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    return pipes[0], pipes[1]


def images(pipe: Any, seeds: range, steps: int, **options: Any) -> np.ndarray:
    """(B, H, W, C) images in [0, 1] of ``seeds``, in chunks (an image depends on its seed only)."""
    if pipe.unet.config.get("num_class_embeds"):
        options["class_labels"] = "random"
    parts = [pipe(len(chunk), steps, seeds=list(chunk), output_type="np", **options).images
             for chunk in (seeds[i : i + CHUNK] for i in range(0, len(seeds), CHUNK))]  # fmt: skip
    return np.concatenate(parts)


def differences(name: str, samples: int, steps: int) -> dict[str, Any]:
    """Mean and max pixel differences to float32 of bfloat16 and of one roundoff per call."""
    fp32, bf16 = pipelines(name)
    seeds = range(samples)
    ref = images(fp32, seeds, steps)
    runs = {
        "bf16": images(bf16, seeds, steps),
        "bf16_channels_last": images(bf16, seeds, steps, channels_last=True),
    }
    for model in ERROR_MODELS:
        with perturbed_outputs(fp32.unet, BF16_UNIT_ROUNDOFF, model):
            runs[f"fp32_one_roundoff_{model}"] = images(fp32, seeds, steps)
    row: dict[str, Any] = {"samples": samples, "steps": steps}
    for key, got in runs.items():
        mean, peak = pixel_difference(got, ref)
        row[key] = {"mean_px": mean, "max_px": peak}
        print(f"  {name} {key}: mean {mean:.3f} max {peak:.1f} (/255)", file=sys.stderr)
    return row


def digits_metric(samples: int, steps: int) -> dict[str, Any]:
    """The digits metric of ``samples`` digits images in float32 and bfloat16 (channels_last)."""
    fp32, bf16 = pipelines("digits")
    out: dict[str, Any] = {"samples": samples, "steps": steps}
    for key, pipe, options in (("fp32", fp32, {}), ("bf16", bf16, {"channels_last": True})):
        start = time.perf_counter()
        x = torch.from_numpy(images(pipe, range(samples), steps, **options)).permute(0, 3, 1, 2)
        out[key] = {"metric": digits_score(2 * x - 1), "seconds": time.perf_counter() - start}
        print(f"  digits metric {key}: {out[key]['metric']:.2f}", file=sys.stderr)
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=64, help="images per pixel comparison")
    p.add_argument("--metric-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50, help="digits models' steps")
    p.add_argument("--cifar-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "bf16_accuracy",
        "device_name": device_name(torch.device("cpu")),
        "cpu_flags_bf16": bf16_flags(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "pndm": pndm.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        "pixel_differences": {},
    }
    for name, steps in (("digits", args.steps), ("digits-cond", args.steps),
                        ("ddpm-cifar10-32", args.cifar_steps)):  # fmt: skip
        report["pixel_differences"][name] = differences(name, args.samples, steps)
    report["digits_metric"] = digits_metric(args.metric_samples, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['device_name']}, {report['torch_threads']} threads, torch "
          f"{report['versions']['torch']}\n")  # fmt: skip
    print("Mean / max pixel difference (0-255) to float32, same seeds:\n")
    print("| model | steps | images | bf16 | bf16, channels_last | fp32, one roundoff per call: "
          "fresh | fixed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    keys = ("bf16", "bf16_channels_last", "fp32_one_roundoff_fresh", "fp32_one_roundoff_fixed")
    for name, row in report["pixel_differences"].items():
        cells = [f"{row[k]['mean_px']:.3f} / {row[k]['max_px']:.1f}" for k in keys]
        print(f"| {name} | {row['steps']} | {row['samples']} | " + " | ".join(cells) + " |")
    m = report["digits_metric"]
    print(f"\ndigits metric, {m['samples']} images, {m['steps']} steps: float32 "
          f"{m['fp32']['metric']:.2f}, bfloat16 {m['bf16']['metric']:.2f}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
