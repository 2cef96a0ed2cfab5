"""The CPU input layouts under contention: images/s of each fixed layout, the measured default and
diffusers, on 1 thread, 2 threads, and 2 threads beside a busy process, at one or more batch sizes.

Same weights for all (`speed.build`: the google/ddpm-cifar10-32 architecture, random weights),
the same PNDMScheduler config (PLMS) and the same seed. Variants:

    nchw             pndm.PNDMPipeline(channels_last=False): oneDNN's direct convolutions
    channels_last    channels_last=True: on one thread Winograd where `use_winograd` picks it,
                     else oneDNN's channels-last convolutions
    winograd         channels_last=True with Winograd on more threads too
                     (`inference.winograd_on_any_threads`; only where threads > 1)
    default          the default options: the layout the probe chose (`pndm.runtime.layout`) on
                     an earlier call, as every batch after a run's first one sees it
    default_probing  the default with the process's choices and its derived weights forgotten
                     before each call, so every call pays the probe (2C - 1 extra model calls)
                     and derives the Winograd kernels: a run of one batch
    diffusers        diffusers.PNDMPipeline, float32

In each setting the variants alternate within every repeat (their order rotates) after one
warm-up call each, so each ratio is measured in one run under the same load. The busy process
is one Python loop burning a core for the whole setting; the load average at the end of each
setting is recorded (other tenants of a shared machine add load the script does not control).
Statistic: the fastest call (other load only ever adds time) and the median, as images/s and
as ratios to ``nchw`` and diffusers. The probing cost, from the medians: the probe's extra
seconds (default_probing - default) and ``batches_within_5pct``, the shortest run (in batches
of this size, one probe) whose images/s are within 5 % of the best fixed layout's (null: the
default's own batches are more than 5 % slower). Each probe's choice and timings are recorded.

    python benchmarks/contention.py [--batch-size 8 64] [--steps 10] [--repeats 3]
        [--settings "2 threads" "2 threads + busy"] [--out benchmarks/results/contention.json]
"""

from __future__ import annotations

import argparse
import math
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
from pndm.models.inference import winograd_on_any_threads
from pndm.runtime.layout import MEASURED
from pndm.samplers import nfe

DEFAULT_OUT = Path(__file__).parent / "results" / "contention.json"
SETTINGS = {"1 thread": (1, False), "2 threads": (2, False), "2 threads + busy": (2, True)}
FIXED = ("nchw", "channels_last", "winograd")
WITHIN = 0.95  # the goal: the default at least 95 % of the best fixed layout's images/s
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


