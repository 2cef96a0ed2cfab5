"""The ``pndm`` command line: ``train``, ``sample``, ``tune``, ``pack``, ``fid``, ``convert``,
``info``.

Each subcommand is one ``_add_<name>(subparsers)`` that registers its parser (and sets
``func=_cmd_<name>``) plus one ``_cmd_<name>(args) -> int`` that runs it; ``SUBCOMMANDS`` lists
the registration functions in help order. User errors print one line, ``pndm: error: ...``, on
stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

PROG = "pndm"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class UsageError(Exception):
    """A mistake in what the user asked for; reported as one line, exit status 2."""


USER_ERRORS = (UsageError, ValueError, FileNotFoundError, FileExistsError, ImportError)
# Library errors name the argument; the user typed the flag that sets it.
FLAGS = {"num_inference_steps": "--steps", "batch_size": "--batch-size"}
_ARGUMENT_NAMES = re.compile(r"\b(" + "|".join(FLAGS) + r")\b")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


Subparsers = Any  # argparse._SubParsersAction has no public type


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only where a default says something (not for flags or None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- train


def _train_defaults() -> dict[str, Any]:
    from pndm.train.config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.name != "extra"}


def _add_train(subparsers: Subparsers) -> None:
    d = _train_defaults()
    p = subparsers.add_parser(
        "train",
        help="train a small DDPM UNet on images or the digits dataset",
        description="Train a UNet2DModel (epsilon prediction, EMA weights) and write a diffusers "
        "PNDMPipeline folder (model_index.json, unet/, scheduler/).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--output",
        "-o",
        dest="output_dir",
        type=Path,
        required=True,
        help="pipeline folder to write (must not exist or be empty)",
    )
    p.add_argument(
        "--data",
        default=d["data"],
        help="'digits' (scikit-learn's 8x8 digits, needs pndm[train]) or a folder of "
        "PNG/JPEG images",
    )
    _add_train_model_args(p, d)
    _add_train_optim_args(p, d)
    _add_train_run_args(p, d)
    p.set_defaults(func=_cmd_train)


def _add_train_model_args(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--resolution", type=int, default=d["resolution"], help="image side in pixels")
    g.add_argument(
        "--channels", type=int, choices=(1, 3), default=d["channels"], help="1: grey, 3: RGB"
    )
    g.add_argument(
        "--upscale",
        choices=("bilinear", "bicubic"),
        default=d["upscale"],
        help="interpolation for digits 8x8 -> resolution",
    )
    g.add_argument(
        "--block-out-channels",
        type=int,
        nargs="+",
        default=d["block_out_channels"],
        metavar="C",
        help="UNet channels per resolution level",
    )
    g.add_argument(
        "--layers-per-block", type=int, default=d["layers_per_block"], help="resnets per level"
    )
    g.add_argument(
        "--no-attention",
        dest="attention",
        action="store_false",
        help="no attention blocks (default: attention at the lowest resolution)",
    )
    g.add_argument(
        "--norm-num-groups", type=int, default=d["norm_num_groups"], help="GroupNorm groups"
    )
    g.add_argument("--num-train-timesteps", type=int, default=d["num_train_timesteps"], help="T")
    g.add_argument("--beta-start", type=float, default=d["beta_start"], help="first beta")
    g.add_argument("--beta-end", type=float, default=d["beta_end"], help="last beta")
    g.add_argument(
        "--beta-schedule",
        default=d["beta_schedule"],
        help="linear, scaled_linear or squaredcos_cap_v2",
    )


def _add_train_optim_args(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--steps",
        dest="train_steps",
        type=int,
        default=d["train_steps"],
        help="total optimiser steps (TrainConfig.train_steps)",
    )
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per step")
    g.add_argument(
        "--lr",
        dest="learning_rate",
        type=float,
        default=d["learning_rate"],
        help="AdamW learning rate",
    )
    g.add_argument(
        "--warmup-steps", type=int, default=d["warmup_steps"], help="linear learning-rate warm-up"
    )
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="AdamW decay")
    g.add_argument(
        "--max-grad-norm", type=float, default=d["max_grad_norm"], help="gradient clipping"
    )
    g.add_argument(
        "--ema-decay", type=float, default=d["ema_decay"], help="EMA of the saved weights"
    )
    g.add_argument("--seed", type=int, default=d["seed"], help="decides init, batches, noise")


def _add_train_run_args(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=d["checkpoint_every"],
        metavar="N",
        help="write OUTPUT/checkpoint.pt every N steps (0: never)",
    )
    g.add_argument(
        "--no-keep-checkpoint",
        dest="keep_checkpoint",
        action="store_false",
        help="delete checkpoint.pt once the pipeline is written",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/checkpoint.pt (same settings; --steps may grow)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pipeline and checkpoint in an existing OUTPUT",
    )
    g.add_argument("--device", default=d["device"], help="auto, cpu, cuda or cuda:N")
    g.add_argument(
        "--dtype",
        default=d["dtype"],
        help="forward-pass dtype: float32, or bfloat16 (autocast; weights stay float32)",
    )
    g.add_argument("--threads", type=_count, default=None, help="torch CPU threads")
    g.add_argument(
        "--log-every",
        type=int,
        default=d["log_every"],
        metavar="N",
        help="print the mean loss every N steps (0: never)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _cmd_train(args: argparse.Namespace) -> int:
    from pndm.train import TrainConfig, train

    if args.threads is not None:
        _set_threads(args.threads)
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    start = time.perf_counter()
    out = train(config)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- sample


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
        "--steps", type=int, default=None, help=f"number of steps (default: {DEFAULT_STEPS})"
    )
    grid.add_argument(
        "--timesteps",
        type=Path,
        default=None,
        metavar="GRID.json",
        help="a grid file from 'pndm tune': its grid, and its method and options unless "
        "--method is given",
    )


def _add_sample(subparsers: Subparsers) -> None:
    from pndm.jobs.job import DEFAULT_BATCH_SIZE
    from pndm.runtime.devices import DTYPES

    p = subparsers.add_parser(
        "sample",
        help="sample images with PNDM (or another method) into a contact sheet, PNGs or an .npz",
        description="Sample images from a diffusers pipeline folder. OUT ending in .png: one "
        "contact sheet; .npz: uint8 NHWC array 'arr_0' plus 'seeds'; a folder (no suffix, or "
        "ending in /): one seedNNNNNN.png per image, skipping those already there (resume). Each "
        "image depends on its seed only, whatever the batch size.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--out", "-o", required=True, help="output: FILE.png, FILE.npz or FOLDER/")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="pipeline folder (default: the shipped digits model)",
    )
    _add_sample_grid_args(p)
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", default=None, help="seeds, e.g. 0-63, 1,5,9 or 0-3,10")
    seeds.add_argument(
        "--num-images", type=_count, default=None, metavar="N", help="seeds 0..N-1 (default 16)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per batch (default: what fits in half the free memory, at most 32 on CPU)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="UNet weights and activations dtype (the solver stays float32)",
    )
    fast = p.add_argument_group("fast path (off by default)")
    fast.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="channels-last UNet and inputs (default: channels-last inputs on the CPU only)",
    )
    fast.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (slow first batch)"
    )
    fast.add_argument(
        "--cuda-graphs", action="store_true", help="replay each model call from a CUDA graph"
    )
    p.add_argument(
        "--threads",
        type=_count,
        default=None,
        help="CPU threads per process (default: torch's; under torchrun, cores / local ranks). "
        "On the CPU a convolution's rounding depends on it: pin it to reproduce images exactly",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> int:
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
    summary = run_job(job)
    if Ranks.from_env().lead:
        print(summary.line(), file=sys.stderr)
    return 0


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

    grid = load_grid(args.timesteps)
    method = args.method or grid.method
    same = method == grid.method
    options = dict(grid.options) if same else {}
    calibration = grid.calibration if same else None
    if lead:
        from pndm.assets import model_folder

        _warn_grid(grid, model_folder(args.model), method)
    return GridChoice(grid.steps, list(grid.timesteps), method, options, calibration)


def _warn_grid(grid: Any, model: Path, method: str) -> None:
    """`pndm.tuning.grid_file.check_grid`'s warnings as one stderr line each, ``warning: ...``."""
    from pndm.tuning.grid_file import check_grid, weights_hash

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_grid(grid, model_hash=weights_hash(model), method=method)
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)


