"""Checks of plain values shared by the library and the CLI: one bound, one wording.

Torch-free, so the CLI can use it while it builds its parser. Library errors name the argument
(``batch_size``); the CLI turns argument names into its flags (`pndm.cli.entry.FLAGS`). Every
message has one shape: ``<name> must be <what is valid>, got <value>``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds in [0, 2**64)
# Steps, model calls, grid length (`pndm.grids.check_num_steps`): DDPM's own sampler takes 1000.
MAX_STEPS = 1000


def check_seed(seed: Any) -> int:
    """The one seed check: an integer in [0, MAX_SEED] (bools and floats refused)."""
    integer = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    if not integer or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seeds must be integers in [0, 2**64), got {seed!r}")
    return int(seed)


def check_count(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool, not a float) in [minimum, maximum]."""
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integer or value < minimum or (maximum is not None and value > maximum):
        valid = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """A boolean option, refusing truthy look-alikes ("no", 0.5) that would pass silently."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number > 0 (not a bool); else a ValueError."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float if it is a finite real number (not a bool) in [low, high]."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low <= value <= high:
        span = "" if (low, high) == (-math.inf, math.inf) else f" in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number{span}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any], why: str = "") -> Any:
    """``value`` if it is one of ``choices`` and of the same type (True is not 1, 2.0 is not 2);
    ``why`` follows the message in parentheses."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        note = f" ({why})" if why else ""
        listed = ", ".join(map(str, choices))
        raise ValueError(f"{name} must be one of {listed}, got {value!r}{note}")
    return value


def one_line(err: BaseException | str) -> str:
    """An error's text on one line (white space collapsed): how pndm reports what failed."""
    return " ".join(str(err).split())


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters: a hostile value
    (a 100 MB string in a file) must not become a 100 MB error line."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
