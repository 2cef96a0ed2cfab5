"""Files shipped inside the package: the small pretrained digits pipelines.

``digits/`` is a diffusers PNDMPipeline folder (1-channel 16x16 UNet2DModel + PNDMScheduler)
trained with ``pndm train``; ``digits-cond/`` the same network class-conditional (10 digits and a
"no class" label, for classifier-free guidance), trained with ``pndm train --conditional``.
docs/shipped-model.md gives the exact commands.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_MODEL_NAME = "digits"  # the default model
SHIPPED_MODELS = ("digits", "digits-cond")  # what ``--model NAME`` finds inside the package


def shipped_model_path(name: str = SHIPPED_MODEL_NAME) -> Path:
    """The folder of a shipped pipeline (a real directory in any unzipped install)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"shipped model must be one of {', '.join(SHIPPED_MODELS)}, got {name!r}")
    return Path(str(files(__name__) / name))


def model_folder(model: str | Path | None) -> Path:
    """``--model``'s folder: an existing folder as given, else a shipped model's name
    (`SHIPPED_MODELS`), else an error naming both; None: the shipped digits pipeline."""
    if model is None:
        return shipped_model_path()
    if Path(model).is_dir():
        return Path(model)
    if str(model) in SHIPPED_MODELS:
        return shipped_model_path(str(model))
    raise FileNotFoundError(
        f"model folder not found: {model} (or give a shipped model: {', '.join(SHIPPED_MODELS)})"
    )
