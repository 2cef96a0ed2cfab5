"""One optimiser step of DDPM training (Ho et al. 2020, eq. 14): a batch, the ε-prediction loss,
AdamW with warm-up and gradient clipping, and the EMA update; a conditional run's labels go to the
model, some dropped to "no class" (`pndm.train.labels`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pndm.runtime.devices import resolve_dtype
from pndm.train.config import TrainConfig
from pndm.train.labels import ClassLabels, drop_labels
from pndm.train.state import TrainState


class NonFiniteLossError(ValueError):
    """The loss or the weights became NaN or inf: training stops and nothing is saved."""


class Batch(NamedTuple):
    x0: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    labels: torch.Tensor | None  # None: an unconditional run


def sample_batch(
    data: torch.Tensor,
    num_train_timesteps: int,
    batch_size: int,
    generator: torch.Generator,
    labels: ClassLabels | None = None,
    label_dropout: float = 0.0,
) -> Batch:
    """(x0, t, ε, y): images drawn with replacement, integer t ~ U{0..T-1}, ε ~ N(0, I), and a
    conditional run's labels of those images, dropped to "no class" with probability
    ``label_dropout``, drawn last: the draws before them are an unconditional run's."""
    index = torch.randint(len(data), (batch_size,), generator=generator)
    t = torch.randint(num_train_timesteps, (batch_size,), generator=generator)
    x0 = data[index]
    noise = torch.randn(x0.shape, generator=generator)
    if labels is None:
        return Batch(x0, t, noise, None)
    y = drop_labels(labels.values[index], label_dropout, labels.null_label, generator)
    return Batch(x0, t, noise, y)


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ho et al. eq. 14: || ε - ε_θ(sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε, t[, y]) ||²."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    if class_labels is None:
        return F.mse_loss(model(x_t, t).sample, noise)
    return F.mse_loss(model(x_t, t, class_labels=class_labels).sample, noise)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    if config.warmup_steps == 0:
        return config.learning_rate
    return config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)


def ema_decay(config: TrainConfig, step: int) -> float:
    """The configured decay, lowered early on so the average forgets the initial weights."""
    return min(config.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def train_step(
    state: TrainState,
    data: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    config: TrainConfig,
    labels: ClassLabels | None = None,
) -> float:
    """One optimiser step on a fresh batch (with ``labels``: a conditional run's); returns the
    batch loss (before the step)."""
    batch = sample_batch(data, config.num_train_timesteps, config.batch_size, state.generator,
                         labels, config.label_dropout)  # fmt: skip
    device, dtype = alphas_cumprod.device, resolve_dtype(config.dtype)  # the training device
    x0, t, noise = (v.to(device) for v in batch[:3])
    y = None if batch.labels is None else batch.labels.to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = diffusion_loss(state.model, x0, t, noise, alphas_cumprod, y)
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss is {value} at step {state.step + 1}; stopped, nothing "
            "saved (lower --lr, or check the data)"
        )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.max_grad_norm)
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(config, state.step)
    state.optimizer.step()
    update_ema(state.ema, state.model, ema_decay(config, state.step))
    state.step += 1
    return value


# ----------------------------------------------------------------------------- saving


def check_finite_weights(state: TrainState) -> None:
    """Refuse to save NaN or inf weights (an update can break them after a finite loss)."""
    for module in (state.model, state.ema):
        if not all(bool(p.isfinite().all()) for p in module.parameters()):
            raise NonFiniteLossError(
                f"the weights hold NaN or inf after step {state.step}; stopped, nothing saved "
                "(lower --lr)"
            )
