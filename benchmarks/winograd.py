"""Winograd F(4x4, 3x3) against oneDNN's direct 3x3 convolution, per layer shape, CPU float32.

For each (batch, C_in, C_out, size): channels-last input, the same random weights (He scale) and
bias; oneDNN's ``F.conv2d`` and ``pndm.models.inference.winograd_conv3x3`` alternate over
``--repeats`` calls after a warm-up, inside `weight_cache` as in a sampling run (fastest call of
each; other load only ever adds time). Also the max |error| of each against the float64
convolution, and whether `use_winograd` picks it.
The default shapes are the 3x3 stride-1 convolutions of the ddpm-cifar10-32 UNet at batch 8, a
few larger batches (the chunking), and shapes below the thresholds.

    python benchmarks/winograd.py [--threads N] [--repeats 12]
        [--out benchmarks/results/winograd_cpu.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchlib.machine import device_name

import pndm
from pndm.files.jsonfile import write_json
from pndm.models import inference

DEFAULT_OUT = Path(__file__).parent / "results" / "winograd_cpu.json"
CIFAR10_B8 = [
    (8, 128, 128, 32),
    (8, 256, 128, 32),
    (8, 384, 128, 32),
    (8, 128, 256, 16),
    (8, 256, 256, 16),
    (8, 512, 256, 16),
    (8, 256, 256, 8),
    (8, 512, 256, 8),
    (8, 256, 256, 4),
    (8, 512, 256, 4),
]
OTHERS = [
    (1, 128, 128, 32),
    (32, 128, 128, 32),
    (64, 256, 256, 8),
    (8, 96, 96, 32),
    (8, 64, 64, 16),
]


def fastest(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: 1e3 * min(s) for name, s in seconds.items()}


def measure(shape: tuple[int, int, int, int], repeats: int) -> dict[str, Any]:
    b, c, k, size = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(c, k, 3, padding=1).requires_grad_(False)
    conv.weight.copy_(torch.randn(k, c, 3, 3, generator=gen) * (2 / (9 * c)) ** 0.5)
    conv.weight.data = conv.weight.contiguous(memory_format=torch.channels_last)
    kernels = inference.winograd_kernels(conv.weight)
    runs = {
        "direct": lambda: F.conv2d(x, conv.weight, conv.bias, padding=1),
        "winograd": lambda: inference.winograd_conv3x3(x, kernels, conv.bias),
    }
    with inference.weight_cache():  # as in a sampling run: scratch buffers are reused
        ms = fastest(runs, repeats)
        chosen = inference.use_winograd(conv, x)
        errors = {name: run().double() for name, run in runs.items()}
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    return {
        "batch": b,
        "c_in": c,
        "c_out": k,
        "size": size,
        "ms_direct": ms["direct"],
        "ms_winograd": ms["winograd"],
        "speedup": ms["direct"] / ms["winograd"],
        "max_error_direct": float((errors["direct"] - want).abs().max()),
        "max_error_winograd": float((errors["winograd"] - want).abs().max()),
        "chosen_by_use_winograd": chosen,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(
        "| batch | C_in | C_out | size | direct ms | Winograd ms | speedup | max err direct | "
        "max err Winograd | chosen |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for shape in CIFAR10_B8 + OTHERS:
            r = measure(shape, args.repeats)
            rows.append(r)
            print(
                f"| {r['batch']} | {r['c_in']} | {r['c_out']} | {r['size']} | "
                f"{r['ms_direct']:.2f} | {r['ms_winograd']:.2f} | {r['speedup']:.2f} | "
                f"{r['max_error_direct']:.1e} | {r['max_error_winograd']:.1e} | "
                f"{r['chosen_by_use_winograd']} |"
            )
    report = {
        "benchmark": "winograd",
        "device_name": device_name(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "dtype": "float32, channels-last",
        "statistic": f"fastest of {args.repeats} alternating calls",
        "versions": {"torch": torch.__version__, "pndm": pndm.__version__},
        "rows": rows,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