# ----------------------------------------------------------------------------- tune

TUNE_SAMPLES = 64  # pndm.tuning.tune_pipeline's default (not imported: --help loads no torch)
CALIBRATE_SAMPLES = 256  # ... with --calibrate (the same: tests/test_calibration.py)


def _add_tune(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "tune",
        help="tune a time grid to a model for one method and NFE; write it as a grid file",
        description="Choose the times (and, unless --no-search-options, the method's options) "
        "that bring the method's samples at NFE model calls closest to a fine-grid teacher on "
        "--samples tuning noises, and write them to OUT (JSON: the grid, method, NFE, options, "
        "the model's hash). Sample with it: pndm sample --timesteps OUT.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--model", type=Path, default=None,
                   help="pipeline folder (default: the shipped digits model)")  # fmt: skip
    p.add_argument("--method", required=True, help="sampling method, e.g. ipndm, f-pndm, ddim")
    p.add_argument("--nfe", type=_count, required=True, help="model calls per image")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="GRID.json",
                   help="the grid file to write")  # fmt: skip
    p.add_argument("--samples", type=_count, default=None,
                   help=f"tuning noises (default: {TUNE_SAMPLES}, {CALIBRATE_SAMPLES} with "
                   "--calibrate)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the first tuning noise")
    p.add_argument("--no-search-options", dest="search_options", action="store_false",
                   help="tune the times only, keeping the method's default options")  # fmt: skip
    p.add_argument("--iterations", type=_count, default=None,
                   help="objective evaluations per option set, and for --calibrate's search "
                   "(default: the tuner's, by the number of parameters)")  # fmt: skip
    p.add_argument("--calibrate", action="store_true",
                   help="then also shift each model call's time and scale its ε (2 parameters "
                   "per call; about twice the calls, on 4x the default samples)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_count, default=None, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from pndm.assets import model_folder
    from pndm.runtime.devices import torch_threads
    from pndm.samplers import get_sampler
    from pndm.tuning.grid_file import check_new_grid_path, save_grid, weights_hash

    check_new_grid_path(args.out, args.overwrite)  # before any model call
    if args.samples is None:
        args.samples = CALIBRATE_SAMPLES if args.calibrate else TUNE_SAMPLES
    method = get_sampler(args.method).name
    _check_tune_request(method, args)
    folder = model_folder(args.model)
    digest = weights_hash(folder)  # also fails early on a broken model folder
    with torch_threads(args.threads):
        tuned = _tune(_tune_pipeline(folder, args.device), method, args)
    record = {"samples": args.samples, "seed": args.seed, "iterations": args.iterations}
    record |= {"search_options": args.search_options, "calibrate": args.calibrate}
    if tuned.grid_error is not None:
        record["grid_error"] = tuned.grid_error
    grid = save_grid(args.out, tuned, digest, model_path=folder, overwrite=args.overwrite, **record)
    print(_tune_summary(grid), file=sys.stderr)
    return 0


def _check_tune_request(method: str, args: argparse.Namespace) -> None:
    """What the tuner would refuse only after its teacher run: the seed, and an NFE that no
    option set of the method reaches (the error lists the reachable ones)."""
    from pndm.tuning.search import option_combinations, steps_for_nfe, tuning_seeds

    tuning_seeds(args.samples, args.seed)
    combos = option_combinations(method, {}) if args.search_options else [{}]
    for options in combos:
        with contextlib.suppress(ValueError):
            steps_for_nfe(method, args.nfe, options)
            return
    steps_for_nfe(method, args.nfe, combos[0])  # raises, listing the reachable NFEs


def _tune_pipeline(folder: Path, device: str) -> Any:
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.runtime.devices import resolve_device

    pipe = PNDMPipeline.from_pretrained(folder).to(resolve_device(device))
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole tuning instead
    return pipe


def _tune(pipe: Any, method: str, args: argparse.Namespace) -> Any:
    """`pndm.tuning.tune_pipeline` under one progress bar counting model calls."""
    from tqdm import tqdm

    from pndm.tuning import progress_total, tune_pipeline

    settings = {"search_options": args.search_options, "iterations": args.iterations,
                "calibrate": args.calibrate}  # fmt: skip
    total = progress_total(method, args.nfe, **settings)
    settings["samples"] = args.samples
    bar = tqdm(total=total, unit="call", file=sys.stderr, disable=not args.progress, leave=False)
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


# ----------------------------------------------------------------------------- pack


def _add_pack(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "pack",
        help="pack a sample folder into the uint8 NHWC .npz that FID tools read",
        description="Assemble the PNGs of a folder written by 'pndm sample' into OUT.npz "
        "('arr_0': uint8 NHWC in the order of the folder's pndm.json, 'seeds': uint64), "
        "streaming one image at a time. Refuses, naming them, when seeds are missing.",
    )
    p.add_argument("folder", type=Path, help="a folder written by pndm sample")
    p.add_argument("out", type=Path, help="the .npz to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_cmd_pack)


def _cmd_pack(args: argparse.Namespace) -> int:
    from pndm.jobs.pack import pack

    count = pack(args.folder, args.out, overwrite=args.overwrite)
    print(f"wrote {count} images to {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- fid


def _add_fid(subparsers: Subparsers) -> None:
    from pndm.metrics.names import DEFAULT_BATCH_SIZE, FEATURES, SHIPPED

    p = subparsers.add_parser(
        "fid",
        help="Fréchet distance of a sample set to a reference (Inception FID or digits)",
        description="Print the Fréchet distance between SAMPLES and REF alone on the last line "
        "of stdout. Inception features come from pytorch-fid (pip install 'pndm[fid]'); the "
        "'digits' features ship with pndm and work offline. With --save-stats, write the "
        "statistics of SAMPLES instead.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("samples", type=Path, help="a folder of images or an .npz (arr_0: uint8 NHWC)")
    p.add_argument(
        "ref", nargs="?", help="a statistics .npz (mu, sigma), another sample set, or a shipped "
        f"name: {', '.join(SHIPPED)}",
    )  # fmt: skip
    p.add_argument("--save-stats", type=Path, metavar="OUT.npz", help="write SAMPLES' statistics")
    p.add_argument(
        "--features", choices=FEATURES, help="feature network (default: the reference's own, "
        "else inception)",
    )  # fmt: skip
    p.add_argument("--inception-weights", type=Path, metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the torch "
                   "hub cache)")  # fmt: skip
    p.add_argument("--batch-size", type=_count, default=DEFAULT_BATCH_SIZE, help="images per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_fid)


def _cmd_fid(args: argparse.Namespace) -> int:
    from pndm.metrics import core as metric
    from pndm.metrics.frechet import save_statistics

    if (args.ref is None) == (args.save_stats is None):
        raise UsageError("give exactly one of REF (to compare with) and --save-stats OUT.npz")
    common = {
        "inception_weights": args.inception_weights,
        "batch_size": args.batch_size,
        "device": args.device,
        "progress": True,
    }
    if args.save_stats is not None:
        _check_new_npz(args.save_stats)
        features = args.features or metric.FEATURES[0]
        stats = metric.sample_statistics(args.samples, features=features, **common)
        save_statistics(args.save_stats, stats)
        print(f"wrote {args.save_stats}: {metric.describe(stats)}")
        return 0
    print(metric.fid(args.samples, args.ref, features=args.features, **common))
    return 0


def _check_new_npz(path: Path) -> None:
    """--save-stats: an .npz path whose folder is writable, never an existing file."""
    from pndm.files import check_writable

    if path.suffix.lower() != ".npz":
        raise UsageError(f"--save-stats writes an .npz; got {path}")
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it or choose another --save-stats name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder not found for --save-stats: {path.parent}")
    check_writable(path.parent)


# ----------------------------------------------------------------------------- convert


def _add_convert(subparsers: Subparsers) -> None:
    from pndm.models.convert import PRESETS

    p = subparsers.add_parser(
        "convert",
        help="convert an original DDPM/DDIM/PNDM checkpoint to a diffusers pipeline folder",
        description="Convert a checkpoint of the original code (ermongroup/ddim Model, as used by "
        "luping-liu/PNDM: .pth/.ckpt, EMA weights preferred) into a PNDMPipeline folder "
        "(model_index.json, unet/, scheduler/). The scheduler config records the original "
        "sampling convention (alpha_index_offset: 1, model time t paired with alpha_bar[t+1]).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("src", type=Path, help="checkpoint file (.pth, .ckpt)")
    p.add_argument("dst", type=Path, help="pipeline folder to write (must not exist or be empty)")
    p.add_argument(
        "--config",
        choices=sorted(PRESETS),
        default=None,
        help="the original model config (default: inferred from the weights' shapes)",
    )
    p.add_argument(
        "--sample-size",
        type=int,
        default=None,
        help="image size to record (default: the config's, or 16 x 2^(first attention level))",
    )
    p.add_argument(
        "--no-ema", dest="ema", action="store_false", help="take the raw, not the EMA, weights"
    )
    p.add_argument("--overwrite", action="store_true", help="replace the pipeline in DST")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from pndm.models.convert import convert_checkpoint, unet_config

    cfg = convert_checkpoint(
        args.src,
        args.dst,
        args.config,
        sample_size=args.sample_size,
        ema=args.ema,
        overwrite=args.overwrite,
    )
    unet = unet_config(cfg)
    print(
        f"wrote {args.dst}: UNet2DModel {unet['block_out_channels']} x "
        f"{unet['layers_per_block']}, {cfg.resolution}x{cfg.resolution}, "
        "scheduler alpha_index_offset 1 (original code's convention)",
        file=sys.stderr,
    )
    return 0


# ----------------------------------------------------------------------------- info


def _add_info(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a pipeline folder's model and scheduler and check that it loads",
        description="Print the UNet and scheduler configs, parameter count and dtype of a "
        "diffusers pipeline folder (or flat model folder), then run one forward pass.",
    )
    p.add_argument(
        "folder",
        type=Path,
        nargs="?",
        default=None,
        help="pipeline folder (default: the shipped digits model)",
    )
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from pndm.assets import shipped_model_path
    from pndm.compat.scheduler import PNDMScheduler
    from pndm.models.unet_2d import UNet2DModel

    folder = args.folder if args.folder is not None else shipped_model_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    index = folder / "model_index.json"
    if index.is_file():
        print(f"model_index.json: {json.dumps(json.loads(index.read_text()), sort_keys=True)}")
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = PNDMScheduler.from_pretrained(folder, subfolder="scheduler")
    _print_config("unet", unet.config)
    _print_config("scheduler", scheduler.config)
    _print_unet_summary(unet)
    print(f"verdict: {folder} loads ({_forward_check(unet)})")
    return 0


def _print_config(name: str, config: Any) -> None:
    print(f"{name} config:")
    for key, value in sorted(dict(config).items()):
        print(f"  {key}: {json.dumps(value, default=str)}")


def _print_unet_summary(unet: Any) -> None:
    params = list(unet.parameters())
    count = sum(p.numel() for p in params)
    size = sum(p.numel() * p.element_size() for p in params)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    print(f"parameters: {count:,} ({size / 1e6:.2f} MB)")
    print(f"dtype: {', '.join(dtypes)}")


def _forward_check(unet: Any) -> str:
    """One batch-1 forward pass at t = 0; checks the output shape and finiteness."""
    import torch

    cfg = unet.config
    size = cfg["sample_size"]
    height, width = (size, size) if isinstance(size, int) else size
    param = next(unet.parameters())
    x = torch.zeros(1, cfg["in_channels"], height, width, dtype=param.dtype, device=param.device)
    start = time.perf_counter()
    with torch.no_grad():
        out = unet(x, torch.zeros(1, dtype=torch.long, device=param.device)).sample
    ms = (time.perf_counter() - start) * 1e3
    if tuple(out.shape) != (1, cfg["out_channels"], height, width) or not out.isfinite().all():
        raise ValueError(
            f"the UNet's forward pass gave shape {tuple(out.shape)} or non-finite values"
        )
    shapes = f"{tuple(x.shape)} -> {tuple(out.shape)}"
    return f"UNet2DModel + PNDMScheduler, forward {shapes} in {ms:.0f} ms"


# ----------------------------------------------------------------------------- main

# Registration functions, in help order; add a subcommand by writing _add_x/_cmd_x and listing it.
SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    _add_train,
    _add_sample,
    _add_tune,
    _add_pack,
    _add_fid,
    _add_convert,
    _add_info,
]


def build_parser() -> argparse.ArgumentParser:
    from pndm import __version__

    parser = _Parser(
        prog=PROG,
        description="Pseudo numerical methods for diffusion models (PNDM, ICLR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pndm`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    return _main(argv, process=False)


def _main(argv: Sequence[str] | None, process: bool) -> int:
    """`main`; ``process``: this process is the CLI's own (`run`), so it may end it outright."""
    try:
        with _signals_interrupt(process):
            args = build_parser().parse_args(argv)
            return int(args.func(args) or 0)
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except USER_ERRORS as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM (schedulers, ``docker stop``, torchrun stopping its other ranks), raised where
    the program is, like Ctrl-C, so every cleanup runs and no temporary file is left."""


# signal -> (the exception raised where the program is, the exit status, the word printed)
_STOPS: dict[int, tuple[type[BaseException], int, str]] = {
    signal.SIGTERM: (Terminated, EXIT_TERMINATED, "terminated"),
    signal.SIGINT: (KeyboardInterrupt, EXIT_INTERRUPTED, "interrupted"),
}


@contextlib.contextmanager
def _signals_interrupt(process: bool) -> Iterator[None]:
    """SIGTERM raises `Terminated` and SIGINT (if not ignored) KeyboardInterrupt where the
    program is, except, when ``process`` (the CLI owns the process), during torch's first
    import: an exception raised inside its C++ import hooks aborts the process, so the CLI exits
    at once there (nothing is written before torch is loaded). Called in-process (`main`), it
    raises as everywhere else rather than end its host."""
    if threading.current_thread() is not threading.main_thread():  # signals need the main thread
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        error, status, word = _STOPS[signum]
        if process and _importing_torch():
            with contextlib.suppress(OSError):  # no print: stderr's lock may be held here
                os.write(2, f"{PROG}: {word}\n".encode())
            os._exit(status)
        raise error

    ours = [s for s in _STOPS if s != signal.SIGINT or
            signal.getsignal(s) is signal.default_int_handler]  # fmt: skip
    previous = {s: signal.signal(s, stop) for s in ours}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _importing_torch() -> bool:
    """Whether ``import torch`` itself is running (its C++ extension and hooks load then; torch's
    later lazy imports, e.g. torch._dynamo, are plain Python, where raising is safe)."""
    torch = sys.modules.get("torch")
    return bool(getattr(getattr(torch, "__spec__", None), "_initializing", False))


def _one_line(err: BaseException) -> str:
    """The error as one line, in the CLI's words (flags instead of argument names)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return _ARGUMENT_NAMES.sub(lambda m: FLAGS[m[1]], text)


def _count(text: str) -> int:
    """argparse type of counts (--num-images, --threads): an integer >= 1."""
    from pndm.checks import check_count

    try:
        return check_count("the value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None


def run() -> None:
    """Console-script entry point (and ``python -m pndm.cli``)."""
    sys.exit(_main(None, process=True))
