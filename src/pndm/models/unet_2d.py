"""UNet2DModel: the DDPM UNet with diffusers' constructor, config keys, call convention and weights.

Written from the architecture (Ho et al. 2020, Appendix B; diffusers-compat.md section 6), not
copied: parameter names and shapes equal diffusers' ``UNet2DModel`` for the same config, so its
``config.json`` and ``diffusion_pytorch_model.safetensors`` load here and ours load there. Reading
a folder (layouts, the checked config, strict weights) is `pndm.models.loading`.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pndm.config import BaseOutput, ConfigMixin, FrozenConfig
from pndm.files.weights import save_state_dict, weights_names
from pndm.models.activations import activate, get_activation
from pndm.models.blocks import (
    BlockSpec,
    ResnetBlock2D,
    TimeProjections,
    UNetMidBlock2D,
    block_class,
)
from pndm.models.embeddings import (
    GaussianFourierProjection,
    SinusoidalTimeProjection,
    TimestepEmbedding,
    check_class_labels,
    class_embedding,
)
from pndm.models.inference import derived, float32_conv, float32_input_pays
from pndm.models.norms import group_norm_act
from pndm.models.unet_config import validate_config


@dataclass
class UNet2DOutput(BaseOutput):
    """``sample``: the model output, shaped like the input (B, out_channels, H, W)."""

    sample: torch.Tensor


# The architecture of google/ddpm-cifar10-32 (35,746,307 parameters, 12.1 GFLOP per image).
DDPM_CIFAR10_CONFIG: dict = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}


class UNet2DModel(ConfigMixin, nn.Module):
    """The DDPM UNet of diffusers (same arguments and defaults as ``diffusers.UNet2DModel``).

    ``unet(sample, timestep).sample`` predicts the model output (eps for DDPM checkpoints) for a
    batch ``sample`` (B, C, H, W); ``timestep`` is a number, a 0-d tensor or one time per image.
    H and W must be multiples of ``2 ** (len(block_out_channels) - 1)``.

    Class-conditional as diffusers: with ``num_class_embeds`` (and ``class_embed_type`` None) a
    label table, with ``class_embed_type`` "timestep" the labels embedded as times, with
    "identity" the labels are the embeddings; ``unet(sample, t, class_labels)`` adds the class
    embedding to the time embedding (before the ResNets' activation).
    """

    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = (
            "DownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = (
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
        ),
        block_out_channels: tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        super().__init__()
        args = dict(locals())
        config = {name: args[name] for name in config_keys()}
        validate_config(config)
        self._register_config(**config)
        self.sample_size = sample_size
        self._build(self.config)

    # --- construction -----------------------------------------------------------------------

    def _build(self, cfg: FrozenConfig) -> None:
        channels = list(cfg.block_out_channels)
        time_dim = cfg.time_embedding_dim or channels[0] * 4
        spec = BlockSpec(
            temb_channels=time_dim,
            groups=cfg.norm_num_groups,
            eps=cfg.norm_eps,
            act_fn=cfg.act_fn,
            dropout=cfg.dropout,
            time_scale_shift=cfg.resnet_time_scale_shift,
            head_dim=cfg.attention_head_dim,
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self._build_time(cfg, channels[0], time_dim)
        self.down_blocks = self._build_down(cfg, channels, spec)
        self.mid_block = self._build_mid(cfg, channels[-1], spec)
        self.up_blocks = self._build_up(cfg, channels, spec)
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], cfg.out_channels, 3, padding=1)
        self._center_input = bool(cfg.center_input_sample)
        self._fourier = cfg.time_embedding_type == "fourier"
        self._levels = len(channels)
        self._assign_time_slots()

    def _assign_time_slots(self) -> None:
        """Give every ResNet its columns of the fused time projection (`TimeProjections`)."""
        self._resnets = tuple(m for m in self.modules() if isinstance(m, ResnetBlock2D))
        start = 0
        for resnet in self._resnets:
            width = resnet.time_emb_proj.out_features
            resnet.time_slot = slice(start, start + width)
            start += width

    def _build_time(self, cfg: FrozenConfig, width: int, time_dim: int) -> None:
        if cfg.time_embedding_type == "fourier":
            self.time_proj: nn.Module = GaussianFourierProjection(width, scale=16.0)
            width *= 2  # [sin, cos]
        else:
            self.time_proj = SinusoidalTimeProjection(width, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(width, time_dim)  # always SiLU, as diffusers
        self.time_act = get_activation(cfg.act_fn)  # applied once; every ResNet would repeat it
        self.class_embedding = class_embedding(cfg, width, time_dim)

    @staticmethod
    def _build_down(cfg: FrozenConfig, channels: list[int], spec: BlockSpec) -> nn.ModuleList:
        blocks = []
        for i, name in enumerate(cfg.down_block_types):
            c_in, add_downsample = channels[max(i - 1, 0)], i < len(channels) - 1
            cls = block_class("down", name)
            blocks.append(
                cls(
                    c_in,
                    channels[i],
                    cfg.layers_per_block,
                    spec,
                    add_downsample,
                    cfg.downsample_padding,
                )
            )
        return nn.ModuleList(blocks)

    @staticmethod
    def _build_up(cfg: FrozenConfig, channels: list[int], spec: BlockSpec) -> nn.ModuleList:
        rev = channels[::-1]
        blocks = []
        for i, name in enumerate(cfg.up_block_types):
            prev, skip_in = rev[max(i - 1, 0)], rev[min(i + 1, len(rev) - 1)]
            add_upsample = i < len(rev) - 1
            cls = block_class("up", name)
            blocks.append(cls(skip_in, prev, rev[i], cfg.layers_per_block + 1, spec, add_upsample))
        return nn.ModuleList(blocks)

    @staticmethod
    def _build_mid(cfg: FrozenConfig, width: int, spec: BlockSpec) -> UNetMidBlock2D | None:
        if cfg.mid_block_type is None:
            return None
        attn_groups = cfg.attn_norm_num_groups
        if attn_groups is None and cfg.resnet_time_scale_shift == "default":
            attn_groups = cfg.norm_num_groups  # diffusers: no attention norm with scale_shift
        return UNetMidBlock2D(
            width, spec, cfg.mid_block_scale_factor, cfg.add_attention, attn_groups
        )

    # --- forward ----------------------------------------------------------------------------

    def _batch_timesteps(
        self, timestep: torch.Tensor | float, sample: torch.Tensor
    ) -> torch.Tensor:
        batch = sample.shape[0]
        if not torch.is_tensor(timestep):
            # fractional python times are kept (diffusers would truncate them to int)
            return torch.full((1,), float(timestep), device=sample.device).expand(batch)
        t = timestep.to(sample.device).reshape(-1)
        if t.shape[0] == 1:
            return t.expand(batch)
        if t.shape[0] != batch:
            raise ValueError(f"timestep has {t.shape[0]} entries for a batch of {batch}")
        return t

    def _check_sample(self, sample: torch.Tensor) -> None:
        factor = 2 ** (self._levels - 1)
        if sample.ndim != 4 or sample.shape[1] != self.conv_in.in_channels:
            raise ValueError(
                f"sample must be (batch, {self.conv_in.in_channels}, H, W), "
                f"got {tuple(sample.shape)}"
            )
        if sample.shape[-2] % factor or sample.shape[-1] % factor:
            raise ValueError(
                f"sample H and W must be multiples of {factor}, got {tuple(sample.shape)}"
            )

    def time_embed(self, t: torch.Tensor) -> torch.Tensor:
        """The time embedding (B, time_dim) for one time per image, before the ResNet activation."""
        emb = self.time_proj(t)
        return self.time_embedding(emb.to(self.time_embedding.linear_1.weight.dtype))

    def class_embed(self, class_labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The class embedding (B, time_dim) of the labels, None for an unconditional model;
        the labels are checked against the model (one per image, known classes)."""
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError("class_labels given, but this model has no class embedding")
            return None
        labels = check_class_labels(self.config, class_labels, batch, self.device)
        if self.config.class_embed_type == "timestep":
            labels = self.time_proj(labels)
        dtype = self.time_embedding.linear_1.weight.dtype
        return self.class_embedding(labels).to(dtype)

    def time_condition(
        self, t: torch.Tensor, class_emb: torch.Tensor | None = None
    ) -> torch.Tensor | TimeProjections:
        """What the ResNets get: the activated embedding, or (no autograd) all their projections.

        Without autograd one matmul makes every ResNet's time projection (`TimeProjections`); a
        batch whose times are one value and that has no class embedding is embedded once (see
        `_one_time`).
        """
        if torch.is_grad_enabled():
            emb = self.time_embed(t)
            return self.time_act(emb if class_emb is None else emb + class_emb)
        shared = class_emb is None and _one_time(t)
        emb = self.time_embed(t[:1] if shared else t)
        temb = activate(self.time_act, emb if class_emb is None else emb + class_emb)
        weight = derived(self, "time_weight", self._stacked_time_weight)
        bias = derived(self, "time_bias", self._stacked_time_bias)
        return TimeProjections(torch.addmm(bias, temb, weight.t()), shared)

    def _stacked_time_weight(self) -> torch.Tensor:
        return torch.cat([r.time_emb_proj.weight for r in self._resnets])

    def _stacked_time_bias(self) -> torch.Tensor:
        return torch.cat([r.folded_time_bias() for r in self._resnets])

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[torch.Tensor]:
        """Predict the model output for ``sample`` at ``timestep`` (diffusers' call convention);
        ``class_labels``: one label per image (or one for all) for a class-conditional model."""
        self._check_sample(sample)
        class_emb = self.class_embed(class_labels, sample.shape[0])
        t = self._batch_timesteps(timestep, sample)
        if self._center_input:
            sample = 2 * sample - 1.0
        temb = self.time_condition(t, class_emb)
        h = self.input_conv(sample)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb)
            skips.extend(block_skips)
        if self.mid_block is not None:
            h = self.mid_block(h, temb)
        for block in self.up_blocks:
            n = len(block.resnets)
            h = block(h, skips[-n:], temb)
            del skips[-n:]
        h = self.conv_out(group_norm_act(self.conv_norm_out, h, self.conv_act))
        if self._fourier:  # score models predict eps / sigma
            h = h / t.to(h.dtype)[:, None, None, None]
        return UNet2DOutput(sample=h) if return_dict else (h,)

    def input_conv(self, sample: torch.Tensor) -> torch.Tensor:
        """``conv_in(sample)``; a float32 sample into a half-precision UNet on the CPU is
        convolved in float32 and rounded once, after (`pndm.models.inference.float32_conv`)."""
        if float32_input_pays(self.conv_in, sample, self.dtype):
            return float32_conv(self.conv_in, sample).to(self.dtype)
        return self.conv_in(sample.to(self.dtype) if sample.dtype == torch.float32 else sample)

    # --- properties -------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute non-persistent buffers (the sinusoid frequencies), e.g. after a meta build."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_buffers"):
                module.reset_buffers(device)

    # --- config and folders -----------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        variant: str | None = None,
        **config_overrides: Any,
    ) -> UNet2DModel:
        """Load a local folder: flat (``config.json`` at its root) or pipeline layout (``unet/``).

        Weights: ``diffusion_pytorch_model.safetensors``, else ``.bin``; older key layouts are
        renamed (see ``pndm.models.legacy``); keys and shapes are checked strictly. Without
        ``torch_dtype`` the weights load as float32. The model is returned in eval mode.
        """
        from pndm.models.loading import load_pretrained  # loading builds on this module

        return load_pretrained(
            cls, pretrained_model_name_or_path, subfolder, torch_dtype, variant, **config_overrides
        )

    def save_pretrained(
        self,
        save_directory: str | Path,
        safe_serialization: bool = True,
        variant: str | None = None,
        is_main_process: bool = True,
    ) -> None:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or ``.bin``)."""
        if not is_main_process:
            return
        super().save_pretrained(save_directory)  # config.json
        folder = Path(save_directory)
        name = weights_names(variant)[0 if safe_serialization else 1]
        save_state_dict(folder / name, self.state_dict())


def _one_time(t: torch.Tensor) -> bool:
    """Whether every image has the same time, known without a device sync.

    A single entry or a stride-0 ``expand`` (as the samplers and a scalar timestep give) is one
    time; a CPU tensor is compared by value; on other devices an explicit (B,) tensor is taken as
    per-image times (equal values then round differently, ~1e-6 relative, never wrongly).
    """
    if t.shape[0] == 1 or t.stride(0) == 0:
        return True
    return t.device.type == "cpu" and bool((t == t[0]).all())


@functools.cache
def config_keys() -> tuple[str, ...]:
    """The config keys: the constructor's arguments, in signature order."""
    return tuple(p for p in inspect.signature(UNet2DModel.__init__).parameters if p != "self")
