"""Classifier-free guidance (Ho & Salimans 2022) of a class-conditional model, and the class labels
of images.

Guided output: o~ = o_u + w (o_c - o_u), with o_c the model's output for the image's class and o_u
for the "no class" label it was trained with (label dropout), both from one batched call; w = 1 is
the conditional model alone and w = 0 the unconditional one (each one call of the batch). The
output is guided before it is converted to ε (`pndm.wrapper`): the conversion is linear in the
output at a fixed (x, t), so guiding ε, v or x̂_0 is the same. The solver sees only the guided ε.

A class label per image is an int, the same int for every image, or ``"random"``: each image's
label drawn from its own seed (a stream apart from its noise), so a folder resumed, extended or
sampled by several ranks gets the same labels. A model's folder may record its class names (index =
label; `pndm train --conditional` records its class folders' names): a name stands for its label.
"""

from __future__ import annotations

import numbers
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pndm.checks import check_count, check_number, shown
from pndm.wrapper import model_output

NULL_LABEL_KEY = "_null_class_label"  # model_index.json: diffusers ignores "_" keys when loading
CLASS_NAMES_KEY = "_class_names"  # model_index.json likewise: the name of each label, in order

RANDOM = "random"
LABEL_STREAM = 0x6C61_6265  # a seed's label stream, independent of its noise stream
MAX_GUIDANCE = 100.0  # far above any useful scale (7.5 is Stable Diffusion's default)
MAX_RECORDED_CLASSES = 100_000  # beyond any class-conditional model's table (ImageNet-21k: 21,841)
MAX_CLASS_NAMES = 1000  # ImageNet's count, and the most classes `pndm train` takes
MAX_NAME_CHARS = 255  # a file name's limit: class names are class folders' names
MAX_LISTED = 20  # names an error message lists
Labels = int | str | Sequence[int | str] | None
ModelFn = Callable[..., Any]


def check_guidance_scale(scale: Any) -> float:
    """A guidance scale w in [0, MAX_GUIDANCE] (1: no guidance)."""
    return check_number("guidance_scale", scale, 0.0, MAX_GUIDANCE)


def batch_factor(conditional: bool, scale: float) -> int:
    """Model inputs per image: 2 under guidance (the conditional and "no class" halves), 1 at
    w = 1 (conditional alone) and w = 0 (unconditional alone)."""
    return 2 if conditional and scale not in (0, 1) else 1


def label_of_seed(seed: int, num_classes: int) -> int:
    """The class label ``"random"`` gives the image of ``seed``: uniform over the classes."""
    return int(np.random.default_rng([int(seed), LABEL_STREAM]).integers(num_classes))


def image_labels(
    labels: Labels,
    seeds: Sequence[int] | None,
    count: int,
    num_classes: int,
    names: Sequence[str] | None = None,
) -> list[int] | None:
    """One label per image (a list), or None for an unconditional run: ``labels`` is a label
    for every image, a list of ``count`` labels, or ``"random"`` (needs ``seeds``); a label is an
    int or one of the model's class ``names`` (`label_index`)."""
    if labels is None:
        return None
    if isinstance(labels, str) and labels == RANDOM:
        if seeds is None:
            raise ValueError(
                "class_labels='random' draws each label from its image's seed: pass seeds"
            )
        return [label_of_seed(seed, num_classes) for seed in seeds]
    if isinstance(labels, torch.Tensor | np.ndarray):
        labels = labels.tolist()
    many = isinstance(labels, Sequence) and not isinstance(labels, str)
    chosen = list(labels) if many else [labels] * count
    if len(chosen) != count:
        raise ValueError(f"class_labels has {len(chosen)} entries for {count} images")
    index = {} if names is None else {name: label for label, name in enumerate(names)}
    return [label_index(label, num_classes, index) for label in chosen]


def label_index(label: Any, num_classes: int, names: dict[str, int]) -> int:
    """The class label ``label`` names: an int in [0, num_classes), or a key of ``names`` (a
    model's class names, each to its label; empty when it records none)."""
    if not isinstance(label, str):
        return check_count("class label", label, 0, num_classes - 1)
    if label in names:
        return names[label]
    ints = f"an int in [0, {num_classes - 1}]"
    if names:
        valid = f"{ints}, 'random' or a class name of the model ({_listed(list(names))})"
    else:
        valid = f"{ints} or 'random' (the model records no class names)"
    raise ValueError(f"class_labels must be {valid}, got {shown(label)}")


