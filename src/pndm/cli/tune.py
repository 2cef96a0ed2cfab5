"""``pndm tune``: tune a time grid (and options, calibration) to a model for one method and NFE
(`pndm.tuning`) and write it as a grid file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pndm.cli.args import (
    HelpFormatter,
    Subparsers,
    add_conditioning,
    add_device,
    add_model,
    add_no_progress,
    add_threads,
    count,
    path,
)


def _count_at_most(limit: int) -> Callable[[str], int]:
    """argparse type of a count in [1, limit]."""

    def parse(text: str) -> int:
        value = count(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be an integer in [1, {limit}], got {text!r}")
        return value

    return parse


def add(subparsers: Subparsers) -> None:
    from pndm.tuning.defaults import (
        CALIBRATE_SAMPLES,
        MAX_ITERATIONS,
        MAX_NFE,
        TEACHER_STEPS,
        TUNE_SAMPLES,
    )

    p = subparsers.add_parser(
        "tune",
        help="tune a time grid to a model for one method and NFE; write it as a grid file",
        description="Choose the times (and, unless --no-search-options, the method's options) "
        "that bring the method's samples at NFE model calls closest to a fine-grid teacher on "
        "--samples tuning noises, and write them to OUT (JSON: the grid, method, NFE, options, "
        "the model's hash). Sample with it: pndm sample --timesteps OUT.",
        formatter_class=HelpFormatter,
    )
    add_model(p)
    p.add_argument("--method", required=True, help="sampling method, e.g. ipndm, f-pndm, ddim")
    p.add_argument("--nfe", type=_count_at_most(MAX_NFE), required=True,
                   help=f"model calls per image, at most {MAX_NFE} (fewer than the teacher's "
                   f"{TEACHER_STEPS})")  # fmt: skip
    p.add_argument("--out", "-o", type=path, required=True, metavar="GRID.json",
                   help="the grid file to write")  # fmt: skip
    p.add_argument("--samples", type=count, default=None,
                   help=f"tuning noises, at most what fits in the device's free memory (all are "
                   f"held at once and evaluated in one batch; a larger count is refused with the "
                   f"count that fits) (default: {TUNE_SAMPLES}, {CALIBRATE_SAMPLES} with "
                   "--calibrate)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the first tuning noise")
    p.add_argument("--no-search-options", dest="search_options", action="store_false",
                   help="tune the times only, keeping the method's default options")  # fmt: skip
    p.add_argument("--iterations", type=_count_at_most(MAX_ITERATIONS), default=None,
                   help=f"objective evaluations per option set, and for --calibrate's search, at "
                   f"most {MAX_ITERATIONS} (default: the tuner's, by the number of "
                   "parameters)")  # fmt: skip
    p.add_argument("--calibrate", action="store_true",
                   help="then also shift each model call's time and scale its ε (2 parameters "
                   "per call; about twice the calls, on 4x the default samples)")  # fmt: skip
    add_conditioning(p, "tuning noise")
    add_device(p)
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.assets import model_folder
    from pndm.compat.folders import model_hash
    from pndm.files.destinations import check_new_file
    from pndm.jobs.ranks import refuse_ranks
    from pndm.runtime.devices import torch_threads
    from pndm.samplers import get_sampler
    from pndm.tuning import check_tune_request
    from pndm.tuning.defaults import default_samples
    from pndm.tuning.grid_file import save_grid
    from pndm.tuning.limits import check_samples_fit

    refuse_ranks("pndm tune", "tune the same grid and race on --out")
    check_new_file(args.out, overwrite=args.overwrite, suffixes=(".json",), what="--out")
    if args.samples is None:
        args.samples = default_samples(args.calibrate)
    method = get_sampler(args.method).name
    check_tune_request(method, args.nfe, samples=args.samples, seed=args.seed,
                       search_options=args.search_options)  # fmt: skip
    folder = model_folder(args.model)
    digest = model_hash(folder)  # also fails early on a broken model folder
    with torch_threads(args.threads):
        pipe = _tune_pipeline(folder, args.device)
        check_samples_fit(args.samples, pipe)  # before the progress bar and any model call
        tuned = _tune(pipe, method, args)
    record = {"samples": args.samples, "seed": args.seed, "iterations": args.iterations}
    record |= {"search_options": args.search_options, "calibrate": args.calibrate}
    record |= {"guidance_scale": args.guidance}  # sample warns when used at another
    if args.class_labels is not None:
        record["class_labels"] = args.class_labels
    if tuned.grid_error is not None:
        record["grid_error"] = tuned.grid_error
    grid = save_grid(args.out, tuned, digest, model_path=folder, overwrite=args.overwrite, **record)
    print(_tune_summary(grid), file=sys.stderr)
    return 0


def _tune_pipeline(folder: Path, device: str) -> Any:
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.runtime.devices import resolve_device

    pipe = PNDMPipeline.from_pretrained(folder).to(resolve_device(device))
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole tuning instead
    return pipe


def _tune(pipe: Any, method: str, args: argparse.Namespace) -> Any:
    """`pndm.tuning.tune_pipeline` under one progress bar counting model calls."""
    from pndm.runtime.progress import progress_bar
    from pndm.tuning import progress_total, tune_pipeline

    settings = {"search_options": args.search_options, "iterations": args.iterations,
                "calibrate": args.calibrate}  # fmt: skip
    total = progress_total(method, args.nfe, **settings)
    settings |= {"samples": args.samples, "class_labels": args.class_labels}
    settings["guidance_scale"] = args.guidance
    bar = progress_bar(total, "call", args.progress)
    with bar:
        return tune_pipeline(
            pipe, method=method, nfe=args.nfe, seed=args.seed, progress=bar.update, **settings
        )


def _tune_summary(grid: Any) -> str:
    run = grid.tuning
    options = ", ".join(f"{k}={v}" for k, v in sorted(grid.options.items())) or "none"
    start = f"starting grid {run['start_error']:.4g}"
    if grid.calibration is not None:
        start += f"; calibrated, from {run['grid_error']:.4g}"
    elif run.get("calibrate"):
        start += "; calibration: none kept"
    return (
        f"wrote {grid.path}: {grid.method}, NFE {grid.nfe}, {grid.steps} steps, options "
        f"{options}; error {run['error']:.4g} ({start}) on "
        f"{run['samples']} samples; {run['model_calls']} model calls, {run['seconds']:.1f} s"
    )
