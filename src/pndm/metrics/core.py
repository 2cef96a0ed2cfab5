"""Fréchet distance between a sample set and a reference, in Inception or digits feature space.

A reference is a statistics .npz (pytorch-fid's ``mu``/``sigma``), another sample set (folder or
.npz ``arr_0``), or the name of statistics shipped with pndm (`SHIPPED`). The feature space is the
reference's own when its file names one (pndm writes ``features``), else ``inception``, the space
of published statistics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pndm.checks import check_choice, check_count
from pndm.files import PathLike
from pndm.files.npz import open_npz
from pndm.metrics import digits, inception, names
from pndm.metrics.frechet import Statistics, frechet_distance, load_statistics, statistics_of
from pndm.metrics.names import DEFAULT_BATCH_SIZE, FEATURES
from pndm.metrics.samples import MAX_SAMPLE_BYTES, load_samples
from pndm.runtime.devices import resolve_device

SHIPPED = {name: digits.asset_path(f"{name}_stats.npz") for name in names.SHIPPED}
DIMS = {inception.NAME: inception.FEATURE_DIMS, digits.NAME: digits.FEATURE_DIMS}
# The Fréchet distance of each feature space: pytorch-fid's for Inception (the field's numbers).
DISTANCES = {inception.NAME: inception.distance, digits.NAME: frechet_distance}


@dataclass(frozen=True)
class Extractor:
    """A feature network and how to feed it: uint8 NHWC -> input tensor -> (N, dims) features."""

    name: str
    dims: int
    net: torch.nn.Module
    to_input: Callable[[np.ndarray], torch.Tensor]
    features: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    distance: Callable[[Statistics, Statistics], float]


def extractor(name: str, device: torch.device, inception_weights: Path | None = None) -> Extractor:
    """The feature network called ``name`` (one of `FEATURES`) on ``device``."""
    if name == inception.NAME:
        net = inception.load_network(inception_weights).to(device)
        return Extractor(
            name, DIMS[name], net, inception.to_input, inception.features, DISTANCES[name]
        )
    if name == digits.NAME:
        net = digits.load_network().to(device)
        return Extractor(name, DIMS[name], net, digits.to_input, lambda n, x: n(x), DISTANCES[name])
    check_choice("features", name, FEATURES)
    raise AssertionError("unreachable")  # pragma: no cover


@torch.inference_mode()
def features(images: np.ndarray, ex: Extractor, batch_size: int, progress: bool) -> np.ndarray:
    """(N, dims) float64 features of uint8 NHWC ``images``, computed in batches on ex's device."""
    from pndm.runtime.progress import progress_bar

    device = next(ex.net.parameters()).device
    ex.to_input(images[:1])  # refuses a wrong image size before any work
    out = np.empty((len(images), ex.dims))
    bar = progress_bar(len(images), "img", progress)
    with bar:
        for start in range(0, len(images), batch_size):
            batch = ex.to_input(images[start : start + batch_size]).to(device)
            out[start : start + len(batch)] = ex.features(ex.net, batch).double().cpu().numpy()
            bar.update(len(batch))
    return out


def statistics(images: np.ndarray, ex: Extractor, batch_size: int, progress: bool) -> Statistics:
    """Mean and covariance of the features of uint8 NHWC ``images``."""
    return statistics_of(features(images, ex, batch_size, progress), ex.name)


def reference(ref: PathLike) -> Statistics | Path:
    """Shipped statistics by name, a statistics file, or the path of a sample set."""
    path = Path(ref)
    if str(ref) in SHIPPED:
        if path.exists():
            warnings.warn(
                f"using pndm's shipped {ref!r} statistics, not {path.resolve()}; write "
                f"./{ref} for the path", stacklevel=2,
            )  # fmt: skip
        return load_statistics(SHIPPED[str(ref)])
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(
            f"reference not found: {ref} (give a statistics .npz with mu and sigma, a sample "
            f".npz or folder, or a shipped name: {', '.join(SHIPPED)})"
        )
    return statistics_or_samples(path)


def statistics_or_samples(path: Path) -> Statistics | Path:
    """The statistics in ``path`` if it is an .npz with ``mu``, else ``path`` (a sample set)."""
    if path.is_dir() or path.suffix.lower() != ".npz":
        return path
    with open_npz(path, what="samples", limit=MAX_SAMPLE_BYTES) as archive:
        is_statistics = "mu" in archive.members
    return load_statistics(path) if is_statistics else path


def feature_space(
    ref: Statistics | Path | None, features: str | None, samples: Statistics | Path | None = None
) -> str:
    """``features`` if given (checked against the statistics' own), else the statistics' own,
    else Inception's."""
    if features is not None and features not in FEATURES:
        check_choice("features", features, FEATURES)
    named = {s.features for s in (samples, ref) if isinstance(s, Statistics) and s.features}
    if len(named) > 1:
        raise ValueError(f"{' and '.join(sorted(named))} statistics cannot be compared with "
                         "each other: give statistics of the same features")  # fmt: skip
    own = named.pop() if named else None
    if features is not None and own is not None and own != features:
        raise ValueError(f"{own} statistics cannot be compared in {features} features (drop "
                         f"--features or choose {own})")  # fmt: skip
    return features or own or inception.NAME


def _check_dims(ref: Statistics, name: str) -> None:
    if ref.dims != DIMS[name]:
        raise ValueError(
            f"the reference statistics are {ref.dims}-dimensional but {name} features are "
            f"{DIMS[name]}-dimensional: give statistics of {name} features"
        )


def fid(
    samples: PathLike,
    ref: PathLike,
    *,
    features: str | None = None,
    inception_weights: PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> float:
    """The Fréchet distance between ``samples`` (a folder or .npz) and ``ref`` (see module doc)."""
    batch_size = check_count("batch_size", batch_size)
    target, source = reference(ref), statistics_or_samples(Path(samples))
    name = feature_space(target, features, source)
    given = [s for s in (source, target) if isinstance(s, Statistics)]
    for stats in given:
        _check_dims(stats, name)  # before the network loads
    if len(given) == 2:  # two statistics files: no images, so no feature network
        return DISTANCES[name](source, target)
    ex = _extractor(name, device, inception_weights)
    sets = [s if isinstance(s, Statistics) else load_samples(s) for s in (source, target)]
    mine, theirs = (
        s if isinstance(s, Statistics) else statistics(s, ex, batch_size, progress) for s in sets
    )
    return ex.distance(mine, theirs)


def sample_statistics(
    samples: PathLike,
    *,
    features: str = inception.NAME,
    inception_weights: PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> Statistics:
    """The feature statistics of a sample set (what ``--save-stats`` writes)."""
    batch_size = check_count("batch_size", batch_size)
    ex = _extractor(feature_space(None, features), device, inception_weights)
    return statistics(load_samples(Path(samples)), ex, batch_size, progress)


def _extractor(name: str, device: str, weights: PathLike | None) -> Extractor:
    return extractor(name, resolve_device(device), None if weights is None else Path(weights))


def describe(stats: Statistics) -> str:
    """'N images, d-d NAME features': what a statistics file holds."""
    return f"{stats.count} images, {stats.dims}-d {stats.features} features"
