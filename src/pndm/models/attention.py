"""Spatial self-attention of the DDPM UNet (keys as diffusers' ``Attention``: to_q, to_out.0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pndm.models.norms import group_norm_act


class SpatialSelfAttention(nn.Module):
    """GroupNorm -> multi-head self-attention over the H*W positions -> projection, + residual.

    ``heads = channels // head_dim`` (one head when ``head_dim`` is None); the inner width is
    ``heads * head_dim``. The output is divided by ``rescale_output_factor`` (the mid block's
    ``mid_block_scale_factor``). ``norm_groups=None`` means no GroupNorm (diffusers' mid block with
    ``resnet_time_scale_shift="scale_shift"``).
    """

    def __init__(
        self,
        channels: int,
        head_dim: int | None = None,
        norm_groups: int | None = 32,
        eps: float = 1e-6,
        rescale_output_factor: float = 1.0,
    ) -> None:
        super().__init__()
        head_dim = channels if head_dim is None else head_dim
        if not 1 <= head_dim <= channels:
            raise ValueError(f"attention_head_dim={head_dim} must be in 1..{channels} (channels)")
        self.heads = channels // head_dim
        inner = self.heads * head_dim
        self.rescale_output_factor = float(rescale_output_factor)
        self.group_norm = (
            nn.GroupNorm(norm_groups, channels, eps=eps) if norm_groups is not None else None
        )
        self.to_q = nn.Linear(channels, inner)
        self.to_k = nn.Linear(channels, inner)
        self.to_v = nn.Linear(channels, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels), nn.Dropout(0.0)])

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hidden = group_norm_act(self.group_norm, x) if self.group_norm is not None else x
        # (B, C, H, W) -> (B, HW, C); a free view when x is channels_last
        hidden = hidden.flatten(2).transpose(1, 2)
        q, k, v = (self._split_heads(lin(hidden)) for lin in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).flatten(2)
        for layer in self.to_out:
            out = layer(out)
        # back to (B, C, H, W): a view with channels_last strides, no copy
        out = out.transpose(1, 2).reshape(b, c, h, w) + x
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out