def _listed(names: list[str]) -> str:
    """The first `MAX_LISTED` names, each cut short, and how many there are."""
    text = ", ".join(shown(name, 40) for name in names[:MAX_LISTED])
    return text if len(names) <= MAX_LISTED else f"{text}, ... ({len(names)} in all)"


def guided(model: ModelFn, labels: torch.Tensor, null_label: int | None, scale: float) -> ModelFn:
    """``model(x, t, class_labels=...)`` as a function of (x, t) under guidance scale ``scale``
    with ``labels`` (one per image); ``null_label`` is the "no class" label (an int unless
    ``scale`` is 1: `Conditioning.of` checks it)."""
    if scale in (0, 1):  # one half alone: the conditional or the "no class" one
        alone = labels if scale == 1 else torch.full_like(labels, null_label)
        return lambda x, t: model(x, t, class_labels=alone)
    both = torch.cat([labels, torch.full_like(labels, null_label)])

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_output(model(torch.cat([x, x]), _twice(t), class_labels=both))
        # combined in at least float32: w multiplies the rounding of c - u in a half model dtype
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        conditional, unconditional = out.chunk(2)
        return unconditional + scale * (conditional - unconditional)

    return call


def _twice(t: torch.Tensor) -> torch.Tensor:
    """The times of the doubled batch; a stride-0 time (one for all) stays one, a 0-d one too."""
    if t.ndim == 0:
        return t
    if t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1].expand(2 * t.shape[0])
    return torch.cat([t, t])


def num_classes(config: Any, null_label: int | None) -> int:
    """The classes a model's labels may name: its embedding table's rows, less the "no class"
    row (the last, as `pndm train --conditional` and DiT-style label dropout make it)."""
    if not has_class_table(config):
        raise ValueError(
            "class_labels needs a class-conditional model with an embedding table "
            "(unet.config.num_class_embeds); this UNet has none"
        )
    classes = config["num_class_embeds"] - (null_label is not None)
    if classes < 1:
        raise ValueError(f"unet.config.num_class_embeds leaves no class: {classes + 1} rows")
    return classes


def has_class_table(config: Any) -> bool:
    """Whether a UNet config's class labels index an embedding table (diffusers' default type)."""
    rows = config.get("num_class_embeds")
    return rows is not None and config.get("class_embed_type") is None


def check_null_label(config: Any, null_label: Any, name: str = "null_class_label") -> int | None:
    """None, or the "no class" label of a model: the last row of its class embedding table;
    ``name`` names it in the error (a file's field)."""
    if null_label is None:
        return None
    rows = config.get("num_class_embeds")
    if rows is None or rows < 2 or null_label != rows - 1 or isinstance(null_label, bool):
        raise ValueError(
            f"{name} must be the last class embedding, num_class_embeds - 1 "
            f"({'none: the model has no class embedding' if rows is None else rows - 1}), "
            f"got {shown(null_label)}"
        )
    return int(null_label)


def check_class_names(
    config: Any, null_label: int | None, names: Any, name: str = "class_names"
) -> tuple[str, ...] | None:
    """None, or a model's class names, index = label: one per class (`num_classes`), at most
    `MAX_CLASS_NAMES`, each a `class_name_problem`-free string, none twice; ``name`` names them
    in the error (a file's field)."""
    if names is None:
        return None
    if not has_class_table(config):
        raise ValueError(f"{name} needs a class-conditional model; its UNet has no class table")
    classes = num_classes(config, null_label)
    if not isinstance(names, list | tuple) or len(names) != classes:
        got = f"{len(names)} entries" if isinstance(names, list | tuple) else shown(names)
        raise ValueError(f"{name} must be a list of {classes} class names, got {got}")
    if classes > MAX_CLASS_NAMES:
        raise ValueError(f"{name} must name at most {MAX_CLASS_NAMES} classes, got {classes}")
    for label, text in enumerate(names):
        problem = class_name_problem(text)
        if problem is not None:
            raise ValueError(f"{name}[{label}] must be {problem}, got {shown(text)}")
    twice = [text for text, count in Counter(names).items() if count > 1]
    if twice:
        raise ValueError(f"{name} must name each class once, got {shown(twice[0])} twice")
    return tuple(names)


