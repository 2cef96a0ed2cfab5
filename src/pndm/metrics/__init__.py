"""Sample quality: Fréchet distances in Inception (pytorch-fid) or the shipped digits feature space.

``fid(samples, ref)`` is what ``pndm fid`` prints; ``sample_statistics`` what ``--save-stats``
writes. See `pndm.metrics.core` for what a reference may be. Names load lazily (torch is heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pndm._lazy import lazy_getattr

_EXPORTS = {
    "fid": "pndm.metrics.core",
    "sample_statistics": "pndm.metrics.core",
    "Statistics": "pndm.metrics.frechet",
    "frechet_distance": "pndm.metrics.frechet",
    "load_statistics": "pndm.metrics.frechet",
    "save_statistics": "pndm.metrics.frechet",
    "statistics_of": "pndm.metrics.frechet",
    "load_samples": "pndm.metrics.samples",
}

__all__ = [
    "Statistics",
    "fid",
    "frechet_distance",
    "load_samples",
    "load_statistics",
    "sample_statistics",
    "save_statistics",
    "statistics_of",
]

if TYPE_CHECKING:  # pragma: no cover
    from pndm.metrics.core import fid, sample_statistics
    from pndm.metrics.frechet import (
        Statistics,
        frechet_distance,
        load_statistics,
        save_statistics,
        statistics_of,
    )
    from pndm.metrics.samples import load_samples


__getattr__ = lazy_getattr(globals(), _EXPORTS)
