"""Model weights: found by name (safetensors preferred over ``.bin``), read bounded without
executing pickled code (`pndm.files.tensorfile`), written atomically, and checked key by key
against a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pndm.files import PathLike
from pndm.files.atomic import atomic_write
from pndm.files.tensorfile import read_safetensors, read_torch

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
LEGACY_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
_LIST_AT_MOST = 10


def weights_names(variant: str | None = None) -> list[str]:
    """Weight file names in order of preference (safetensors first), e.g. ``*.fp16.safetensors``."""
    names = [WEIGHTS_NAME, LEGACY_WEIGHTS_NAME]
    if variant:
        names = [name.replace(".", f".{variant}.", 1) for name in names]
    return names


def find_weights(folder: PathLike, variant: str | None = None) -> Path:
    """The preferred weight file in ``folder``; the error names every file looked for. A name
    that is there but not a regular file is returned: `read_weights` says what it is."""
    folder = Path(folder)
    for name in weights_names(variant):
        if os.path.lexists(folder / name):
            return folder / name
    looked = " or ".join(weights_names(variant))
    raise FileNotFoundError(f"no weights in {folder}: looked for {looked}")


def read_weights(path: PathLike) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file, or of a torch pickle (``.bin``, ``.pth``) read with
    ``weights_only=True`` (`pndm.files.tensorfile`): bounded, never executing pickled code;
    a missing, truncated or corrupt file is one line naming it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = read_safetensors(path, what="weights")
    else:
        state = read_torch(path, what="weights")
    if not isinstance(state, dict):
        raise ValueError(f"{path} must hold a dict of tensors, got {type(state).__name__}")
    return state


def load_state_dict(folder: PathLike, variant: str | None = None) -> dict[str, Any]:
    """The weights in ``folder``: ``diffusion_pytorch_model.safetensors``, else ``.bin``."""
    return read_weights(find_weights(folder, variant))


def save_state_dict(path: PathLike, state: dict[str, Any]) -> None:
    """Write tensors atomically: safetensors unless ``path`` ends in ``.bin`` (``torch.save``)."""
    path = Path(path)
    tensors = {key: value.detach().contiguous() for key, value in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    else:
        import torch

        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    more = f" ... and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_state_dict(
    state: dict[str, Any], expected: dict[str, tuple[int, ...]], source: PathLike
) -> None:
    """Raise one ``ValueError`` naming missing, unexpected and mis-shaped weights, if any."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} (model wants {tuple(shape)})"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != tuple(shape)
    ]
    if not (missing or unexpected or wrong):
        return
    groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
    report = "".join(_listing(title, items) for title, items in groups if items)
    raise ValueError(f"weights in {source} do not fit the model config:{report}")
