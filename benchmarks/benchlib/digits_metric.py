"""The digits metric (`pndm fid ... digits`) of samples, its network and statistics loaded once."""

from __future__ import annotations

import functools
from typing import Any

import torch


def digits_score(x: torch.Tensor) -> float:
    """The digits metric (`pndm fid ... digits`) of samples in [-1, 1], rounded to uint8 first."""
    from pndm.images import to_uint8
    from pndm.metrics import core as metric
    from pndm.metrics import frechet_distance, statistics_of

    extractor, reference = _digits_metric()
    images = to_uint8(((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    features = metric.features(images, extractor, 250, False)
    return frechet_distance(statistics_of(features), reference)


@functools.cache
def _digits_metric() -> tuple[Any, Any]:
    """(the digits feature network, the data's statistics), loaded once."""
    from pndm.metrics import core as metric
    from pndm.metrics import load_statistics

    extractor = metric.extractor("digits", torch.device("cpu"))
    return extractor, load_statistics(metric.SHIPPED["digits"])


def class_accuracy(x: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of samples (in [-1, 1], rounded to uint8 first) that the shipped digits
    classifier (`pndm.metrics.digits`) reads as their requested label."""
    from pndm.images import to_uint8
    from pndm.metrics.digits import to_input

    net = _classifier()
    images = to_uint8(((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        predicted = net.classifier(net(to_input(images))).argmax(1)
    return float((predicted == labels).float().mean())


@functools.cache
def _classifier() -> Any:
    from pndm.metrics.digits import load_network

    return load_network()
