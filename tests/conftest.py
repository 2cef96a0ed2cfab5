"""Shared test helpers: float32 tolerances that follow the machine's own rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# A float32 result computed by other kernels (Winograd, channels-last, another batch size, ours
# vs diffusers or the original code) is within this many times the plain float32 path's own
# error against float64. Measured 0.67-2.04x over the 36 seeded comparisons of the suite, on
# AVX2 and with oneDNN and MKL held to AVX and to SSE4.1 (ONEDNN_MAX_CPU_ISA,
# MKL_ENABLE_INSTRUCTIONS: other blockings and orders of summation, as AVX-512's are); a
# wrong Winograd coefficient (one entry of B^T off by 1e-3) fails by orders of magnitude.
ROUNDING_FACTOR = 4


def _as_array(a: Any) -> np.ndarray:
    return a.detach().double().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def assert_rounding_close(got: Any, plain: Any, exact: Any, factor: float = ROUNDING_FACTOR):
    """``got`` and ``plain`` are the same float32 computation by different kernels, ``exact``
    its float64 value: max |got - exact| <= factor * max |plain - exact| (+ one float32 ulp of
    the values' scale, should plain happen to be exact). The bound scales with the rounding of
    the machine the test runs on (AVX2 and AVX-512 change the order of summation, not the size
    of the error), so it holds on any x86-64 CPU, and the seed only picks which inputs."""
    got, plain, exact = _as_array(got), _as_array(plain), _as_array(exact)
    scale = float(np.abs(exact).max()) * 2.0**-24
    own = float(np.abs(plain - exact).max())
    error = float(np.abs(got - exact).max())
    assert error <= factor * own + scale, f"error {error:.3g} > {factor} x plain's {own:.3g}"
