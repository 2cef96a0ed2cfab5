"""Inception FID through pytorch-fid (the ``fid`` extra): its network, resizing and distance.

Features are pytorch-fid's ``InceptionV3`` pool3 (2048-d) with its own bilinear resize to 299 and
[-1, 1] normalisation, fed what its ``ToTensor`` loader feeds: uint8 / 255. The weights are the file
pytorch-fid downloads, ``pt_inception-2015-12-05-6726825d.pth``; pndm never downloads it. It is read
from ``--inception-weights`` or from the torch hub cache where pytorch-fid keeps it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pndm.files.weights import read_weights
from pndm.metrics.frechet import Statistics, check_same_dims, clamped

NAME = "inception"
FEATURE_DIMS = 2048
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
)


def _pytorch_fid() -> Any:
    try:
        import pytorch_fid.fid_score
        import pytorch_fid.inception
    except (ImportError, RuntimeError, OSError) as err:  # RuntimeError: torchvision != torch
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImportError(
            f"Inception FID needs pytorch-fid and a torchvision built for torch "
            f"{torch.__version__} ({first}); install them with: pip install 'pndm[fid]' "
            f"(or use the offline metric: --features digits)"
        ) from None
    return pytorch_fid


def cached_weights() -> Path:
    """Where pytorch-fid keeps the weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def find_weights(path: Path | None) -> Path:
    """``path``, else the hub cache; one line naming the file to get and where to put it. A name
    that is there but not a regular file is returned: `read_weights` says what it is."""
    if path is not None:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"Inception weights not found: {path} (get {WEIGHTS_URL})")
        return path
    if os.path.lexists(cached_weights()):
        return cached_weights()
    raise FileNotFoundError(
        f"Inception weights not found: download {WEIGHTS_URL} and put it at {cached_weights()}, "
        f"or pass --inception-weights PATH"
    )


@contextlib.contextmanager
def _weights_from(module: Any, state: dict[str, Any]) -> Iterator[None]:
    """pytorch-fid builds its network, then fetches weights by URL: hand it ``state`` instead."""
    fetch = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        module.load_state_dict_from_url = fetch


def load_network(path: Path | None = None) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` (pool3 block) with the weights from `find_weights`."""
    inception = _pytorch_fid().inception
    state = read_weights(find_weights(path))
    block = inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIMS]
    try:
        with _weights_from(inception, state):
            net = inception.InceptionV3([block])
    except RuntimeError as err:  # load_state_dict: missing, unexpected or mis-shaped keys
        first = str(err).splitlines()[0]
        raise ValueError(f"{path or cached_weights()} is not {WEIGHTS_NAME}: {first}") from None
    return net.eval()


def to_input(images: Any) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, 3, H, W) in [0, 1]; greyscale repeated to three channels."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    # Contiguous NCHW like pytorch-fid's loader: the memory layout picks the convolution kernel.
    return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()


def features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 2048) pool3 features."""
    return net(x)[0].flatten(1)


def distance(a: Statistics, b: Statistics) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm``, its own singular fallback)."""
    check_same_dims(a, b)
    fid_score = _pytorch_fid().fid_score
    return clamped(float(fid_score.calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)))