def class_name_problem(text: Any) -> str | None:
    """What a class name must be, if ``text`` is not one: a non-empty string of at most
    `MAX_NAME_CHARS` characters, no control character or lone surrogate (they would reach a
    terminal, or fail to encode, when the name is printed)."""
    valid = f"a non-empty string of at most {MAX_NAME_CHARS} characters"
    if not isinstance(text, str) or not 0 < len(text) <= MAX_NAME_CHARS:
        return valid
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return f"{valid} without control characters"
    return None


@dataclass(frozen=True)
class Conditioning:
    """The class labels (one per image; None: unconditional) and guidance scale of a run."""

    labels: torch.Tensor | None = None
    null_label: int | None = None
    scale: float = 1.0
    classes: int = 0  # the classes a label may name (`num_classes`); 0 when unconditional

    @classmethod
    def of(
        cls,
        config: Any,
        null_label: int | None,
        class_labels: Labels,
        guidance_scale: Any,
        seeds: Sequence[int] | None,
        count: int,
        class_names: Sequence[str] | None = None,
    ) -> Conditioning:
        """Checked: labels for ``count`` images of a model with ``config`` and ``class_names``
        (see `image_labels`); a scale other than 1 needs labels, and the model's "no class"
        label (`guided`)."""
        scale = check_guidance_scale(guidance_scale)
        if class_labels is None:
            if scale != 1:
                raise ValueError("guidance_scale needs class_labels (guidance is toward a class)")
            if has_class_table(config):
                raise ValueError(
                    "this model is class-conditional: give class_labels (an int, one per image, "
                    "or 'random')"
                )
            return cls()
        classes = num_classes(config, null_label)
        chosen = image_labels(class_labels, seeds, count, classes, class_names)
        if scale != 1 and null_label is None:
            raise ValueError(
                "guidance needs the model's 'no class' label, which its folder does not record "
                f"(model_index.json {NULL_LABEL_KEY!r}); use guidance_scale=1"
            )
        return cls(torch.tensor(chosen, dtype=torch.long), null_label, scale, classes)

    @property
    def batch_factor(self) -> int:
        """Model inputs per image (`batch_factor`)."""
        return batch_factor(self.labels is not None, self.scale)

    def apply(self, model: ModelFn, device: torch.device) -> ModelFn:
        """``model(x, t)`` with these labels and guidance (``model`` itself if unconditional)."""
        if self.labels is None:
            return model
        return guided(model, self.labels.to(device), self.null_label, self.scale)


def conditioning_setting(cond: Conditioning, labels: Labels) -> dict[str, Any] | None:
    """What a sample folder's manifest records of a conditional run (None: unconditional): the
    labels as asked for ("random", or the one label of every image, a class name's as its int),
    the model's class count, the guidance scale."""
    if cond.labels is None:
        return None
    if not isinstance(labels, numbers.Integral | str):
        raise ValueError(
            f"a sample job's class labels must be an int, a class name or 'random', got {labels!r}"
        )
    recorded = labels if labels == RANDOM else int(cond.labels[0])
    return {"class_labels": recorded, "num_classes": cond.classes, "guidance_scale": cond.scale}


def recorded_labels(setting: Any, seeds: Sequence[int], where: str) -> np.ndarray:
    """The class label of each seed's image under a manifest's ``conditioning`` setting (int64),
    every field checked (a hand-edited file is refused naming ``where``)."""
    if not isinstance(setting, dict):
        raise ValueError(f"{where}: settings.conditioning must be an object, got {setting!r}")
    classes, labels = setting.get("num_classes"), setting.get("class_labels")
    if type(classes) is not int or not 1 <= classes <= MAX_RECORDED_CLASSES:
        raise ValueError(
            f"{where}: settings.conditioning.num_classes must be an integer in "
            f"[1, {MAX_RECORDED_CLASSES}], got {classes!r}"
        )
    if labels != RANDOM and (type(labels) is not int or not 0 <= labels < classes):
        raise ValueError(
            f"{where}: settings.conditioning.class_labels must be 'random' or an integer in "
            f"[0, {classes - 1}], got {labels!r}"
        )
    return np.asarray(image_labels(labels, seeds, len(seeds), classes), dtype=np.int64)
