"""``pndm info``: a pipeline folder's model and scheduler, and a check that it loads."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pndm.cli.args import Subparsers, path


def add(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a pipeline folder's model and scheduler and check that it loads",
        description="Print the UNet and scheduler configs, parameter count and dtype of a "
        "diffusers pipeline folder (or flat model folder), a class-conditional model's class "
        "labels and names (what --class takes), then run one forward pass.",
    )
    p.add_argument(
        "folder",
        type=path,
        nargs="?",
        default=None,
        help="pipeline folder (default: the shipped digits model)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pndm.assets import model_folder
    from pndm.compat.scheduler import PNDMScheduler
    from pndm.files.jsonfile import read_json
    from pndm.files.layout import MODEL_INDEX_NAME
    from pndm.models.unet_2d import UNet2DModel

    folder = model_folder(args.folder)
    index = folder / MODEL_INDEX_NAME
    if index.is_file():
        print(f"{MODEL_INDEX_NAME}: {json.dumps(read_json(index), sort_keys=True)}")
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = PNDMScheduler.from_pretrained(folder, subfolder="scheduler")
    _print_config("unet", unet.config)
    _print_config("scheduler", scheduler.config)
    _print_classes(folder, unet.config)
    _print_unet_summary(unet)
    print(f"verdict: {folder} loads ({_forward_check(unet)})")
    return 0


def _print_config(name: str, config: Any) -> None:
    print(f"{name} config:")
    for key, value in sorted(dict(config).items()):
        print(f"  {key}: {json.dumps(value, default=str)}")


def _print_classes(folder: Any, config: Any) -> None:
    """A class-conditional model's labels, with the names its folder records (checked)."""
    from pndm.compat.folders import read_labels
    from pndm.guidance import has_class_table, num_classes

    labels = read_labels(folder, config)
    if not has_class_table(config):
        return
    count = num_classes(config, labels.null_label)
    named = "--class takes a label or its name" if labels.class_names else "no names recorded"
    print(f"classes: {count}, labels 0-{count - 1} ({named}; 'no class' label: "
          f"{'none recorded' if labels.null_label is None else labels.null_label})")  # fmt: skip
    for label, name in enumerate(labels.class_names or ()):
        print(f"  {label}: {name}")


def _print_unet_summary(unet: Any) -> None:
    params = list(unet.parameters())
    count = sum(p.numel() for p in params)
    size = sum(p.numel() * p.element_size() for p in params)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    print(f"parameters: {count:,} ({size / 1e6:.2f} MB)")
    print(f"dtype: {', '.join(dtypes)}")


def _forward_check(unet: Any) -> str:
    """One batch-1 forward pass at t = 0 (label 0 for a class-conditional model); checks the
    output shape and finiteness."""
    import torch

    from pndm.images import image_shape

    cfg = unet.config
    param = next(unet.parameters())
    x = torch.zeros(1, *image_shape(cfg), dtype=param.dtype, device=param.device)
    zero = torch.zeros(1, dtype=torch.long, device=param.device)
    labels = None if unet.class_embedding is None else zero
    start = time.perf_counter()
    with torch.no_grad():
        out = unet(x, zero, class_labels=labels).sample
    ms = (time.perf_counter() - start) * 1e3
    if tuple(out.shape) != (1, cfg["out_channels"], *x.shape[2:]) or not out.isfinite().all():
        raise ValueError(
            f"the UNet's forward pass gave shape {tuple(out.shape)} or non-finite values"
        )
    shapes = f"{tuple(x.shape)} -> {tuple(out.shape)}"
    return f"UNet2DModel + PNDMScheduler, forward {shapes} in {ms:.0f} ms"
