"""The small DDPM trainer of ``pndm train``: ``train(TrainConfig(...))`` writes a pipeline folder.

Names load lazily, so that ``pndm --help`` (which reads `TrainConfig`'s defaults) imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pndm._lazy import lazy_getattr

_EXPORTS = {"TrainConfig": "pndm.train.config", "train": "pndm.train.loop"}
__all__ = ["TrainConfig", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from pndm.train.config import TrainConfig
    from pndm.train.loop import train

__getattr__ = lazy_getattr(globals(), _EXPORTS)
