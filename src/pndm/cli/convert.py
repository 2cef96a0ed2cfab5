"""``pndm convert``: an original DDPM/DDIM/PNDM checkpoint -> a diffusers pipeline folder
(`pndm.compat.convert`)."""

from __future__ import annotations

import argparse
import sys

from pndm.cli.args import HelpFormatter, Subparsers, path


def add(subparsers: Subparsers) -> None:
    from pndm.models.convert import PRESETS

    p = subparsers.add_parser(
        "convert",
        help="convert an original DDPM/DDIM/PNDM checkpoint to a diffusers pipeline folder",
        description="Convert a checkpoint of the original code (ermongroup/ddim Model, as used by "
        "luping-liu/PNDM: .pth/.ckpt, EMA weights preferred) into a PNDMPipeline folder "
        "(model_index.json, unet/, scheduler/). The scheduler config records the original "
        "sampling convention (alpha_index_offset: 1, model time t paired with alpha_bar[t+1]).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("src", type=path, help="checkpoint file (.pth, .ckpt)")
    p.add_argument("dst", type=path, help="pipeline folder to write (must not exist or be empty)")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.compat.convert import convert_checkpoint
    from pndm.jobs.ranks import refuse_ranks
    from pndm.models.convert import unet_config

    refuse_ranks("pndm convert", "write the same DST")
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
