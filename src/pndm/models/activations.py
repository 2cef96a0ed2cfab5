"""Activation functions by their diffusers config names (``act_fn``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pndm.checks import check_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name``; unknown names list the valid ones."""
    if name not in ACTIVATIONS:
        check_choice("act_fn", name, tuple(sorted(ACTIVATIONS)))
    return ACTIVATIONS[name]()


def activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, in place for SiLU when no gradient is tracked (x is a fresh temporary)."""
    if isinstance(act, nn.SiLU) and not x.requires_grad:
        return F.silu(x, inplace=True)
    return act(x)
