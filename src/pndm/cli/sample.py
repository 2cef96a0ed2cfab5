"""``pndm sample``: sample images (`pndm.jobs.run`) into a contact sheet, PNGs or an .npz,
on --steps or a grid file from ``pndm tune``."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pndm.checks import MAX_STEPS, one_line
from pndm.cli.args import (
    HelpFormatter,
    Subparsers,
    UsageError,
    add_conditioning,
    add_device,
    add_model,
    add_no_progress,
    add_threads,
    count,
    nonempty,
    path,
)


def _add_sample_grid_args(p: argparse.ArgumentParser) -> None:
    """--method, and the time grid: --steps or a --timesteps file from ``pndm tune``."""
    from pndm.jobs.job import DEFAULT_STEPS

    p.add_argument(
        "--method",
        default=None,
        help="sampling method, e.g. f-pndm, s-pndm, plms, ipndm, ddim (default: the scheduler "
        "config's: f-pndm, or plms with skip_prk_steps)",
    )
    grid = p.add_argument_group("time grid (one of)")
    grid.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"number of steps, at most {MAX_STEPS} and the model's num_train_timesteps "
        f"(default: {DEFAULT_STEPS})",
    )
    grid.add_argument(
        "--timesteps",
        type=path,
        default=None,
        metavar="GRID.json",
        help="a grid file from 'pndm tune': its grid (at most as many steps as --steps), and "
        "its method and options unless --method is given",
    )


def add(subparsers: Subparsers) -> None:
    from pndm.jobs.job import DEFAULT_BATCH_SIZE
    from pndm.jobs.seeds import MAX_IMAGES
    from pndm.runtime.devices import DTYPES

    p = subparsers.add_parser(
        "sample",
        help="sample images with PNDM (or another method) into a contact sheet, PNGs or an .npz",
        description="Sample images from a diffusers pipeline folder. OUT ending in .png: one "
        "contact sheet; .npz: uint8 NHWC array 'arr_0' plus 'seeds'; a folder (no suffix, or "
        "ending in /): one seedNNNNNN.png per image, skipping those already there (resume). Each "
        "image depends on its seed only, whatever the batch size.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", "-o", type=nonempty, required=True,
                   help="output: FILE.png, FILE.npz or FOLDER/")  # fmt: skip
    add_model(p)
    _add_sample_grid_args(p)
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        default=None,
        help=f"seeds, e.g. 0-63, 1,5,9 or 0-3,10; at most {MAX_IMAGES} per run and per folder",
    )
    seeds.add_argument(
        "--num-images", type=count, default=None, metavar="N", help="seeds 0..N-1 (default 16)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per batch (default: what fits in half the free memory, at most 32 on CPU)",
    )
    add_conditioning(p, "image")
    add_device(p)
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="UNet weights and activations dtype (the solver stays float32)",
    )
    fast = p.add_argument_group("fast path")
    fast.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last inputs (on one CPU thread the 3x3 convolutions then run as Winograd), "
        "or NCHW (the default: a folder's bytes must not depend on a timing, as the Python "
        "pipeline's measured default may)",
    )
    fast.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (slow first batch)"
    )
    fast.add_argument(
        "--cuda-graphs", action="store_true", help="replay each model call from a CUDA graph"
    )
    add_threads(
        p,
        "CPU threads per process (default: torch's; under torchrun, cores / local ranks). "
        "On the CPU a convolution's rounding depends on it: pin it and the layout to reproduce "
        "images exactly",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.jobs.job import SampleJob
    from pndm.jobs.ranks import Ranks
    from pndm.jobs.run import run_job
    from pndm.jobs.seeds import default_seeds, parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds is not None else default_seeds(args.num_images)
    steps, timesteps, method, options, calibration = _sample_grid(args, Ranks.from_env().lead)
    job = SampleJob(
        out=args.out,  # a str: a trailing "/" marks a folder output
        seeds=seeds,
        model=args.model,
        method=method,
        steps=steps,
        timesteps=timesteps,
        method_options=options,
        calibration=calibration,
        class_labels=args.class_labels,
        guidance_scale=args.guidance,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        overwrite=args.overwrite,
        progress=args.progress,
        threads=args.threads,
    )
    from pndm.jobs.manifest import VersionsWarning
    from pndm.runtime.precision import SlowDtypeWarning

    lead = Ranks.from_env().lead
    with warning_lines((VersionsWarning, SlowDtypeWarning), lead):
        summary = run_job(job)
    if lead:
        print(summary.line(), file=sys.stderr)
    return 0


@contextlib.contextmanager
def warning_lines(categories: tuple[type[Warning], ...], lead: bool) -> Iterator[None]:
    """Each warning of ``categories`` as one stderr line, ``warning: ...`` (rank 0's only), as
    it is raised; other warnings as Python shows them."""
    show = warnings.showwarning

    def line(message: Warning | str, kind: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(kind, categories):
            show(message, kind, *args, **kwargs)
        elif lead:
            print(f"warning: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("always", category)
        warnings.showwarning = line
        yield


class GridChoice(NamedTuple):
    steps: int
    timesteps: list[float] | None
    method: str | None
    options: dict[str, Any]
    calibration: Any  # pndm.calibration.Calibration | None


def _sample_grid(args: argparse.Namespace, lead: bool) -> GridChoice:
    """(steps, timesteps, method, method options, calibration) from --steps, or from the
    --timesteps file: its method, options and calibration unless --method names another (then
    neither options nor calibration); warns on stderr (rank 0 only) where the file was tuned
    for another model or method."""
    from pndm.jobs.job import DEFAULT_STEPS

    if args.timesteps is None:
        steps = DEFAULT_STEPS if args.steps is None else args.steps
        return GridChoice(steps, None, args.method, {}, None)
    if args.steps is not None:
        raise UsageError("give --steps or --timesteps, not both: a grid file fixes the steps")
    from pndm.tuning.grid_file import load_grid

    grid = load_grid(args.timesteps, _model_schedule(args.model))  # before the model is loaded
    method = args.method or grid.method
    same = method == grid.method
    options = dict(grid.options) if same else {}
    calibration = grid.calibration if same else None
    if lead:
        from pndm.assets import model_folder

        _warn_grid(grid, model_folder(args.model), method, args.guidance)
    return GridChoice(grid.steps, list(grid.timesteps), method, options, calibration)


def _model_schedule(model: Path | None) -> Any:
    """The noise schedule of the model folder's scheduler config (its weights are not read)."""
    from pndm.assets import model_folder
    from pndm.compat import folders
    from pndm.files.jsonfile import read_json

    files = folders.model_files(model_folder(model))
    return folders.scheduler_from_config(read_json(files.scheduler_config)).schedule


def _warn_grid(grid: Any, model: Path, method: str, guidance: float) -> None:
    """`pndm.tuning.grid_file.check_grid`'s warnings as one stderr line each, ``warning: ...``."""
    from pndm.compat.folders import model_hash
    from pndm.tuning.grid_file import check_grid

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_grid(grid, model_hash=model_hash(model), method=method, guidance_scale=guidance)
    for warning in caught:
        print(f"warning: {one_line(warning.message)}", file=sys.stderr)
