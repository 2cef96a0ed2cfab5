"""Tensor files read safely and bounded: safetensors, its header (an 8-byte length, then JSON)
checked against the file's size before any tensor is made, and torch's pickles (``.bin``,
``.pt``, ``.ckpt``, ``.pth``) through ``torch.load(weights_only=True)`` only. Both are regular
files of at most `MAX_TENSOR_FILE_BYTES`, read from the descriptor that was checked. pndm never
unpickles code: a pickle that needs it is refused with how to convert it to safetensors."""

from __future__ import annotations

import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from pndm.files.jsonfile import MAX_JSON_BYTES, parse_json
from pndm.files.reading import GiB, open_regular, quoted, read_regular

MAX_TENSOR_FILE_BYTES = 16 * GiB
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.DOTALL)
CONVERT = (
    "load it where you trust its source and save the tensors with safetensors: "
    "safetensors.torch.save_file(state_dict, 'model.safetensors')"
)


def read_safetensors(path: Path, what: str = "weights") -> dict[str, Any]:
    """The tensors of a safetensors file (on the CPU), once `check_safetensors` holds."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_regular(path, what=what, limit=MAX_TENSOR_FILE_BYTES)
    check_safetensors(data, f"{what} {path}")
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"cannot read {what} {path} (truncated or corrupt?): {quoted(err)}"
        ) from None


def check_safetensors(data: bytes, where: str) -> None:
    """The header's length fits the file, its JSON is bounded (`parse_json`), and each tensor's
    dtype, shape and byte range agree and lie inside the file."""
    if len(data) < 8:
        raise ValueError(f"{where} must be a safetensors file, got {len(data)} bytes")
    length = int.from_bytes(data[:8], "little")
    if length > min(len(data) - 8, MAX_JSON_BYTES):
        raise ValueError(f"{where} must hold the {length}-byte header it declares, got a file "
                         f"of {len(data)} bytes (truncated or not safetensors)")  # fmt: skip
    try:
        header = parse_json(data[8 : 8 + length].decode("utf-8"), f"{where}: the header")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: the header must be UTF-8 JSON (not safetensors?)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: the header must be a JSON object, got {type(header).__name__}")
    body = len(data) - 8 - length
    for name, entry in header.items():
        if name != "__metadata__":
            _check_entry(name, entry, body, where)


def _check_entry(name: str, entry: Any, body: int, where: str) -> None:
    """One tensor's header entry: {"dtype", "shape", "data_offsets": [begin, end]} in the body."""
    ok = isinstance(entry, dict) and str(entry.get("dtype")) in DTYPE_BYTES
    shape, offsets = (entry.get(k) if ok else None for k in ("shape", "data_offsets"))
    ok = ok and _naturals(shape) and _naturals(offsets) and len(offsets) == 2
    if ok:
        begin, end = offsets
        size = math.prod(shape) * DTYPE_BYTES[entry["dtype"]]
        ok = begin <= end <= body and end - begin == size
    if not ok:
        got = repr(entry)[:200]
        raise ValueError(
            f"{where}: tensor {name!r} must have a known dtype and a shape that fits its bytes "
            f"inside the file, got {got}"
        )


def _naturals(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    )


def read_torch(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of ``path`` on the CPU: tensors, numbers, strings and
    containers, never code; one line naming the file for anything else."""
    import torch

    with open_regular(path, what=what, limit=MAX_TENSOR_FILE_BYTES) as f, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # zip, storage and pickle errors: all mean "unreadable"
            raise ValueError(_refusal(path, what, err)) from None


def _refusal(path: Path, what: str, err: BaseException) -> str:
    """Why ``path`` cannot be read, never quoting torch's advice to unpickle it unsafely."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        return (f"cannot read {what} {path}: it holds Python objects ({found[1]}), and pndm "
                f"never unpickles code; {CONVERT}")  # fmt: skip
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "pickle" in text:
        detail = _DETAIL.search(text)
        why = quoted(detail[1]) if detail else ""
        why = why if why and "weights_only" not in why else type(err).__name__
        return (f"cannot read {what} {path} (truncated or corrupt, or not tensors: {why}); pndm "
                f"never unpickles code; {CONVERT}")  # fmt: skip
    return f"cannot read {what} {path} (truncated or corrupt?): {quoted(err)}"
