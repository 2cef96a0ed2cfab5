"""Explicit rename tables from older checkpoint layouts to the current diffusers UNet2DModel keys.

Two layouts are understood:

* diffusers before the ``Attention`` refactor: attention blocks named ``query``, ``key``, ``value``,
  ``proj_attn`` (diffusers renames these on load too).
* the original DDPM layout (Ho et al.'s TF code as ported to PyTorch by pesser/pytorch_diffusion,
  used by the first diffusers ``UNetModel`` and by diffusers' ddpm conversion script):
  ``temb.dense.N``, ``down.I.block.J``, ``down.I.attn.J``, ``mid.block_1``, ``up.I.block.J``
  (``up.0`` is the finest level), ``norm_out``; attention projections are 1x1 convolutions.
"""

from __future__ import annotations

import re
from typing import Any

ATTENTION_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_ATTENTION = re.compile(
    r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$"
)

# leaf names inside a block of the original DDPM layout -> diffusers names
DDPM_RESNET_RENAMES = {"temb_proj": "time_emb_proj", "nin_shortcut": "conv_shortcut"}
DDPM_ATTENTION_RENAMES = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}
DDPM_TOP_RENAMES = {
    "temb.dense.0": "time_embedding.linear_1",
    "temb.dense.1": "time_embedding.linear_2",
    "norm_out": "conv_norm_out",
    "mid.block_1": "mid_block.resnets.0",
    "mid.attn_1": "mid_block.attentions.0",
    "mid.block_2": "mid_block.resnets.1",
}
_DDPM_LEVEL = re.compile(r"^(down|up)\.(\d+)\.(block|attn|downsample|upsample)\.(?:(\d+)\.)?(.*)$")


def rename_legacy_attention(state: dict[str, Any]) -> dict[str, Any]:
    """``...attentions.N.query.weight`` -> ``...attentions.N.to_q.weight`` etc.; others kept."""
    out = {}
    for key, value in state.items():
        match = _LEGACY_ATTENTION.match(key)
        new = f"{match[1]}.{ATTENTION_RENAMES[match[2]]}.{match[3]}" if match else key
        out[new if new not in state else key] = value
    return out


def is_ddpm_layout(state: dict[str, Any]) -> bool:
    return "temb.dense.0.weight" in state


def _rename_leaf(leaf: str, table: dict[str, str]) -> str:
    head, dot, rest = leaf.partition(".")
    return f"{table.get(head, head)}{dot}{rest}"


def _ddpm_level_key(match: re.Match[str], num_levels: int) -> str:
    side, level, part, index, leaf = match.groups()
    block = int(level) if side == "down" else num_levels - 1 - int(level)  # up.0 = finest
    prefix = f"{side}_blocks.{block}"
    if part == "block":
        return f"{prefix}.resnets.{index}.{_rename_leaf(leaf, DDPM_RESNET_RENAMES)}"
    if part == "attn":
        return f"{prefix}.attentions.{index}.{_rename_leaf(leaf, DDPM_ATTENTION_RENAMES)}"
    return f"{prefix}.{part}rs.0.{leaf}"  # downsample.conv -> downsamplers.0.conv


def ddpm_key(key: str, num_levels: int) -> str:
    """The diffusers name of one original-DDPM-layout key (unknown keys pass through)."""
    match = _DDPM_LEVEL.match(key)
    if match:
        return _ddpm_level_key(match, num_levels)
    for old, new in DDPM_TOP_RENAMES.items():
        if key.startswith(old + "."):
            leaf = key[len(old) + 1 :]
            table = DDPM_ATTENTION_RENAMES if "attn" in old else DDPM_RESNET_RENAMES
            return f"{new}.{_rename_leaf(leaf, table)}"
    return key


def convert_ddpm_layout(state: dict[str, Any], num_levels: int) -> dict[str, Any]:
    """Rename every key; 1x1-conv attention projections (C, C, 1, 1) become linear (C, C)."""
    out = {}
    for key, value in state.items():
        new = ddpm_key(key, num_levels)
        if ".attentions." in new and new.endswith(".weight") and value.ndim == 4:
            value = value.flatten(1)
        out[new] = value
    return out


def convert_legacy_state_dict(state: dict[str, Any], num_levels: int) -> dict[str, Any]:
    """Bring a state dict of any known older layout to the current key names."""
    if is_ddpm_layout(state):
        state = convert_ddpm_layout(state, num_levels)
    return rename_legacy_attention(state)
