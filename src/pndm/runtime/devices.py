"""Devices and dtypes by name: the one place that turns ``--device`` / ``--dtype`` into torch's.

``pndm sample`` and ``pndm train`` (and the library calls behind them) take the same names and give
the same errors, listing the valid choices.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from pndm.checks import check_choice

DTYPES = ("float32", "float16", "bfloat16")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if isinstance(name, str) and re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
        return device
    raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {name!r}")


def resolve_dtype(name: str) -> Any:
    """``float32``, ``float16`` or ``bfloat16`` -> torch.dtype."""
    import torch

    return getattr(torch, check_choice("dtype", name, DTYPES))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (None: left as they are), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
