"""``pndm fid``: the Fréchet distance of a sample set to a reference, or its statistics
(`pndm.metrics`)."""

from __future__ import annotations

import argparse

from pndm.cli.args import (
    HelpFormatter,
    Subparsers,
    UsageError,
    add_device,
    add_no_progress,
    count,
    path,
)


def add(subparsers: Subparsers) -> None:
    from pndm.files.imagefile import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
    from pndm.files.reading import show_bytes
    from pndm.metrics.frechet import MAX_FEATURE_DIMS
    from pndm.metrics.names import DEFAULT_BATCH_SIZE, FEATURES, SHIPPED
    from pndm.metrics.samples import MAX_SAMPLE_BYTES

    p = subparsers.add_parser(
        "fid",
        help="Fréchet distance of a sample set to a reference (Inception FID or digits)",
        description="Print the Fréchet distance between SAMPLES and REF alone on the last line "
        "of stdout. Inception features come from pytorch-fid (pip install 'pndm[fid]'); the "
        "'digits' features ship with pndm and work offline. With --save-stats, write the "
        "statistics of SAMPLES instead. Two statistics files are compared without any feature "
        "network.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "samples", type=path, help="a folder of images or an .npz (arr_0: uint8 NHWC), or a "
        f"statistics .npz; at most {MAX_IMAGE_PIXELS} pixels and {show_bytes(MAX_IMAGE_BYTES)} "
        f"per image file, {show_bytes(MAX_SAMPLE_BYTES)} of pixels in all (and what fits in the "
        "free memory)",
    )  # fmt: skip
    p.add_argument(
        "ref", nargs="?", help="a statistics .npz (mu, sigma; at most "
        f"{MAX_FEATURE_DIMS} features), another sample set, or a shipped name: "
        f"{', '.join(SHIPPED)}",
    )  # fmt: skip
    p.add_argument("--save-stats", type=path, metavar="OUT.npz", help="write SAMPLES' statistics")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --save-stats file")
    p.add_argument(
        "--features", choices=FEATURES, help="feature network (default: the reference's own, "
        "else inception)",
    )  # fmt: skip
    p.add_argument("--inception-weights", type=path, metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the torch "
                   "hub cache)")  # fmt: skip
    p.add_argument("--batch-size", type=count, default=DEFAULT_BATCH_SIZE, help="images per batch")
    add_device(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.files.destinations import check_new_file
    from pndm.metrics import core as metric
    from pndm.metrics.frechet import save_statistics

    if (args.ref is None) == (args.save_stats is None):
        raise UsageError("give exactly one of REF (to compare with) and --save-stats OUT.npz")
    common = {
        "inception_weights": args.inception_weights,
        "batch_size": args.batch_size,
        "device": args.device,
        "progress": args.progress,
    }
    if args.save_stats is not None:
        check_new_file(args.save_stats, overwrite=args.overwrite, suffixes=(".npz",),
                       what="--save-stats")  # fmt: skip
        features = args.features or metric.FEATURES[0]
        stats = metric.sample_statistics(args.samples, features=features, **common)
        save_statistics(args.save_stats, stats, replace=args.overwrite)
        print(f"wrote {args.save_stats}: {metric.describe(stats)}")
        return 0
    print(metric.fid(args.samples, args.ref, features=args.features, **common))
    return 0
