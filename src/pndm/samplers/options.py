"""The checks of method options: the x̂_0 clipping options, orders and tolerances."""

from __future__ import annotations

import math
import numbers
from typing import Any

from pndm.checks import check_flag

# The option names of the x̂_0 clipping every transfer-based method takes (DDIM's clip_sample).
CLIP_OPTIONS = ("clip_sample", "clip_sample_range")


def clip_limit(clip_sample: Any, clip_sample_range: Any) -> float | None:
    """The bound r of x̂_0 in [-r, r] when ``clip_sample``, else None (both options checked)."""
    r = clip_sample_range
    number = isinstance(r, numbers.Real) and not isinstance(r, bool)
    if not number or not math.isfinite(r) or r <= 0:
        raise ValueError(f"clip_sample_range must be a positive finite number, got {r!r}")
    return float(r) if check_flag("clip_sample", clip_sample) else None


def check_tolerance(name: str, value: Any) -> float:
    """A positive tolerance (rtol, atol) as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_order(method: str, order: Any, valid: range) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order not in valid:
        raise ValueError(
            f"order for method {method!r} must be one of {', '.join(map(str, valid))}, "
            f"got {order!r}"
        )
    return order
