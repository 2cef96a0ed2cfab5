"""A small DDPM trainer (Ho et al. 2020, eq. 14): ε-prediction MSE, EMA weights, diffusers output.

``train(TrainConfig(...))`` fits a `UNet2DModel` to an image folder or to scikit-learn's digits and
writes a diffusers pipeline folder (``model_index.json``, ``unet/`` holding the EMA weights,
``scheduler/``). All randomness after the model's initialisation comes from one CPU generator
whose state goes into each checkpoint, so ``resume=True`` continues bit for bit.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

from pndm.runtime.devices import resolve_device
from pndm.runtime.progress import progress_bar
from pndm.schedule import NoiseSchedule
from pndm.train.config import TrainConfig, scheduler_config, unet_config
from pndm.train.data import dataset_size, load_dataset
from pndm.train.labels import ClassLabels, load_labels
from pndm.train.output import CHECKPOINT_NAME, check_output, work_folder
from pndm.train.state import TrainState, fresh_state, load_checkpoint, save_checkpoint
from pndm.train.step import check_finite_weights, train_step


def save_pipeline(
    unet: torch.nn.Module, config: TrainConfig, folder: Path, labels: ClassLabels | None = None
) -> Path:
    """Write a diffusers PNDMPipeline folder; model_index.json goes last and marks completion,
    recording a conditional model's "no class" label and class names
    (`pndm.compat.folders.save_components`)."""
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.compat.scheduler import PNDMScheduler

    scheduler = PNDMScheduler(**scheduler_config(config))
    recorded = (None, None) if labels is None else (labels.null_label, labels.names)
    PNDMPipeline(unet, scheduler, *recorded).save_pretrained(folder)
    return Path(folder)


# ----------------------------------------------------------------------------- the loop


def _progress(config: TrainConfig, start: int) -> Any:
    """The bar stays when done (a run's last loss is on it)."""
    return progress_bar(config.train_steps, "step", config.progress, initial=start,
                        desc="train", dynamic_ncols=True, leave=True)  # fmt: skip


def run_training(
    state: TrainState,
    data: torch.Tensor,
    config: TrainConfig,
    folder: Path | None = None,
    labels: ClassLabels | None = None,
) -> list[float]:
    """Train until ``config.train_steps`` (on ``labels`` too if conditional), checkpointing into
    ``folder`` (default: the output) and logging on the way; returns the batch losses. Stops at
    the first non-finite loss."""
    schedule = NoiseSchedule.from_config(scheduler_config(config))
    alphas_cumprod = schedule.alphas_cumprod.float().to(resolve_device(config.device))
    checkpoint = (folder or config.output_dir) / CHECKPOINT_NAME
    losses: list[float] = []
    with _progress(config, state.step) as bar:
        while state.step < config.train_steps:
            losses.append(train_step(state, data, alphas_cumprod, config, labels))
            bar.update(1)
            bar.set_postfix(loss=f"{_mean(losses[-50:]):.4f}", refresh=False)
            if config.log_every and state.step % config.log_every == 0:
                bar.write(
                    f"step {state.step}: loss {_mean(losses[-config.log_every :]):.5f}", sys.stderr
                )
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                check_finite_weights(state)
                save_checkpoint(state, config, checkpoint)
    return losses


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _parameter_count(config: TrainConfig, classes: int | None) -> int:
    from pndm.models.unet_2d import UNet2DModel

    with torch.device("meta"):  # shapes only: no memory
        return sum(p.numel() for p in UNet2DModel(**unet_config(config, classes)).parameters())


def check_fits(config: TrainConfig, count: int, classes: int | None = None) -> None:
    """Refuse, before loading anything, a run whose data, model and one batch cannot fit
    (``classes``: a conditional run's)."""
    from pndm.runtime.fast import free_memory, image_bytes

    device = resolve_device(config.device)
    shape = (config.channels, config.resolution, config.resolution)
    data = count * math.prod(shape) * 4
    model = _parameter_count(config, classes) * 4 * 5  # weights, EMA, gradients, two AdamW moments
    batch = config.batch_size * image_bytes(unet_config(config, classes), shape, torch.float32)
    parts = {"images": data, "model, EMA and optimiser": model, "one batch": batch}
    on_cpu = data + (model + batch if device.type == "cpu" else 0)
    checks = [(torch.device("cpu"), on_cpu)]
    if device.type != "cpu":
        checks.append((device, model + batch))
    for where, need in checks:
        free = free_memory(where)
        if need > free:
            detail = ", ".join(f"{k} {v / 2**30:.3g}" for k, v in parts.items())
            raise ValueError(
                f"training needs at least {need / 2**30:.3g} GiB on {where} ({detail} GiB) but "
                f"only {free / 2**30:.3g} GiB are free; lower --resolution, --batch-size or "
                "--block-out-channels"
            )


def train(config: TrainConfig) -> Path:
    """Train a UNet2DModel as ``config`` says and write a diffusers pipeline folder; returns it.

    Everything that can be checked is checked before any work; nothing is saved when the loss
    turns non-finite; a replaced model stays in place until the new one is complete.
    """
    check_output(config)
    labels = load_labels(config)  # before check_fits: a folder without classes fails first
    classes, names = (None, None) if labels is None else (labels.classes, labels.names)
    check_fits(config, dataset_size(config), classes)
    data = load_dataset(config)  # fail on bad input before touching the output folder
    with work_folder(config) as folder:
        checkpoint = folder / CHECKPOINT_NAME
        state = (
            load_checkpoint(config, checkpoint, classes, names)
            if config.resume
            else fresh_state(config, classes, names)
        )
        if state.step > config.train_steps:
            raise ValueError(
                f"{checkpoint} is at step {state.step}, past --steps {config.train_steps}"
            )
        run_training(state, data, config, folder, labels)
        check_finite_weights(state)
        _save_results(state, config, folder, labels)
    return config.output_dir


def _save_results(
    state: TrainState, config: TrainConfig, folder: Path, labels: ClassLabels | None
) -> None:
    """The pipeline, and the last checkpoint when one is kept (so a later run can extend it)."""
    checkpoint = folder / CHECKPOINT_NAME
    save_pipeline(state.ema, config, folder, labels)
    if config.keep_checkpoint and config.checkpoint_every and state.step % config.checkpoint_every:
        save_checkpoint(state, config, checkpoint)
    elif not config.keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
