"""Feature statistics (mean, covariance) and the Fréchet distance between two Gaussians.

The statistics file is pytorch-fid's format, an .npz with ``mu`` (d,) and ``sigma`` (d, d), so
published statistics load as they are; pndm adds ``features`` (the feature network's name) and
``count`` (images behind them), which pytorch-fid ignores.

`frechet_distance` is a numpy-only implementation for the offline digits metric, which must work
without the ``fid`` extra; Inception FID uses pytorch-fid's own ``calculate_frechet_distance``
(`pndm.metrics.inception`), so its numbers are the field's.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pndm.checks import one_line
from pndm.files import PathLike
from pndm.files.atomic import atomic_write


@dataclass(frozen=True)
class Statistics:
    """Mean ``mu`` (d,) and covariance ``sigma`` (d, d) of d-dim features of ``count`` images."""

    mu: np.ndarray
    sigma: np.ndarray
    features: str | None = None
    count: int | None = None

    @property
    def dims(self) -> int:
        return int(self.mu.shape[0])


def statistics_of(features: np.ndarray, name: str | None = None) -> Statistics:
    """The mean and unbiased covariance (as numpy's ``cov`` and pytorch-fid) of (n, d) features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"statistics need at least 2 feature vectors; got shape {features.shape}")
    sigma = np.cov(features, rowvar=False)
    return Statistics(features.mean(axis=0), sigma, name, int(features.shape[0]))


def save_statistics(path: PathLike, stats: Statistics, *, replace: bool = False) -> None:
    """Write ``stats`` as a pytorch-fid statistics .npz, atomically; an existing file is kept
    unless ``replace``."""
    extra = {} if stats.features is None else {"features": np.str_(stats.features)}
    if stats.count is not None:
        extra["count"] = np.int64(stats.count)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, mu=stats.mu, sigma=stats.sigma, **extra)

    atomic_write(path, write, replace=replace)


def open_npz(path: PathLike) -> Any:
    """``np.load`` of an .npz archive; anything else (a .npy, a corrupt file) is a ValueError."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path} as .npz: {one_line(err)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive")
    return archive


def load_statistics(path: PathLike) -> Statistics:
    """Read a statistics .npz (``mu``, ``sigma``; pndm's ``features`` and ``count`` if present)."""
    with open_npz(path) as f:
        missing = {"mu", "sigma"} - set(f.files)
        if missing:
            names = ", ".join(sorted(missing))
            raise ValueError(f"{path} is not a statistics file: it has no {names}")
        mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
        features = str(f["features"]) if "features" in f.files else None
        count = int(f["count"]) if "count" in f.files else None
    check_shapes(mu, sigma, str(path))
    return Statistics(mu, sigma, features, count)


def check_shapes(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{where}: mu must be (d,) and sigma (d, d); got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{where}: the statistics hold NaN or inf")


def check_same_dims(a: Statistics, b: Statistics) -> None:
    if a.dims != b.dims:
        raise ValueError(
            f"statistics of different dimension: {a.dims} ({a.features or 'unnamed'} features) "
            f"vs {b.dims} ({b.features or 'unnamed'}); compare statistics of the same features"
        )


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (negative rounding eigenvalues clipped to 0)."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: Statistics, b: Statistics) -> float:
    """d² = |μ_a − μ_b|² + tr Σ_a + tr Σ_b − 2 tr (Σ_a Σ_b)^½ (Dowson & Landau 1982).

    tr (Σ_a Σ_b)^½ is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    Σ_a^½ Σ_b Σ_a^½, which has the same spectrum as Σ_a Σ_b; unlike a general ``sqrtm`` it never
    goes complex on singular covariances.
    """
    check_same_dims(a, b)
    root = _psd_sqrt(a.sigma)
    inner = root @ b.sigma @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrt)
