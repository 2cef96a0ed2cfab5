"""Seeds: the one seed check, the ``--seeds`` syntax ("0-63", "1,5,9", "0-3,10") and back.

Torch-free: the CLI parses seeds before anything heavy is imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pndm.checks import check_count, check_seed, shown

DEFAULT_NUM_IMAGES = 16
# Per run and per sample folder: 200x the 50,000 images of an FID run.
MAX_IMAGES = 10_000_000
_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")  # a seed or a range a-b, ASCII digits only


def parse_seeds(spec: str, where: str = "one run") -> list[int]:
    """``"0-63"``, ``"1,5,9"``, ``"0-3,10"`` -> the listed seeds in order (ranges inclusive),
    each once, in [0, 2**64), at most `MAX_IMAGES` of them (counted before a range is expanded,
    so "0-99999999999" fails at once; ``where`` names what they are for in that error)."""
    ranges = seed_ranges(spec)  # every seed in [0, 2**64)
    check_image_count(sum(r.stop - r.start for r in ranges), where)  # len() overflows past 2**63
    return _check_unique([seed for r in ranges for seed in r])


def check_seed_list(seeds: Any) -> list[int]:
    """A job's seeds (the Python API's `parse_seeds`): a non-empty list of distinct seeds in
    [0, 2**64), at most `MAX_IMAGES`."""
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise ValueError(f"seeds must be a list of integers, got {shown(seeds)}")
    if not seeds:
        raise ValueError("no seeds to sample")
    check_image_count(len(seeds))
    return _check_unique([check_seed(seed) for seed in seeds])


def default_seeds(num_images: int | None) -> list[int]:
    """Seeds 0 .. num_images - 1 (default `DEFAULT_NUM_IMAGES`)."""
    n = DEFAULT_NUM_IMAGES if num_images is None else check_count("num_images", num_images)
    return list(range(check_image_count(n)))


def check_image_count(n: int, where: str = "one run") -> int:
    """``n`` if at most `MAX_IMAGES` images are asked for in ``where`` (a run, a folder)."""
    if n > MAX_IMAGES:
        raise ValueError(
            f"{n} images in {where} is more than {MAX_IMAGES}, the most a run or a sample folder "
            "holds; split them into several folders"
        )
    return n


def seed_ranges(spec: str) -> list[range]:
    """The ranges of a seed spec, each seed in [0, 2**64), unchecked for their count and repeats
    ("" is an error)."""
    return [_seed_range(part.strip(), spec) for part in spec.split(",")]


def seeds_to_spec(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8": runs of consecutive seeds as ranges, order kept."""
    runs: list[list[int]] = []  # [first, last] of each run
    for seed in seeds:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _seed_range(part: str, spec: str) -> range:
    match = _PART.fullmatch(part)
    if match is None:
        raise ValueError(
            f"bad seeds {shown(spec)}: {shown(part, 30)} is not a seed or a range a-b "
            "(examples: 0-63, 1,5,9, 0-3,10)"
        )
    lo = hi = _seed(match[1])
    if match[2] is not None:
        hi = _seed(match[2])
        if lo > hi:
            raise ValueError(f"seed range {part!r} is descending; write it as {hi}-{lo}")
    return range(lo, hi + 1)


def _seed(digits: str) -> int:
    """A seed's ASCII digits as an int, refused unread beyond 20 digits (2**64 - 1 has 20)."""
    if len(digits.lstrip("0")) > 20:
        raise ValueError(f"seeds must be integers in [0, 2**64), got {shown(digits, 30)}")
    return check_seed(int(digits))


def _check_unique(seeds: list[int]) -> list[int]:
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"seed {seed} is listed twice")
        seen.add(seed)
    return seeds
