"""Reading and writing diffusers folders: JSON configs and safetensors weights, atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike
# What a diffusers PNDMPipeline folder holds; model_index.json is written last and marks completion.
PIPELINE_ENTRIES = ("model_index.json", "unet", "scheduler")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[Path], None], *, replace: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and move it into place, durably.

    A reader never sees a half-written file, an interrupted write leaves no debris, and the file
    and its folder entry are on disk when this returns (fsync before and after the rename).
    With ``replace=False`` a file that appeared at ``path`` meanwhile is left as it is: the new
    file is kept under a visible sibling name, which the ``FileExistsError`` names.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        _fsync(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists (link(2) never replaces; where a
    file system has no hard links, a check just before the rename)."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError:  # no hard links here (e.g. FAT, some FUSE mounts)
        if not path.exists():
            os.replace(tmp, path)
            return
    kept = path.with_name(f"{path.stem}.new-{tmp.name.rsplit('.', 2)[-2]}{path.suffix}")
    os.replace(tmp, kept)
    raise FileExistsError(
        f"{path} appeared while pndm was writing it and was left as it is; the new file is "
        f"{kept} (pass --overwrite to replace existing files)"
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root and for
    read-only file systems, where permission bits say nothing."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".pndm-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder}: {err.strerror}") from None


def write_json(path: PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as diffusers does (indent 2, sorted keys, trailing newline), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: PathLike) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def component_dir(folder: PathLike, subfolder: str | None, filename: str) -> Path:
    """The directory holding ``filename`` for a component.

    Looks in ``folder/subfolder`` (the pipeline layout), then in ``folder`` itself (the flat hub
    layout of e.g. google/ddpm-cifar10-32), and names both places when neither has it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    candidates = [folder / subfolder, folder] if subfolder else [folder]
    for candidate in candidates:
        if (candidate / filename).is_file():
            return candidate
    looked = " or ".join(str(c / filename) for c in candidates)
    raise FileNotFoundError(f"no {filename} in {folder}: looked for {looked}")


# --- model weights -------------------------------------------------------------------------------

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
    """The preferred weight file in ``folder``; the error names every file looked for."""
    folder = Path(folder)
    for name in weights_names(variant):
        if (folder / name).is_file():
            return folder / name
    looked = " or ".join(weights_names(variant))
    raise FileNotFoundError(f"no weights in {folder}: looked for {looked}")


def read_weights(path: PathLike) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file, or of a ``.bin`` via ``torch.load(weights_only=True)``.

    Truncated or corrupt files raise ``ValueError`` naming the file. Never executes pickled code.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors/pickle/zip errors: all mean "unreadable file"
        raise ValueError(f"cannot read weights {path} (truncated or corrupt?): {err}") from err
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


def remove_entries(folder: PathLike, names: tuple[str, ...] = PIPELINE_ENTRIES) -> None:
    """Remove the named files or folders of ``folder`` (ours only; other files stay)."""
    for name in names:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
