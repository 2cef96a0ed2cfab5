"""bfloat16 on the CPU: whether the processor computes in it, and the warning when it does not.

With AVX-512 BF16 or AMX (x86: Intel Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later)
or Arm's BF16 extension, oneDNN runs bfloat16 convolutions and matrix products on the processor's
bfloat16 units. Without them it converts to float32 and back around the arithmetic, so a
bfloat16 UNet runs slower than the float32 one: `pndm sample --dtype bfloat16` says so in one
line, and runs.
"""

from __future__ import annotations

import warnings
from typing import Any

# x86 /proc/cpuinfo "flags" (AVX-512 BF16, AMX) and Arm "Features" (FEAT_BF16) naming bfloat16.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = "/proc/cpuinfo"


class SlowDtypeWarning(UserWarning):
    """The requested dtype has no hardware support on this device: it runs, but slowly."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags: the words of the first "flags" (x86) or "Features" (Arm) line of
    ``cpuinfo`` (default: /proc/cpuinfo's text); empty where there is none to read."""
    if cpuinfo is None:
        try:
            with open(CPUINFO) as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: unknown
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def has_bf16_hardware(flags: set[str]) -> bool:
    """Whether flags (`cpu_flags`) name bfloat16 arithmetic."""
    return any(flag in flags for flag in BF16_FLAGS)


def warn_if_slow(device: Any, dtype: Any, flags: set[str] | None = None) -> None:
    """A `SlowDtypeWarning` for a bfloat16 model on a CPU whose flags name no bfloat16 arithmetic
    (none when the flags cannot be read: nothing is known)."""
    import torch

    if torch.device(device).type != "cpu" or dtype != torch.bfloat16:
        return
    flags = cpu_flags() if flags is None else flags
    if flags and not has_bf16_hardware(flags):
        warnings.warn(
            "this CPU has no bfloat16 arithmetic (AVX-512 BF16, AMX or Arm BF16): --dtype "
            "bfloat16 runs emulated, slower than float32",
            SlowDtypeWarning,
            stacklevel=2,
        )
