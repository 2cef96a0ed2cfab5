"""Building blocks of the DDPM UNet; module names equal diffusers' so state-dict keys match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pndm.checks import check_choice
from pndm.models.activations import activate, get_activation
from pndm.models.attention import SpatialSelfAttention
from pndm.models.inference import conv3x3, derived_like, is_channels_last
from pndm.models.norms import group_norm_act

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


class TimeProjections(NamedTuple):
    """Every ResNet's time projection for one model call, made by one matmul (inference only).

    ``values[:, slot]`` is ResNet i's ``time_emb_proj(temb)``, plus its ``conv1.bias`` for the
    default time shift (the conv then runs without bias: one add fewer per ResNet). ``shared``:
    every image of the batch has the same time, so ``values`` has one row and, with the default
    shift, serves directly as conv1's bias (no add at all).
    """

    values: torch.Tensor
    shared: bool


class ResnetBlock2D(nn.Module):
    """GroupNorm, act, conv3x3, + time embedding, GroupNorm, act, dropout, conv3x3; 1x1 shortcut.

    ``time_scale_shift="scale_shift"``: the embedding gives (scale, shift) applied after the second
    norm as h (1 + scale) + shift (improved DDPM); ``"default"`` adds it before the second norm.
    ``time_slot``: this block's columns in the UNet's `TimeProjections` (set by the UNet).
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
        self.time_slot = slice(0, 0)

    def folded_time_bias(self) -> torch.Tensor:
        """The bias of this block's column slot in `TimeProjections` (see there)."""
        if self.scale_shift:
            return self.time_emb_proj.bias
        return self.time_emb_proj.bias + self.conv1.bias

    def forward(self, x: torch.Tensor, temb: torch.Tensor | TimeProjections) -> torch.Tensor:
        """``temb``: the time embedding after the activation, or the UNet's projections of it."""
        h = group_norm_act(self.norm1, x, self.nonlinearity)
        if isinstance(temb, TimeProjections):
            h, t = self._conv1_projected(h, temb)
        else:
            h, t = conv3x3(self.conv1, h), self.time_emb_proj(temb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = activate(self.nonlinearity, group_norm_act(self.norm2, h) * (1 + scale) + shift)
        else:  # h: conv1's fresh output
            h = group_norm_act(self.norm2, h if t is None else h.add_(t), self.nonlinearity)
        h = conv3x3(self.conv2, self.dropout(h))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = h.add_(skip)  # h is conv2's fresh output
        if self.output_scale_factor != 1.0:
            out = out.div_(self.output_scale_factor)
        return out

    def _conv1_projected(
        self, h: torch.Tensor, temb: TimeProjections
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(conv1 output with the time term added where it folds, the time term still to add)."""
        t = temb.values[:, self.time_slot]
        if self.scale_shift:
            return conv3x3(self.conv1, h), t[:, :, None, None]
        if temb.shared:  # one time for the batch: projection + conv1 bias is a per-channel bias
            return conv3x3(self.conv1, h, t[0]), None
        return conv3x3(self.conv1, h, None).add_(t[:, :, None, None]), None


class Downsample2D(nn.Module):
    """3x3 conv with stride 2; ``padding=0`` pads (0, 1, 0, 1) first, as the original DDPM code."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return conv3x3(self.conv, x)


# Sub-pixel upsampling pays where the conv is large next to the fixed cost of rearranging the
# weights: from batch * H * W = 512 input pixels (measured on CPU; below, the 4x4 level, it loses).
SUBPIXEL_MIN_PIXELS = 512


def phase_taps() -> torch.Tensor:
    """(phase, tap, k): along one axis, phase 0 reads offsets (-1, 0) of the small image with
    taps (k0, k1 + k2) of a 3x3 kernel, phase 1 reads (0, +1) with taps (k0 + k1, k2)."""
    return torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class Upsample2D(nn.Module):
    """Nearest-neighbour x2, then 3x3 conv.

    Without autograd, on CPU, it runs as the equivalent sub-pixel convolution: each of the four
    output phases (row parity a, column parity b) of a 3x3 conv over the nearest-upsampled image
    is a 2x2 conv of the small image with summed taps, so one 2x2 conv with 4x the output
    channels, then an interleave, gives the same result with 16/36 of the multiply-adds and no
    upsampled copy.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.register_buffer("taps", phase_taps(), persistent=False)

    def reset_buffers(self, device: torch.device | None = None) -> None:
        """Rebuild the constant tap table (after a meta-device build)."""
        self.taps = phase_taps().to(self.taps.device if device is None else device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if torch.is_grad_enabled() or x.device.type != "cpu" or b * h * w < SUBPIXEL_MIN_PIXELS:
            return conv3x3(self.conv, F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self._subpixel(x)

    def phase_weights(self) -> torch.Tensor:
        """(4 C_out, C_in, 2, 2): the 2x2 kernels of the phases (a, b), in order 2a + b."""
        w = self.conv.weight
        taps = self.taps.to(w.dtype)
        phased = torch.einsum("ayk,bxl,oikl->aboiyx", taps, taps, w)
        return phased.reshape(4 * w.shape[0], w.shape[1], 2, 2)

    def _subpixel(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        o = self.conv.out_channels
        bias = self.conv.bias.repeat(4) if self.conv.bias is not None else None
        kernels = derived_like(self, "subpixel", self.phase_weights, x)
        y = F.conv2d(x, kernels, bias, padding=1)  # (b, 4o, h + 1, w + 1)
        # out[b, o_, 2i + a, 2j + c] = y[b, (2a + c) o + o_, i + a, j + c]: one strided view
        s = y.stride()
        phases = y.as_strided(
            (b, o, h, 2, w, 2), (s[0], s[1], s[2], 2 * o * s[1] + s[2], s[3], o * s[1] + s[3])
        )
        layout = torch.channels_last if is_channels_last(y) else torch.contiguous_format
        out = torch.empty(
            (b, o, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=layout
        )
        t = out.stride()
        out.as_strided((b, o, h, 2, w, 2), (t[0], t[1], 2 * t[2], t[2], 2 * t[3], t[3])).copy_(
            phases
        )
        return out


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
        check_choice(f"{kind} block type", name, tuple(sorted(table)))
    return table[key]
