"""The class labels of a conditional run (``TrainConfig.conditional``): each training image's
class, and label dropout.

Classifier-free guidance (Ho & Salimans 2022, Algorithm 1) trains one model both ways: each
example's label becomes the "no class" label with probability p_uncond (``label_dropout``), so
the same network learns ε(x, t, c) and ε(x, t, ∅). The "no class" label is the last row of the
UNet's label table, ``classes`` (`pndm.guidance.check_null_label`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from pndm.train.config import TrainConfig
from pndm.train.data import image_files, sklearn_digits

MAX_CLASSES = 1000  # ImageNet's count: a larger label table is no dataset this trainer fits
DIGITS_CLASSES = 10


class ClassLabels(NamedTuple):
    """One label per training image (in `pndm.train.data.load_dataset`'s order) and the number
    of classes; ``classes`` itself is the "no class" label."""

    values: torch.Tensor  # int64, (N,)
    classes: int

    @property
    def null_label(self) -> int:
        return self.classes


def load_labels(config: TrainConfig) -> ClassLabels | None:
    """None unless ``config.conditional``; the digits' labels are scikit-learn's ``target``
    (0-9), a folder's are its immediate subfolders, one class each in sorted order."""
    if not config.conditional:
        return None
    if config.data == "digits":
        target = torch.from_numpy(sklearn_digits().target).long()
        return ClassLabels(target, DIGITS_CLASSES)
    return folder_labels(Path(config.data))


def folder_labels(folder: Path) -> ClassLabels:
    """Labels of DATA/CLASS/.../image.png: the index of CLASS among the sorted subfolders."""
    files = image_files(folder)
    loose = [p for p in files if p.parent == folder]
    if loose:
        raise ValueError(
            f"--conditional needs one subfolder per class ({folder}/CLASS/image.png), but "
            f"{len(loose)} images lie directly in {folder} (e.g. {loose[0].name})"
        )
    names = sorted({p.relative_to(folder).parts[0] for p in files})
    if len(names) > MAX_CLASSES:
        raise ValueError(
            f"{folder} has {len(names)} class subfolders; --conditional takes at most {MAX_CLASSES}"
        )
    empty = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in names)
    if empty:
        raise ValueError(
            f"class folder {folder / empty[0]} holds no PNG or JPEG images (left out, it would "
            "shift the labels of the classes after it); remove it or add images"
        )
    index = {name: i for i, name in enumerate(names)}
    values = torch.tensor([index[p.relative_to(folder).parts[0]] for p in files])
    return ClassLabels(values, len(names))


def drop_labels(
    labels: torch.Tensor, dropout: float, null_label: int, generator: torch.Generator
) -> torch.Tensor:
    """Each label replaced by ``null_label`` with probability ``dropout``: one uniform draw per
    label from ``generator``."""
    dropped = torch.rand(labels.shape, generator=generator) < dropout
    return labels.masked_fill(dropped, null_label)
