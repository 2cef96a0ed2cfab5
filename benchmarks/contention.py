"""The CPU fast path under contention: images/s of the default path, ``channels_last=True``,
``channels_last=False`` and diffusers, on 1 thread, 2 threads, and 2 threads beside a busy process.

Same weights for all three (`speed.build`: the google/ddpm-cifar10-32 architecture, random
weights), the same PNDMScheduler config and the same seed. Variants:

    default     pndm.PNDMPipeline, default options (NCHW since this benchmark showed Winograd
                losing under load; see `pndm.runtime.fast.prepare_model`)
    channels_last  pndm.PNDMPipeline(channels_last=True): on one thread Winograd where
                `use_winograd` picks it, else oneDNN's channels-last convolutions
    nchw        pndm.PNDMPipeline(channels_last=False): oneDNN's direct convolutions only
    diffusers   diffusers.PNDMPipeline, float32

In each setting the variants alternate within every repeat (their order rotates) after one
warm-up call each, so each ratio is measured in one run under the same load. The busy process
is one Python loop burning a core for the whole setting. The load average at the end of each
setting is recorded: on a shared machine other tenants add load the script does not control.
The Winograd kernels are transformed once per pipeline call, so very few steps understate the
default path (measured 0.96x at 2 steps, 1.3x at 3-4 on 1 thread).
Statistic: the fastest call (other load only ever adds time) and the median, both as images/s
and as ratios to ``nchw`` and diffusers.

    python benchmarks/contention.py [--batch-size 8] [--steps 4] [--repeats 3]
        [--out benchmarks/results/contention.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.machine import device_name
from speed import build  # this folder: run as a script

import pndm
from pndm.files.jsonfile import write_json

DEFAULT_OUT = Path(__file__).parent / "results" / "contention.json"
SETTINGS = {"1 thread": (1, False), "2 threads": (2, False), "2 threads + busy": (2, True)}
CPU = torch.device("cpu")


@contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """A subprocess that burns one core while the block runs (nothing when ``on`` is False)."""
    if not on:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get scheduled before the first timing
        yield
    finally:
        burner.kill()
        burner.wait()


def variants(batch: int, steps: int) -> dict[str, Callable[[], np.ndarray]]:
    """name -> one pipeline call (noise to NHWC numpy images), all on the same weights."""
    import diffusers

    theirs, ours, config = build(CPU, skip_prk=True)
    d_pipe = diffusers.PNDMPipeline(theirs, diffusers.PNDMScheduler(**config))
    o_pipe = pndm.PNDMPipeline(ours, pndm.PNDMScheduler(**config))
    for pipe in (d_pipe, o_pipe):
        pipe.set_progress_bar_config(disable=True)

    def gen() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(0)

    return {
        "default": lambda: o_pipe(batch, steps, gen(), output_type="np").images,
        "channels_last": lambda: (
            o_pipe(batch, steps, gen(), output_type="np", channels_last=True).images
        ),
        "nchw": lambda: o_pipe(batch, steps, gen(), output_type="np", channels_last=False).images,
        "diffusers": lambda: d_pipe(
            batch, generator=gen(), num_inference_steps=steps, output_type="np"
        )[0],
    }


def alternate(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each run: one warm-up each, then ``repeats`` rotating rounds."""
    for run in runs.values():
        run()
    names, seconds = list(runs), {name: [] for name in runs}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summarise(seconds: dict[str, list[float]], batch: int) -> dict[str, Any]:
    best = {name: batch / min(s) for name, s in seconds.items()}
    median = {name: batch / statistics.median(s) for name, s in seconds.items()}
    result: dict[str, Any] = {"images_per_s": best, "images_per_s_median": median}
    for base in ("nchw", "diffusers"):
        for stat, values in (("", best), ("_median", median)):
            result[f"ratio_over_{base}{stat}"] = {
                name: v / values[base] for name, v in values.items() if name != base
            }
    result["seconds"] = seconds
    return result


def measure(threads: int, busy: bool, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(threads)
    runs = variants(args.batch_size, args.steps)
    with torch.no_grad(), busy_process(busy):
        seconds = alternate(runs, args.repeats)
    return {
        "threads": threads,
        "busy_process": busy,
        "load_average_1min": os.getloadavg()[0],
    } | summarise(seconds, args.batch_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import diffusers

    settings = {}
    for name, (threads, busy) in SETTINGS.items():
        settings[name] = measure(threads, busy, args)
        r = settings[name]["ratio_over_nchw"]
        print(
            f"{name}: default / nchw {r['default']:.3f}, channels_last / nchw "
            f"{r['channels_last']:.3f}",
            file=sys.stderr,
        )
    report = {
        "benchmark": "contention",
        "cpu": device_name(CPU),
        "model": "google/ddpm-cifar10-32 architecture, random weights (seed 0)",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "scheduler": "PNDM, skip_prk_steps=True",
        "repeats": args.repeats,
        "statistic": "fastest call (median also given); variants alternate in each repeat",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pndm": pndm.__version__,
        },
        "settings": settings,
    }
    write_json(args.out, report)
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['cpu']}, torch {report['versions']['torch']}, batch {report['batch_size']}")
    print("| setting | default/nchw | channels_last/nchw | default/diffusers | nchw img/s |")
    print("|---|---|---|---|---|")
    for name, s in report["settings"].items():
        over_nchw = s["ratio_over_nchw"]
        print(
            f"| {name} | {over_nchw['default']:.3f} | {over_nchw['channels_last']:.3f} | "
            f"{s['ratio_over_diffusers']['default']:.3f} | {s['images_per_s']['nchw']:.2f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
