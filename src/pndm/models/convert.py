"""Convert checkpoints of the original DDPM/DDIM/PNDM code to a diffusers pipeline folder.

The source is a state dict of the ``Model`` of ermongroup/ddim (also used by luping-liu/PNDM and
pesser/pytorch_diffusion): keys ``conv_in``, ``temb.dense.0/1``, ``down.I.block.J``,
``down.I.attn.J``, ``down.I.downsample.conv``, ``mid.block_1/attn_1/block_2``, ``up.I.block.J``
(``up.0`` is the finest level), ``norm_out``, ``conv_out``. That network is diffusers'
``UNet2DModel`` with (checked by tests/models/test_convert.py against an independent
implementation):

* GroupNorm(32, eps=1e-6) and swish (SiLU) everywhere: ``norm_eps=1e-6``, ``act_fn="silu"``;
* the time embedding [sin(t f_i), cos(t f_i)], f_i = exp(-ln(1e4) i / (ch/2 - 1)):
  ``flip_sin_to_cos=False``, ``freq_shift=1``;
* downsampling by pad (0, 1, 0, 1) + 3x3 conv with stride 2: ``downsample_padding=0``;
* one-head attention at the levels whose resolution is in ``attn_resolutions``
  (``attention_head_dim=None``), 1x1-conv projections that become linear layers.

The key renaming is ``pndm.models.legacy.convert_ddpm_layout``. The scheduler config records the
original code's sampling convention, ``alpha_index_offset: 1``: model time t is paired with ᾱ[t+1]
and the final target t = -1 with ᾱ[0] (algorithms.md §4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pndm.checks import check_choice
from pndm.files import PathLike
from pndm.files.tensorfile import read_torch

if TYPE_CHECKING:  # torch is imported where used: the command line builds without it
    import torch

# Where a checkpoint nests the model's weights; EMA weights are what the original code samples with.
EMA_KEYS = ("ema", "ema_model", "ema_state_dict", "model_ema")
MODEL_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")
WRAPPER_PREFIXES = ("module.", "model.")
_DOWN_KEY = re.compile(r"^down\.(\d+)\.(block|attn)\.(\d+)\.")


@dataclass(frozen=True)
class OriginalConfig:
    """The ``model`` section of an ermongroup/ddim YAML config (dropout: irrelevant here)."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 32
    in_channels: int = 3
    out_ch: int = 3

    def level_resolutions(self) -> list[int]:
        return [self.resolution // 2**i for i in range(len(self.ch_mult))]

    def attention_levels(self) -> list[int]:
        res = self.level_resolutions()
        return [i for i, r in enumerate(res) if r in self.attn_resolutions]


# ermongroup/ddim configs/{cifar10,celeba,church,bedroom}.yml (LSUN cat shares the church net)
PRESETS: dict[str, OriginalConfig] = {
    "cifar10": OriginalConfig(128, (1, 2, 2, 2), 2, (16,), 32),
    "celeba": OriginalConfig(128, (1, 2, 2, 2, 4), 2, (16,), 64),
    "lsun": OriginalConfig(128, (1, 1, 2, 2, 4, 4), 2, (16,), 256),
}


def unet_config(cfg: OriginalConfig) -> dict[str, Any]:
    """The diffusers ``UNet2DModel`` config of the original network ``cfg``."""
    attn = set(cfg.attention_levels())
    levels = range(len(cfg.ch_mult))
    down = [("AttnDownBlock2D" if i in attn else "DownBlock2D") for i in levels]
    up = [("AttnUpBlock2D" if i in attn else "UpBlock2D") for i in reversed(levels)]
    return {
        "sample_size": cfg.resolution,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": False,  # [sin, cos]
        "freq_shift": 1,  # exp(-ln(1e4) i / (half - 1))
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "layers_per_block": cfg.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 0,  # pad (0, 1, 0, 1), then conv stride 2
        "act_fn": "silu",
        "attention_head_dim": None,  # one head
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
    }


# --- reading checkpoints --------------------------------------------------------------------


def load_checkpoint(path: PathLike) -> Any:
    """The checkpoint's contents, read with ``weights_only=True`` on the CPU
    (`pndm.files.tensorfile.read_torch`): one line for missing or unreadable files."""
    return read_torch(Path(path), what="checkpoint")


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop DataParallel's ``module.`` (or a wrapper's ``model.``) when every key carries it."""
    state = dict(state)
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state) and "conv_in.weight" not in state:
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_model_state(obj: Any) -> bool:
    return _is_tensor_dict(obj) and "conv_in.weight" in _strip_prefixes(obj)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        more = f", ... ({len(keys)} keys)" if len(keys) > 8 else ""
        return f"a dict with keys {', '.join(map(str, keys[:8]))}{more}"
    if isinstance(obj, list | tuple):
        return f"a {type(obj).__name__} of {len(obj)} entries"
    return f"a {type(obj).__name__}"


def _nested_state(obj: Mapping[str, Any], ema: bool) -> Any:
    names = (*EMA_KEYS, *MODEL_KEYS) if ema else MODEL_KEYS
    for name in names:
        if _is_model_state(obj.get(name)):
            return obj[name]
    return None


def find_state_dict(obj: Any, ema: bool = True, source: PathLike = "checkpoint") -> dict[str, Any]:
    """The model weights inside a loaded checkpoint, ``module.`` prefixes stripped.

    Understands a bare state dict; a dict nesting it under ``ema``/``state_dict``/``model``/...;
    and ermongroup's training list ``[model, optimizer, epoch, step, ema]``. With ``ema`` (the
    original code's default for sampling) the EMA weights are taken when present.
    """
    state = obj if _is_model_state(obj) else None
    if state is None and isinstance(obj, Mapping):
        state = _nested_state(obj, ema)
    if state is None and isinstance(obj, list | tuple):
        found = [entry for entry in obj if _is_model_state(entry)]
        state = (found[-1] if ema else found[0]) if found else None
    if state is None:
        raise ValueError(
            f"no weights of the original DDPM/DDIM model found in {source}: it holds "
            f"{_describe(obj)}; expected a state dict with conv_in.weight and temb.dense.0.weight"
        )
    return _check_layout(_strip_prefixes(state), source)


def _check_layout(state: dict[str, Any], source: PathLike) -> dict[str, Any]:
    if "time_embedding.linear_1.weight" in state:
        raise ValueError(
            f"{source} already has diffusers key names; save it as unet/ of a pipeline folder "
            "instead of converting"
        )
    if "temb.dense.0.weight" not in state:
        raise ValueError(
            f"{source} is not in the original DDPM/DDIM layout (no temb.dense.0.weight); "
            "only ermongroup-style Model checkpoints can be converted"
        )
    return state


# --- the network's config -------------------------------------------------------------------


def _down_structure(state: Mapping[str, Any]) -> tuple[list[int], int, list[int]]:
    """(levels, resnets per level, levels with attention) from the ``down.I.*`` keys."""
    levels: set[int] = set()
    blocks: set[int] = set()
    attn: set[int] = set()
    for key in state:
        match = _DOWN_KEY.match(key)
        if not match:
            continue
        level, part, index = int(match[1]), match[2], int(match[3])
        levels.add(level)
        if part == "attn":
            attn.add(level)
        elif level == 0:
            blocks.add(index)
    if not levels or not blocks:
        raise ValueError("the checkpoint has no down.I.block.J weights")
    return sorted(levels), len(blocks), sorted(attn)


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint has no {key}")
    return tuple(state[key].shape)


def infer_config(state: Mapping[str, Any], sample_size: int | None = None) -> OriginalConfig:
    """The original ``Model``'s config from a state dict's shapes.

    The image size is not in the weights: a matching preset gives it, else ``sample_size``, else
    the convention of every original config (attention at 16x16) at the first attention level.
    """
    ch, in_channels = _shape(state, "conv_in.weight")[:2]
    out_ch = _shape(state, "conv_out.weight")[0]
    levels, num_res_blocks, attn_levels = _down_structure(state)
    widths = [_shape(state, f"down.{i}.block.0.conv1.weight")[0] for i in levels]
    if any(w % ch for w in widths):
        raise ValueError(f"level widths {widths} are not multiples of ch={ch}")
    if len(levels) > 1 and f"down.{levels[0]}.downsample.conv.weight" not in state:
        raise ValueError("resamp_with_conv=False (average-pool downsampling) is not supported")
    found = OriginalConfig(
        ch, tuple(w // ch for w in widths), num_res_blocks, (), 0, in_channels, out_ch
    )
    for preset in PRESETS.values():
        same = replace(
            found, attn_resolutions=preset.attn_resolutions, resolution=preset.resolution
        )
        if same == preset and preset.attention_levels() == attn_levels and sample_size is None:
            return preset
    return replace(found, **_image_size(attn_levels, sample_size))


def _summary(cfg: OriginalConfig) -> str:
    return (
        f"(ch={cfg.ch}, ch_mult={list(cfg.ch_mult)}, num_res_blocks={cfg.num_res_blocks}, "
        f"attn_resolutions={list(cfg.attn_resolutions)}, resolution={cfg.resolution})"
    )


def _image_size(attn_levels: Sequence[int], sample_size: int | None) -> dict[str, Any]:
    if sample_size is None:
        if not attn_levels:
            raise ValueError("cannot infer the image size (no attention levels): give sample_size")
        sample_size = 16 * 2 ** attn_levels[0]
    if sample_size < 1 or any(sample_size % 2**i for i in attn_levels):
        raise ValueError(f"sample_size={sample_size} does not fit the attention levels")
    return {
        "resolution": sample_size,
        "attn_resolutions": tuple(sample_size // 2**i for i in attn_levels),
    }


def resolve_config(
    state: Mapping[str, Any], config: str | OriginalConfig | None, sample_size: int | None = None
) -> OriginalConfig:
    """A preset by name, an explicit config, or the config inferred from the weights."""
    if config is None:
        return infer_config(state, sample_size)
    if isinstance(config, str):
        if config not in PRESETS:
            check_choice("config", config, tuple(PRESETS))
        config = PRESETS[config]
    if sample_size is not None:
        config = replace(config, **_image_size(config.attention_levels(), sample_size))
    return config


# --- conversion -----------------------------------------------------------------------------


def convert_state_dict(
    state: Mapping[str, Any], config: OriginalConfig, source: PathLike = "checkpoint"
) -> torch.nn.Module:
    """A ``pndm.UNet2DModel`` holding the original weights; strict key and shape checks."""
    import torch

    from pndm.models.loading import load_weights
    from pndm.models.unet_2d import UNet2DModel

    with torch.device("meta"):
        model = UNet2DModel(**unet_config(config))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # renames via pndm.models.legacy (the original DDPM layout), then checks keys and shapes
    load_weights(model, dict(state), Path(str(source)), torch.float32)
    return model.eval()


def convert_original(
    state: Mapping[str, Any],
    config: str | OriginalConfig | None = None,
    sample_size: int | None = None,
    source: PathLike = "checkpoint",
) -> tuple[torch.nn.Module, OriginalConfig]:
    """(the converted UNet2DModel, the config used) of an original ``Model`` state dict;
    ``config``: "cifar10", "celeba", "lsun", an `OriginalConfig`, or None to infer it."""
    cfg = resolve_config(state, config, sample_size)
    try:
        return convert_state_dict(state, cfg, source), cfg
    except ValueError as err:
        which = f"config {config!r}" if isinstance(config, str) else "the inferred config"
        raise ValueError(f"{which} {_summary(cfg)}, keys renamed to diffusers': {err}") from err
