"""Checks of a UNet2DModel config: types, ranges and consistency, before any weight is read.

`validate_config` runs in ``UNet2DModel.__init__``, so ``from_config`` and ``from_pretrained``
(which builds on the meta device before reading weights) refuse a bad ``config.json`` with one
``ValueError`` that names the field, the value found and the values allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from pndm.checks import check_count, check_flag, check_number, check_positive
from pndm.models.activations import get_activation
from pndm.models.blocks import TIME_SCALE_SHIFTS, block_class

TIME_EMBEDDING_TYPES = ("positional", "fourier")
# config keys whose only implemented value is the diffusers default
FIXED_KEYS = {
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "mid_block_type": ("UNetMidBlock2D", None),
}
CLASS_EMBED_TYPES = (None, "timestep", "identity")  # None: a label table when num_class_embeds
POSITIVE_INTS = ("in_channels", "out_channels", "layers_per_block", "norm_num_groups")
OPTIONAL_POSITIVE_INTS = (
    "num_class_embeds",
    "time_embedding_dim",
    "attention_head_dim",
    "attn_norm_num_groups",
    "num_train_timesteps",
)
BOOLS = ("center_input_sample", "flip_sin_to_cos", "add_attention")
NUMBERS = ("freq_shift", "mid_block_scale_factor")


def _is_int(value: Any) -> bool:
    """An integer as a JSON config holds one (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(key: str, value: Any, valid: str) -> NoReturn:
    raise ValueError(f"UNet config {key} must be {valid}, got {value!r}")


def _check_scalars(config: Mapping[str, Any]) -> None:
    """Every scalar field has the right type and range (the shared checks, named by key)."""
    for key in POSITIVE_INTS:
        check_count(f"UNet config {key}", config[key])
    for key in OPTIONAL_POSITIVE_INTS:
        if config[key] is not None and (not _is_int(config[key]) or config[key] < 1):
            _fail(key, config[key], "null or an integer >= 1")
    for key in BOOLS:
        check_flag(f"UNet config {key}", config[key])
    for key in NUMBERS:
        check_number(f"UNet config {key}", config[key])
    check_positive("UNet config norm_eps", config["norm_eps"])
    check_number("UNet config dropout", config["dropout"], 0, 1)
    check_count("UNet config downsample_padding", config["downsample_padding"], minimum=0)


def _check_choices(config: Mapping[str, Any]) -> None:
    """Fields with a fixed set of values this implementation has."""
    choices = {
        **FIXED_KEYS,
        "time_embedding_type": TIME_EMBEDDING_TYPES,
        "resnet_time_scale_shift": TIME_SCALE_SHIFTS,
        "class_embed_type": CLASS_EMBED_TYPES,
    }
    for key, allowed in choices.items():
        if config[key] not in allowed:  # by value: a JSON 1 may stand for True
            _fail(key, config[key], f"one of {', '.join(map(str, allowed))}")
    if not isinstance(config["act_fn"], str):
        _fail("act_fn", config["act_fn"], "a string")
    get_activation(config["act_fn"])  # lists the valid names


def _check_blocks(config: Mapping[str, Any]) -> None:
    """Channels: a non-empty list of positive ints; block types: names, one per level."""
    channels = config["block_out_channels"]
    if not isinstance(channels, list | tuple) or not channels:
        _fail("block_out_channels", channels, "a non-empty list of integers >= 1")
    if not all(_is_int(c) and c >= 1 for c in channels):
        _fail("block_out_channels", channels, "a non-empty list of integers >= 1")
    for kind in ("down", "up"):
        key = f"{kind}_block_types"
        names = config[key]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            _fail(key, names, "a list of block type names")
        if len(names) != len(channels):
            _fail(key, names, f"{len(channels)} names, one per block_out_channels entry")
        for name in names:
            block_class(kind, name)  # lists the valid names


def _check_groups(config: Mapping[str, Any]) -> None:
    groups, channels = config["norm_num_groups"], config["block_out_channels"]
    bad = [c for c in channels if c % groups]
    if bad:
        _fail("norm_num_groups", groups, f"a divisor of every block_out_channels {list(channels)}")
    attn_groups = config["attn_norm_num_groups"]
    if attn_groups is not None and channels[-1] % attn_groups:
        _fail("attn_norm_num_groups", attn_groups, f"a divisor of {channels[-1]} (mid block)")


def _check_time(config: Mapping[str, Any]) -> None:
    """The sinusoid of width block_out_channels[0] needs an even width and half - freq_shift > 0."""
    if config["time_embedding_type"] != "positional":
        return
    width, shift = config["block_out_channels"][0], config["freq_shift"]
    if width % 2:
        _fail("block_out_channels", config["block_out_channels"], "even in its first entry")
    if shift >= width // 2:
        _fail("freq_shift", shift, f"less than block_out_channels[0] / 2 = {width // 2}")


def _check_sample_size(config: Mapping[str, Any]) -> None:
    """None, a side, or (height, width); each a positive multiple of the downsampling factor."""
    size = config["sample_size"]
    if size is None:
        return
    sides = [size] if _is_int(size) else size
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    pair = isinstance(sides, list | tuple) and len(sides) == 2
    if not (sides is not size or pair):
        _fail("sample_size", size, f"an integer or [height, width], multiples of {factor}")
    if not all(_is_int(s) and s >= 1 and s % factor == 0 for s in sides):
        _fail("sample_size", size, f"a positive multiple of {factor} (or two of them)")


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise one ``ValueError`` naming the first field that is wrong or not implemented here."""
    _check_scalars(config)
    _check_choices(config)
    _check_blocks(config)
    _check_groups(config)
    _check_time(config)
    _check_sample_size(config)
