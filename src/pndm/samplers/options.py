"""The kinds of option a method takes, each with its one check, and the options methods share.

A `Kind` turns an option's value into the value the sampler uses, or raises a one-line ValueError
(``<option> must be <what is valid>, got <value>``, the wording of `pndm.checks`). `Method` runs the
check of every option passed, once, before the sampler runs and before its NFE is counted, so the
sampler bodies only use the values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pndm.checks import check_choice, check_flag, check_positive

OptionCheck = Callable[[str, str, Any], Any]


@dataclass(frozen=True)
class Kind:
    """What values an option takes: ``name`` in words, and ``check(method, option, value)``, which
    returns the value the sampler uses or raises a one-line ValueError."""

    name: str
    check: OptionCheck


def _flag(method: str, option: str, value: Any) -> bool:
    return check_flag(option, value)


def _positive(method: str, option: str, value: Any) -> float:
    return check_positive(option, value)


def _stats(method: str, option: str, value: Any) -> dict | None:
    """The caller's own dict (the sampler fills it in, so it is not copied), or None."""
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{option} must be a dict to fill in or None, got {type(value).__name__}")
    return value


FLAG = Kind("flag", _flag)
POSITIVE = Kind("positive finite number", _positive)
TOLERANCE = Kind("tolerance: a positive finite number", _positive)
STATS = Kind("dict to fill in with counts, or None", _stats)


def order_in(valid: range) -> Kind:
    """An order k in ``valid``, an int; the message names the method (each has its own range)."""

    def check(method: str, option: str, value: Any) -> int:
        return check_choice(f"{option} for method {method!r}", value, tuple(valid))

    return Kind(f"order in {valid.start}..{valid.stop - 1}", check)


# The options shared across method families, each declared once: name -> kind.
CLIP_OPTIONS: dict[str, Kind] = {"clip_sample": FLAG, "clip_sample_range": POSITIVE}
LOWER_ORDER_FINAL: dict[str, Kind] = {"lower_order_final": FLAG}
ADAPTIVE_OPTIONS: dict[str, Kind] = {"rtol": TOLERANCE, "atol": TOLERANCE, "stats": STATS}


def clip_bound(clip_sample: bool, clip_sample_range: float) -> float | None:
    """The bound r of x̂_0 in [-r, r] when ``clip_sample`` is on, else None (DDIM's clip_sample)."""
    return clip_sample_range if clip_sample else None
