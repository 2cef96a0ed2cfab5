"""Train the digits metric's feature network and write it with the digits statistics.

    python -m pndm.metrics.digits_train --out src/pndm/assets/digits_metric [--overwrite]

Data: scikit-learn's 1797 digits with the shipped model's preprocessing (bicubic 8 -> 16, clamp,
[-1, 1]), then rounded to uint8 as every sample is before it is scored. A seeded split holds out
300 images for the accuracy; training shifts images by up to one pixel. Deterministic for a seed
on one torch build and thread count. The statistics are those of all 1797 images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pndm.files.weights import save_state_dict
from pndm.images import to_uint8
from pndm.metrics.digits import NAME, SIZE, DigitsFeatures, to_input
from pndm.metrics.frechet import frechet_distance, save_statistics, statistics_of
from pndm.train.data import load_digits

HELD_OUT = 300


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as uint8 (N, 16, 16, 1), as the shipped model saw them, and their labels."""
    from sklearn.datasets import load_digits as sk_load_digits

    x = load_digits(SIZE).permute(0, 2, 3, 1).numpy()
    return to_uint8((x + 1) / 2), sk_load_digits().target


def _shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in x and y (background -1 fills the gap)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + SIZE, dx : dx + SIZE]


def fit(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> DigitsFeatures:
    """Adam (lr 2e-3), batch 64, cross-entropy on the classifier's logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the initial weights, without touching the caller's RNG
        torch.manual_seed(seed)
        net = DigitsFeatures()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            logits = net.classifier(net(_shifted(x[index], generator)))
            loss = F.cross_entropy(logits, y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


@torch.no_grad()
def summary(net: DigitsFeatures, x: torch.Tensor, y: torch.Tensor, held: torch.Tensor) -> dict:
    """Held-out accuracy and the metric's floor: the distance between two halves of the data."""
    features = net(x).double().numpy()
    accuracy = (net.classifier(net(x[held])).argmax(1) == y[held]).double().mean()
    halves = torch.randperm(len(x), generator=torch.Generator().manual_seed(1)).chunk(2)
    a, b = (statistics_of(features[h.numpy()]) for h in halves)
    return {"held_out_accuracy": float(accuracy), "half_vs_half": frechet_distance(a, b)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    outputs = [args.out / "features.safetensors", args.out / "digits_stats.npz"]
    if not args.overwrite and any(p.exists() for p in outputs):
        parser.error(f"{args.out} holds the metric's files; add --overwrite to replace them")
    torch.set_num_threads(1)
    images, labels = digits_images()
    x, y = to_input(images), torch.from_numpy(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    held, train = order[:HELD_OUT], order[HELD_OUT:]
    net = fit(x[train], y[train], args.epochs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_state_dict(outputs[0], net.state_dict())
    with torch.no_grad():
        stats = statistics_of(net(x).double().numpy(), NAME)
    save_statistics(outputs[1], stats, replace=True)
    result = summary(net, x, y, held)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
