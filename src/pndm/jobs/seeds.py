"""Seeds: the one seed check, the ``--seeds`` syntax ("0-63", "1,5,9", "0-3,10") and back.

Torch-free: the CLI parses seeds before anything heavy is imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pndm.checks import check_count, check_seed

DEFAULT_NUM_IMAGES = 16
# Per run: 200x the 50,000 images of an FID run; a larger set is several runs into one folder.
MAX_IMAGES = 10_000_000
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_seeds(spec: str) -> list[int]:
    """``"0-63"``, ``"1,5,9"``, ``"0-3,10"`` -> the listed seeds in order (ranges inclusive)."""
    ranges = seed_ranges(spec)
    check_image_count(sum(len(r) for r in ranges))
    return _check_unique([check_seed(seed) for r in ranges for seed in r])


def default_seeds(num_images: int | None) -> list[int]:
    """Seeds 0 .. num_images - 1 (default `DEFAULT_NUM_IMAGES`)."""
    n = DEFAULT_NUM_IMAGES if num_images is None else check_count("num_images", num_images)
    return list(range(check_image_count(n)))


def check_image_count(n: int) -> int:
    if n > MAX_IMAGES:
        raise ValueError(
            f"{n} images in one run is more than {MAX_IMAGES}; sample them in several runs "
            "into one folder (a folder resumes and extends)"
        )
    return n


def seed_ranges(spec: str) -> list[range]:
    """The ranges of a seed spec, unchecked for size and repeats ("" is an error)."""
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
    match = _RANGE.match(part)
    if match:
        lo, hi = int(match[1]), int(match[2])
        if lo > hi:
            raise ValueError(f"seed range {part!r} is descending; write it as {hi}-{lo}")
        return range(lo, hi + 1)
    if part.isdigit():
        return range(int(part), int(part) + 1)
    raise ValueError(
        f"bad seeds {spec!r}: {part!r} is not a seed or a range a-b (examples: 0-63, 1,5,9, 0-3,10)"
    )


def _check_unique(seeds: list[int]) -> list[int]:
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"seed {seed} is listed twice")
        seen.add(seed)
    return seeds
