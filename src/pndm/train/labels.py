"""The class labels of a conditional run (``TrainConfig.conditional``): each training image's
class, and label dropout.

Classifier-free guidance (Ho & Salimans 2022, Algorithm 1) trains one model both ways: each
example's label becomes the "no class" label with probability p_uncond (``label_dropout``), so
the same network learns ε(x, t, c) and ε(x, t, ∅). The "no class" label is the last row of the
UNet's label table, ``classes`` (`pndm.guidance.check_null_label`). The model's folder records
each label's name (`pndm.guidance.check_class_names`): a digit, or its class folder's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from pndm.checks import shown
from pndm.guidance import MAX_CLASS_NAMES, class_name_problem
from pndm.train.config import TrainConfig
from pndm.train.data import image_files, sklearn_digits

MAX_CLASSES = MAX_CLASS_NAMES  # ImageNet's count: a larger label table is no dataset this fits
DIGITS_NAMES = tuple(str(digit) for digit in range(10))


class ClassLabels(NamedTuple):
    """One label per training image (in `pndm.train.data.load_dataset`'s order) and the name of
    each class (index = label); the number of classes is itself the "no class" label."""

    values: torch.Tensor  # int64, (N,)
    names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return len(self.names)

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
        return ClassLabels(target, DIGITS_NAMES)
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
    _check_names(folder, names)
    index = {name: i for i, name in enumerate(names)}
    values = torch.tensor([index[p.relative_to(folder).parts[0]] for p in files])
    return ClassLabels(values, tuple(names))


def _check_names(folder: Path, names: list[str]) -> None:
    """Each class folder's name is the class's name in the model's folder: refused here, before
    any work, if the model could not record it."""
    for name in names:
        problem = class_name_problem(name)
        if problem is not None:
            raise ValueError(
                f"class folder {shown(str(folder / name))} cannot name a class: a class name "
                f"must be {problem}; rename the folder"
            )


def drop_labels(
    labels: torch.Tensor, dropout: float, null_label: int, generator: torch.Generator
) -> torch.Tensor:
    """Each label replaced by ``null_label`` with probability ``dropout``: one uniform draw per
    label from ``generator``."""
    dropped = torch.rand(labels.shape, generator=generator) < dropout
    return labels.masked_fill(dropped, null_label)
