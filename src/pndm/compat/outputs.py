"""Return types shaped like diffusers' ``BaseOutput``: read by attribute, key or index."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image
    import torch


class BaseOutput(Mapping[str, Any]):
    """Base for output dataclasses: ``out.prev_sample``, ``out["prev_sample"]`` and ``out[0]``.

    As in diffusers, fields that are None are left out of the keys and the tuple form.
    """

    def _present(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {k: v for k, v in values.items() if v is not None}

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return self._present()[key]
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def to_tuple(self) -> tuple[Any, ...]:
        """The present values in field order (what ``return_dict=False`` returns)."""
        return tuple(self._present().values())


@dataclass
class ImagePipelineOutput(BaseOutput):
    """``images``: PIL images, a (B, H, W, C) numpy array or a (B, C, H, W) tensor, in [0, 1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
