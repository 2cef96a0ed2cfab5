"""``pndm pack``: a sample folder -> the uint8 NHWC .npz that FID tools read (`pndm.jobs.pack`)."""

from __future__ import annotations

import argparse
import sys

from pndm.cli.args import Subparsers, path


def add(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "pack",
        help="pack a sample folder into the uint8 NHWC .npz that FID tools read",
        description="Assemble the PNGs of a folder written by 'pndm sample' into OUT.npz "
        "('arr_0': uint8 NHWC in the order of the folder's pndm.json, 'seeds': uint64), "
        "streaming one image at a time. Refuses, naming them, when seeds are missing.",
    )
    p.add_argument("folder", type=path, help="a folder written by pndm sample")
    p.add_argument("out", type=path, help="the .npz to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.jobs.pack import pack
    from pndm.jobs.ranks import refuse_ranks

    refuse_ranks("pndm pack", "write the same OUT")
    count = pack(args.folder, args.out, overwrite=args.overwrite)
    print(f"wrote {count} images to {args.out}", file=sys.stderr)
    return 0
