"""JSON files as diffusers writes them (indent 2, sorted keys), read with errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pndm.files import PathLike
from pndm.files.atomic import atomic_write


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
