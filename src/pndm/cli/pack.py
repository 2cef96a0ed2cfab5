"""``pndm pack``: a sample folder -> the uint8 NHWC .npz that FID tools read (`pndm.jobs.pack`)."""

from __future__ import annotations

import argparse
import sys

from pndm.cli.args import Subparsers, path


def add(subparsers: Subparsers) -> None:
    from pndm.jobs.seeds import MAX_IMAGES

    p = subparsers.add_parser(
        "pack",
        help="pack a sample folder into the uint8 NHWC .npz that FID tools read",
        description="Assemble the PNGs of a folder written by 'pndm sample' into OUT.npz "
        "('arr_0': uint8 NHWC in the order of the folder's pndm.json, 'seeds': uint64), "
        "streaming one image at a time. Refuses, naming them, when seeds are missing.",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="pack only these recorded seeds, in this order, e.g. 0-9999 (default: every seed "
        f"pndm.json records, in its order); at most {MAX_IMAGES}",
    )
    p.add_argument("folder", type=path, help="a folder written by pndm sample")
    p.add_argument("out", type=path, help="the .npz to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.jobs.pack import pack
    from pndm.jobs.ranks import refuse_ranks
    from pndm.jobs.seeds import parse_seeds

    refuse_ranks("pndm pack", "write the same OUT")
    seeds = None if args.seeds is None else parse_seeds(args.seeds, "one pack")
    count = pack(args.folder, args.out, overwrite=args.overwrite, seeds=seeds)
    print(f"wrote {count} images to {args.out}", file=sys.stderr)
    return 0
