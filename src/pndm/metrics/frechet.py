"""Feature statistics (mean, covariance) and the Fréchet distance between two Gaussians.

The statistics file is pytorch-fid's format, an .npz with ``mu`` (d,) and ``sigma`` (d, d), so
published statistics load as they are; pndm adds ``features`` (the feature network's name) and
``count`` (images behind them), which pytorch-fid ignores.

`frechet_distance` is a numpy-only implementation for the offline digits metric, which must work
without the ``fid`` extra; Inception FID uses pytorch-fid's own ``calculate_frechet_distance``
(`pndm.metrics.inception`), so its numbers are the field's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pndm.checks import check_choice
from pndm.files import PathLike
from pndm.files.atomic import atomic_write
from pndm.files.npz import Archive, open_npz
from pndm.files.reading import GiB
from pndm.metrics.names import FEATURES

MAX_FEATURE_DIMS = 8192  # Inception's are 2048, the digits metric's 64
MAX_STATISTICS_BYTES = GiB  # sigma of MAX_FEATURE_DIMS in float64 is 512 MiB
STATISTICS_MEMBERS = ("mu", "sigma", "features", "count")
SYMMETRY_TOLERANCE = 1e-5  # relative to sigma's largest entry
PSD_TOLERANCE = 1e-3  # relative to the largest variance


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


def load_statistics(path: PathLike) -> Statistics:
    """Read a statistics .npz (``mu``, ``sigma``; pndm's ``features`` and ``count`` if present),
    every array's header checked before it is read, the whole checked by `check_statistics`."""
    path = Path(path)
    with open_npz(path, what="statistics file", limit=MAX_STATISTICS_BYTES) as archive:
        _check_members(path, archive)
        mu, sigma = (_floats(archive, name) for name in ("mu", "sigma"))
        features = _scalar(archive, "features", "U")
        count = _scalar(archive, "count", "iu")
    stats = Statistics(mu, sigma, None if features is None else str(features), count)
    check_statistics(stats, str(path))
    return stats


def _check_members(path: Path, archive: Archive) -> None:
    names = set(archive.members)
    missing = sorted({"mu", "sigma"} - names)
    if missing:
        raise ValueError(f"{path} is not a statistics file: it has no {', '.join(missing)}")
    unknown = sorted(names - set(STATISTICS_MEMBERS))
    if unknown:
        raise ValueError(f"{path} must hold only {', '.join(STATISTICS_MEMBERS)} (a statistics "
                         f"file), got also {', '.join(unknown)}")  # fmt: skip


def _floats(archive: Archive, name: str) -> np.ndarray:
    member = archive.members[name]
    if any(n > MAX_FEATURE_DIMS for n in member.shape):  # refused before it is read
        raise ValueError(f"{archive.path}: {name} must have at most {MAX_FEATURE_DIMS} features, "
                         f"got shape {member.shape}")  # fmt: skip
    if member.dtype.kind != "f" or len(member.shape) != (1 if name == "mu" else 2):
        raise ValueError(f"{archive.path}: {name} must be a {'1' if name == 'mu' else '2'}-d "
                         f"float array, got {member.dtype} {member.shape}")  # fmt: skip
    return np.asarray(archive.read(name, MAX_STATISTICS_BYTES), np.float64)


def _scalar(archive: Archive, name: str, kinds: str) -> Any:
    """pndm's 0-d ``features`` (a string) or ``count`` (an integer), None when absent."""
    member = archive.members.get(name)
    if member is None:
        return None
    if member.shape != () or member.dtype.kind not in kinds:
        kind = "a string" if kinds == "U" else "an integer"
        raise ValueError(f"{archive.path}: {name} must be {kind}, got {member.dtype} array "
                         f"{member.shape}")  # fmt: skip
    return archive.read(name, 2**10).item()


def check_statistics(stats: Statistics, where: str) -> None:
    """``mu`` (d,) and ``sigma`` (d, d), d <= `MAX_FEATURE_DIMS`, finite; sigma symmetric and
    positive semi-definite (a covariance); ``features`` a known name, ``count`` >= 2."""
    check_shapes(stats.mu, stats.sigma, where)
    if stats.features is not None:
        check_choice(f"{where}: features", stats.features, FEATURES)
    if stats.count is not None and not 2 <= stats.count < 2**63:
        raise ValueError(f"{where}: count must be an integer >= 2, got {stats.count}")
    _check_covariance(stats.sigma, where)


def check_shapes(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{where}: mu must be (d,) and sigma (d, d); got {mu.shape} and {sigma.shape}"
        )
    if not 1 <= mu.shape[0] <= MAX_FEATURE_DIMS:
        raise ValueError(f"{where}: mu must have 1 to {MAX_FEATURE_DIMS} dimensions, got "
                         f"{mu.shape[0]}")  # fmt: skip
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{where}: the statistics hold NaN or inf")


def _check_covariance(sigma: np.ndarray, where: str) -> None:
    """Symmetric to `SYMMETRY_TOLERANCE` and with eigenvalues >= -`PSD_TOLERANCE` x the largest
    variance (Cholesky of sigma + that much identity): rounding passes, a sign error does not."""
    scale = float(np.abs(sigma).max())
    asymmetry = float(np.abs(sigma - sigma.T).max())
    if asymmetry > SYMMETRY_TOLERANCE * scale:
        raise ValueError(f"{where}: sigma must be symmetric (a covariance), got entries that "
                         f"differ from their transpose by {asymmetry:.3g}")  # fmt: skip
    if scale == 0:  # all zeros: identical feature vectors, a (degenerate) covariance
        return
    shift = PSD_TOLERANCE * max(float(np.diag(sigma).max()), 0.0)
    try:
        np.linalg.cholesky(sigma + shift * np.eye(len(sigma)))
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{where}: sigma must be positive semi-definite (a covariance), got "
            "negative eigenvalues"
        ) from None


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
    return clamped(float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrt))


def clamped(distance: float) -> float:
    """A squared distance that rounding took below 0 is 0 (NaN stays NaN)."""
    return 0.0 if distance < 0 else distance