def with_winograd(run: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with winograd_on_any_threads():
            return run()

    return call


def probing(pipe: Any, run: Callable[[], Any], probes: list[dict[str, Any]]) -> Callable[[], Any]:
    """``run`` as the first call of a process: the process's layout choices and ``pipe``'s
    derived weights forgotten for the call (the choices restored after it, so that the other
    variants keep theirs); each probe logged."""

    def call() -> Any:
        kept = dict(MEASURED.chosen), dict(MEASURED.seconds)
        MEASURED.chosen.clear()
        pipe.release_derived_weights()
        try:
            out = run()
            ((key, chosen),) = MEASURED.chosen.items()
            probes.append({"chosen": chosen.name, "seconds": MEASURED.seconds[key]})
        finally:
            MEASURED.chosen.clear()
            MEASURED.chosen.update(kept[0])
            MEASURED.seconds.update(kept[1])
        return out

    return call


def variants(batch: int, steps: int, probes: list) -> dict[str, Callable[[], np.ndarray]]:
    """name -> one pipeline call (noise to NHWC numpy images), all on the same weights, each
    variant with a pipeline of its own (so each keeps its own derived weights between calls, as
    a process sampling in one layout does)."""
    import diffusers

    theirs, ours, config = build(CPU, skip_prk=True)
    d_pipe = diffusers.PNDMPipeline(theirs, diffusers.PNDMScheduler(**config))
    d_pipe.set_progress_bar_config(disable=True)

    def gen() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(0)

    def ours_with(**options: Any) -> tuple[Any, Callable[[], np.ndarray]]:
        pipe = pndm.PNDMPipeline(ours, pndm.PNDMScheduler(**config))
        pipe.set_progress_bar_config(disable=True)
        return pipe, lambda: pipe(batch, steps, gen(), output_type="np", **options).images

    runs = {"nchw": ours_with(channels_last=False)[1],
            "channels_last": ours_with(channels_last=True)[1]}  # fmt: skip
    if torch.get_num_threads() > 1:
        runs["winograd"] = with_winograd(ours_with(channels_last=True)[1])
    runs["default"] = ours_with()[1]
    runs["default_probing"] = probing(*ours_with(), probes)
    runs["diffusers"] = lambda: d_pipe(
        batch, generator=gen(), num_inference_steps=steps, output_type="np"
    )[0]
    return runs


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
    return result | {"seconds": seconds}


def probing_cost(seconds: dict[str, list[float]], calls: int) -> dict[str, Any]:
    """The default against the best fixed layout (medians), with and without the probe."""
    med = {name: statistics.median(s) for name, s in seconds.items()}
    fixed = {name: med[name] for name in FIXED if name in med}
    best = min(fixed, key=fixed.__getitem__)
    extra = max(0.0, med["default_probing"] - med["default"])
    slowest = fixed[best] / WITHIN  # the most seconds per batch within 5 % of the best
    steady = med["default"]
    return {
        "best_fixed": best,
        "default_over_best_fixed": fixed[best] / steady,
        "default_probing_over_best_fixed": fixed[best] / med["default_probing"],
        "probe_extra_seconds": extra,
        "probe_extra_model_calls": extra / (steady / calls),
        "batches_within_5pct": math.ceil(extra / (slowest - steady)) if steady < slowest else None,
    }


def measure(setting: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    threads, busy = SETTINGS[setting]
    torch.set_num_threads(threads)
    probes: list[dict[str, Any]] = []
    runs = variants(batch, args.steps, probes)
    calls = nfe("plms", args.steps)
    with torch.no_grad(), busy_process(busy):
        seconds = alternate(runs, args.repeats)
    return {
        "setting": setting,
        "threads": threads,
        "busy_process": busy,
        "batch_size": batch,
        "model_calls": calls,
        "load_average_1min": os.getloadavg()[0],
        "probing": probing_cost(seconds, calls),
        "probes": probes,
    } | summarise(seconds, batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, nargs="+", default=[8, 64])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import diffusers

    runs = []
    for setting in args.settings:
        for batch in args.batch_size:
            runs.append(measure(setting, batch, args))
            print_row(runs[-1], file=sys.stderr)
    report = {
        "benchmark": "contention",
        "cpu": device_name(CPU),
        "model": "google/ddpm-cifar10-32 architecture, random weights (seed 0)",
        "steps": args.steps,
        "scheduler": "PNDM, skip_prk_steps=True (PLMS)",
        "repeats": args.repeats,
        "statistic": "fastest call (median also given); variants alternate in each repeat; "
        "probing cost from medians",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pndm": pndm.__version__,
        },
        "runs": runs,
    }
    write_json(args.out, report)
    print_table(report)
    return 0


COLUMNS = ("nchw", "channels_last", "winograd", "default", "default_probing", "diffusers")


def print_row(run: dict[str, Any], file: Any = sys.stdout) -> None:
    ips, cost = run["images_per_s"], run["probing"]
    cells = [f"{ips[name]:.2f}" if name in ips else "-" for name in COLUMNS]
    chosen = ", ".join(sorted({probe["chosen"] for probe in run["probes"]}))
    print(
        f"| {run['setting']} | {run['batch_size']} | {' | '.join(cells)} | "
        f"{cost['default_over_best_fixed']:.3f} | {cost['default_probing_over_best_fixed']:.3f} "
        f"| {cost['probe_extra_model_calls']:.1f} | {cost['batches_within_5pct']} | {chosen} |",
        file=file,
    )


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['cpu']}, torch {report['versions']['torch']}, {report['steps']} PLMS steps")
    print(
        "| setting | batch | nchw | channels_last | winograd | default | default probing | "
        "diffusers | default / best fixed | probing / best fixed | probe extra calls | "
        "batches within 5 % | probe chose |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in report["runs"]:
        print_row(run)


if __name__ == "__main__":
    raise SystemExit(main())
