"""JSON files as diffusers writes them (indent 2, sorted keys), and the one bounded JSON reader:
every JSON file pndm reads (configs, model_index.json, pndm.json, grid files, safetensors
headers) is a regular file of at most `MAX_JSON_BYTES`, nested at most `MAX_JSON_DEPTH` deep,
with finite numbers and unique keys; anything else is one line naming the file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from pndm.files import PathLike
from pndm.files.atomic import atomic_write
from pndm.files.reading import MiB, read_regular

MAX_JSON_BYTES = 16 * MiB
MAX_JSON_DEPTH = 32  # pndm's own files nest 3 deep; json's parser recurses (RecursionError)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_text(data: dict[str, Any]) -> str:
    """``data`` as diffusers writes it: indent 2, sorted keys, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as `json_text` (diffusers' layout), atomically."""
    text = json_text(data)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: PathLike, what: str = "config file") -> dict[str, Any]:
    """The JSON object in ``path``, read bounded (module doc); ``what`` names the file in errors."""
    path = Path(path)
    data = read_regular(path, what=what, limit=MAX_JSON_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    value = parse_json(text, str(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def nesting_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    return int(np.cumsum(_STEP[np.frombuffer(brackets, np.uint8)], dtype=np.int64).max())


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` of ``text`` within the module's bounds; ``where`` names its source."""
    depth = nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} must nest at most {MAX_JSON_DEPTH} levels deep, got {depth}")
    try:
        return json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique
        )
    except _Refused as err:
        raise ValueError(f"{where} {err}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, int digit limit
        raise ValueError(f"{where} is not valid JSON: {err}") from None


class _Refused(ValueError):
    """A value JSON allows and pndm does not; the message follows the file's name."""


def _no_constant(name: str) -> float:
    raise _Refused(f"must hold finite numbers, got {name}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"must hold finite numbers, got {text}")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _Refused(f"must name each key once, got {key!r} twice")
        data[key] = value
    return data
