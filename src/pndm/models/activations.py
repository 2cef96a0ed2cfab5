"""Activation functions by their diffusers config names (``act_fn``)."""

from __future__ import annotations

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
