"""Files shipped inside the package: the small pretrained digits pipeline.

``digits/`` is a diffusers PNDMPipeline folder (1-channel 16x16 UNet2DModel + PNDMScheduler)
trained with ``pndm train``; docs/shipped-model.md gives the exact command.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_MODEL_NAME = "digits"


def shipped_model_path() -> Path:
    """The folder of the shipped digits pipeline (a real directory in any unzipped install)."""
    return Path(str(files(__name__) / SHIPPED_MODEL_NAME))


def model_folder(model: str | Path | None) -> Path:
    """``--model``'s folder, checked to exist, or the shipped digits pipeline when None."""
    if model is None:
        return shipped_model_path()
    if not Path(model).is_dir():
        raise FileNotFoundError(f"model folder not found: {model}")
    return Path(model)
