"""``pndm train``: train a small DDPM UNet (`pndm.train`) and write a pipeline folder."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from typing import Any

from pndm.cli.args import HelpFormatter, Subparsers, add_device, add_no_progress, add_threads, path


def _train_defaults() -> dict[str, Any]:
    from pndm.train.config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.name != "extra"}


def add(subparsers: Subparsers) -> None:
    d = _train_defaults()
    p = subparsers.add_parser(
        "train",
        help="train a small DDPM UNet on images or the digits dataset",
        description="Train a UNet2DModel (epsilon prediction, EMA weights) and write a diffusers "
        "PNDMPipeline folder (model_index.json, unet/, scheduler/).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--output",
        "-o",
        dest="output_dir",
        type=path,
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
    _add_train_class_args(p, d)
    _add_train_optim_args(p, d)
    _add_train_run_args(p, d)
    p.set_defaults(func=run)


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


def _add_train_class_args(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    g = p.add_argument_group("class-conditional (classifier-free guidance)")
    g.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional, for classifier-free guidance: digits' 10 classes, or one "
        "class per subfolder of --data (sorted names: label 0 is the first); the folder "
        "records the 'no class' label",
    )
    g.add_argument(
        "--label-dropout",
        type=float,
        default=d["label_dropout"],
        metavar="P",
        help="with --conditional: the probability that a training label becomes 'no class' "
        "(Ho & Salimans 2022's p_uncond); in [0, 1)",
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
    add_device(g, d["device"])
    g.add_argument(
        "--dtype",
        default=d["dtype"],
        help="forward-pass dtype: float32, or bfloat16 (autocast; weights stay float32)",
    )
    add_threads(g)
    g.add_argument(
        "--log-every",
        type=int,
        default=d["log_every"],
        metavar="N",
        help="print the mean loss every N steps (0: never)",
    )
    add_no_progress(g)


def run(args: argparse.Namespace) -> int:
    from pndm.jobs.ranks import refuse_ranks
    from pndm.runtime.devices import torch_threads
    from pndm.train import TrainConfig, train

    refuse_ranks("pndm train", "train the same model and race on --out")
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    start = time.perf_counter()
    with torch_threads(args.threads):
        out = train(config)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
