"""Building blocks of the DDPM UNet; module names equal diffusers' so state-dict keys match."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pndm.models.activations import get_activation
from pndm.models.attention import SpatialSelfAttention

TIME_SCALE_SHIFTS = ("default", "scale_shift")


@dataclass(frozen=True)
class BlockSpec:
    """What every ResNet/attention layer of the UNet shares (from the model config)."""

    temb_channels: int
    groups: int
    eps: float
    act_fn: str
    dropout: float
    time_scale_shift: str
    head_dim: int | None


class ResnetBlock2D(nn.Module):
    """GroupNorm, act, conv3x3, + time embedding, GroupNorm, act, dropout, conv3x3; 1x1 shortcut.

    ``time_scale_shift="scale_shift"``: the embedding gives (scale, shift) applied after the second
    norm as h (1 + scale) + shift (improved DDPM); ``"default"`` adds it before the second norm.
    """

    def __init__(
        self, in_channels: int, out_channels: int, spec: BlockSpec, output_scale_factor: float = 1.0
    ) -> None:
        super().__init__()
        self.scale_shift = spec.time_scale_shift == "scale_shift"
        self.output_scale_factor = float(output_scale_factor)
        self.norm1 = nn.GroupNorm(spec.groups, in_channels, eps=spec.eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(spec.temb_channels, out_channels * (1 + self.scale_shift))
        self.norm2 = nn.GroupNorm(spec.groups, out_channels, eps=spec.eps)
        self.dropout = nn.Dropout(spec.dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nonlinearity = get_activation(spec.act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``temb``: the time embedding after the activation (applied once per model call)."""
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        t = self.time_emb_proj(temb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.dropout(self.nonlinearity(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = skip + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    """3x3 conv with stride 2; ``padding=0`` pads (0, 1, 0, 1) first, as the original DDPM code."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2, then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attentions(channels: int, count: int, spec: BlockSpec, attend: bool) -> nn.ModuleList:
    make = lambda: SpatialSelfAttention(channels, spec.head_dim, spec.groups, spec.eps)  # noqa: E731
    return nn.ModuleList([make() for _ in range(count)] if attend else [])


class DownBlock2D(nn.Module):
    """``num_layers`` ResNets (each followed by attention in the Attn variant), then a downsampler.

    Returns the output and the skip tensors the matching up block consumes.
    """

    attend = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        spec: BlockSpec,
        add_downsample: bool,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__()
        self.attentions = _attentions(out_channels, num_layers, spec, self.attend)
        ins = [in_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList([ResnetBlock2D(c, out_channels, spec) for c in ins])
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, downsample_padding)])
            if add_downsample
            else None
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attend:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class AttnDownBlock2D(DownBlock2D):
    attend = True


class UpBlock2D(nn.Module):
    """``num_layers`` ResNets on [x, skip] concatenations (Attn variant: attention after each)."""

    attend = False

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        spec: BlockSpec,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        self.attentions = _attentions(out_channels, num_layers, spec, self.attend)
        # the last ResNet eats the skip from the block input level, the others same-level skips
        skip_channels = [out_channels] * (num_layers - 1) + [in_channels]
        x_channels = [prev_output_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(a + b, out_channels, spec)
                for a, b in zip(x_channels, skip_channels, strict=True)
            ]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor
    ) -> torch.Tensor:
        """``skips`` are this block's skip tensors in creation order; consumed last first."""
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips[-1 - i]], dim=1), temb)
            if self.attend:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class AttnUpBlock2D(UpBlock2D):
    attend = True


class UNetMidBlock2D(nn.Module):
    """ResNet, (attention, ResNet); outputs divided by ``output_scale_factor`` at each residual."""

    def __init__(
        self,
        channels: int,
        spec: BlockSpec,
        output_scale_factor: float = 1.0,
        add_attention: bool = True,
        attn_groups: int | None = None,
    ) -> None:
        super().__init__()
        make = lambda: SpatialSelfAttention(  # noqa: E731
            channels, spec.head_dim, attn_groups, spec.eps, output_scale_factor
        )
        self.attentions = nn.ModuleList([make()] if add_attention else [])
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(channels, channels, spec, output_scale_factor) for _ in range(2)]
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x, temb)


DOWN_BLOCKS: dict[str, type[DownBlock2D]] = {
    "DownBlock2D": DownBlock2D,
    "AttnDownBlock2D": AttnDownBlock2D,
}
UP_BLOCKS: dict[str, type[UpBlock2D]] = {"UpBlock2D": UpBlock2D, "AttnUpBlock2D": AttnUpBlock2D}


def block_class(kind: str, name: str) -> type[nn.Module]:
    """The block class for a config name (diffusers' ``UNetRes`` prefix accepted); lists choices."""
    table = DOWN_BLOCKS if kind == "down" else UP_BLOCKS
    key = name.removeprefix("UNetRes")
    if key not in table:
        raise ValueError(f"unknown {kind} block type {name!r}; choose one of {sorted(table)}")
    return table[key]
