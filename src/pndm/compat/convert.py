"""Checkpoints of the original DDPM/DDIM/PNDM code written as a diffusers pipeline folder: the
network converted by `pndm.models.convert`, the original sampling convention recorded in the
scheduler config (``alpha_index_offset: 1``: model time t paired with ᾱ[t+1]), and the folder
written or replaced as a whole (`pndm.files.destinations.replacing`): a run interrupted at any
moment leaves the old model or the new one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pndm.checks import check_flag
from pndm.compat.pipeline import PNDMPipeline
from pndm.compat.scheduler import PNDMScheduler
from pndm.files import PathLike
from pndm.files.destinations import check_new_folder, replacing
from pndm.files.layout import PIPELINE_ENTRIES
from pndm.models.convert import OriginalConfig, convert_original, find_state_dict, load_checkpoint


def scheduler_config(alpha_index_offset: int = 1) -> dict[str, Any]:
    """PNDMScheduler config of the original code: linear β 1e-4..0.02, T = 1000, ᾱ[t + 1]."""
    config = {**PNDMScheduler(set_alpha_to_one=False).config}  # linear, 1e-4, 0.02, 1000
    return {**config, "alpha_index_offset": int(alpha_index_offset)}


def convert_checkpoint(
    src: PathLike,
    dst: PathLike,
    config: str | OriginalConfig | None = None,
    *,
    sample_size: int | None = None,
    ema: bool = True,
    overwrite: bool = False,
) -> OriginalConfig:
    """Convert an original-code checkpoint ``src`` into the pipeline folder ``dst``.

    ``config``: "cifar10", "celeba", "lsun", an `OriginalConfig`, or None to infer it from the
    weights. Returns the config used. Refuses a non-empty ``dst`` unless ``overwrite``; then the
    pipeline entries are replaced together and other files in ``dst`` stay.
    """
    check_flag("ema", ema)
    dst = check_new_folder(dst, overwrite=check_flag("overwrite", overwrite), what="DST")
    src = Path(src)
    state = find_state_dict(load_checkpoint(src), ema=ema, source=src)
    model, cfg = convert_original(state, config, sample_size, src)
    scheduler = PNDMScheduler.from_config(scheduler_config())
    with replacing(dst, owned=PIPELINE_ENTRIES) as staging:
        PNDMPipeline(unet=model, scheduler=scheduler).save_pretrained(staging)
    return cfg
