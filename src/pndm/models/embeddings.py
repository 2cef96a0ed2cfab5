"""Embeddings of the DDPM UNet: time (sinusoids or Fourier features, then an MLP), class labels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pndm.models.activations import get_activation


def sinusoid_frequencies(dim: int, freq_shift: float, max_period: float = 10000.0) -> torch.Tensor:
    """exp(-ln(max_period) i / (dim/2 - freq_shift)), i = 0 .. dim/2 - 1, float32 (Ho et al.)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32)
    return torch.exp(exponent / (half - freq_shift))


class SinusoidalTimeProjection(nn.Module):
    """t -> [sin(t f), cos(t f)] (or [cos, sin] with ``flip_sin_to_cos``); zero-padded to odd dims.

    The frequencies are a non-persistent float32 buffer: no state-dict key, no work per call, and
    kept in float32 when the model is cast to half precision (t up to 1000 needs the mantissa).
    """

    def __init__(self, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> None:
        super().__init__()
        self.dim, self.flip_sin_to_cos, self.freq_shift = dim, flip_sin_to_cos, freq_shift
        self.register_buffer("freqs", sinusoid_frequencies(dim, freq_shift), persistent=False)

    def reset_buffers(self, device: torch.device | None = None) -> None:
        """Recompute the frequencies (after a half-precision cast or a meta-device build)."""
        device = self.freqs.device if device is None else device
        self.freqs = sinusoid_frequencies(self.dim, self.freq_shift).to(device)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        super()._apply(fn, recurse)
        if self.freqs.dtype != torch.float32 and self.freqs.device.type != "meta":
            self.reset_buffers()
        return self

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None, :]
        pair = [torch.sin(args), torch.cos(args)]
        emb = torch.cat(pair[::-1] if self.flip_sin_to_cos else pair, dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb


class GaussianFourierProjection(nn.Module):
    """t -> [sin(2 pi w log t), cos(2 pi w log t)] with fixed random w (Song et al., NCSN++)."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * scale, requires_grad=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # same association as diffusers ((x w) 2) pi: the arguments reach ~1e3, so rounding shows
        args = torch.log(t.float())[:, None] * self.weight[None, :] * 2 * math.pi
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Linear -> activation -> Linear (keys ``linear_1``, ``linear_2``)."""

    def __init__(self, in_dim: int, dim: int, act_fn: str = "silu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = get_activation(act_fn)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(emb)))


def class_embedding(cfg: Mapping[str, Any], width: int, time_dim: int) -> nn.Module | None:
    """diffusers' class embedding: a label table, a time embedding of the label, or none."""
    kind = cfg.class_embed_type
    if kind is None:
        return (
            None if cfg.num_class_embeds is None else nn.Embedding(cfg.num_class_embeds, time_dim)
        )
    if kind == "timestep":
        return TimestepEmbedding(
            width * (2 if cfg.time_embedding_type == "fourier" else 1), time_dim
        )
    return nn.Identity()  # "identity": the labels are the embeddings


def check_class_labels(
    config: Mapping[str, Any], labels: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """``labels`` as a (batch,) tensor on the model's device (or (batch, time_dim) for an
    "identity" embedding): one label for all images is broadcast; unknown classes refused."""
    if labels is None:
        raise ValueError("this model is class-conditional: pass class_labels, one per image")
    labels = torch.as_tensor(labels, device=device)
    if labels.ndim == 0 or (labels.shape[0] == 1 and batch > 1):
        labels = labels.reshape(1, *labels.shape[1:]).expand(batch, *labels.shape[1:])
    if labels.shape[0] != batch:
        raise ValueError(f"class_labels has {labels.shape[0]} entries for a batch of {batch}")
    table = config["num_class_embeds"] if config["class_embed_type"] is None else None
    if table is not None:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers, got dtype {labels.dtype}")
        if bool(((labels < 0) | (labels >= table)).any()):
            raise ValueError(f"class_labels must lie in [0, {table - 1}] (num_class_embeds)")
    return labels
