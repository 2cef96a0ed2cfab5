"""Tuned time grids on disk: a small versioned JSON file that ``pndm tune`` writes and
``pndm sample --timesteps`` (or ``pipe(timesteps=load_grid(path).timesteps)``) reads.

    {"format": "pndm-timesteps", "version": 1,
     "timesteps": [t_0, ..., t_{N-1}, target],       # the full grid, target included (-1)
     "method": "ipndm", "nfe": 10, "options": {"afs": true},
     "model": {"sha256": "sha256:...", "path": "..."},
     "tuning": {"error": ..., "start_error": ..., "samples": ..., "seed": ..., ...}}

Version 2 adds ``"calibration": {"times": [...], "time_shifts": [...], "eps_scales": [...]}``
(`pndm.calibration.Calibration`, from ``pndm tune --calibrate``); a file without one is written
as version 1, so older readers still take it, and a reader of version 1 never meets a
calibration it would silently ignore.

A file is checked whole when read: the grid (at most `pndm.checks.MAX_STEPS` steps), a
fixed-step method whose NFE on that grid with those options is ``nfe`` (`pndm.samplers.nfe`),
the calibration's bounds; and, read against the model's schedule (``load_grid(path,
schedule)``), the grid's range and final target, the calibrated times, and ``denoise_to_zero``.
A grid suits the model and method it was tuned for; `check_grid` warns (`GridMismatchWarning`)
when either differs. The model is identified by `pndm.compat.folders.model_hash` (its weights by
value and its configs: the same identity a sample folder's manifest records). Importing this
module does not import torch (reading a file does).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pndm.calibration import Calibration, check_calibration
from pndm.files import PathLike
from pndm.files.atomic import atomic_write
from pndm.files.jsonfile import read_json

FORMAT = "pndm-timesteps"
VERSION = 1
CALIBRATED_VERSION = 2  # a file with a calibration
REQUIRED = ("format", "version", "timesteps", "method", "nfe", "options", "model")


class GridMismatchWarning(UserWarning):
    """A grid file used with another model or method than it was tuned for."""


@dataclass(frozen=True)
class GridFile:
    """A loaded grid file; ``timesteps`` is the full grid t_0 > ... > t_N, target included."""

    timesteps: tuple[float, ...]
    method: str
    nfe: int
    options: dict[str, Any]
    model_sha256: str
    model_path: str | None = None
    tuning: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    calibration: Calibration | None = None

    @property
    def steps(self) -> int:
        """N: the number of steps (the grid has N + 1 entries)."""
        return len(self.timesteps) - 1

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": FORMAT,
            "version": VERSION if self.calibration is None else CALIBRATED_VERSION,
            "timesteps": list(self.timesteps),
            "method": self.method,
            "nfe": self.nfe,
            "options": dict(self.options),
            "model": {"sha256": self.model_sha256, "path": self.model_path},
            "tuning": dict(self.tuning),
        }
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_json()
        return data


# ----------------------------------------------------------------------------- writing


def save_grid(
    path: PathLike,
    tuned: Any,
    model_hash: str,
    *,
    model_path: PathLike | None = None,
    overwrite: bool = False,
    **tuning: Any,
) -> GridFile:
    """Write ``tuned`` (a `pndm.tuning.Tuned`) atomically; ``tuning`` adds to the record of the
    run (e.g. ``samples=``, ``seed=``). Never replaces an existing file unless ``overwrite``: one
    that appeared during the tuning is kept, and the new grid is left beside it under the name
    the ``FileExistsError`` gives (the result of a long run is not lost)."""
    path = Path(path)
    record = {
        "error": float(tuned.error),
        "start_error": float(tuned.start_error),
        "model_calls": int(tuned.model_calls),
        "seconds": float(tuned.seconds),
        **tuning,
    }
    grid = GridFile(
        timesteps=tuple(float(t) for t in _as_list(tuned.timesteps)),
        method=str(tuned.method),
        nfe=int(tuned.nfe),
        options=dict(tuned.options),
        model_sha256=model_hash,
        model_path=None if model_path is None else str(model_path),
        tuning=record,
        path=path,
        calibration=tuned.calibration,
    )
    data = grid.to_json()
    _check(data, path)  # never write a file that load_grid would refuse
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), replace=overwrite)
    return grid


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


# ----------------------------------------------------------------------------- reading


def load_grid(path: PathLike, schedule: Any = None) -> GridFile:
    """Read and check a grid file, against ``schedule`` (the model's) where given; every problem
    is one ``ValueError`` line naming the file and the field."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"grid file must be a file (pndm tune writes one), got the folder {path}")
    if not path.exists():
        raise FileNotFoundError(f"grid file not found: {path}")
    data = read_json(path, what="grid file")  # one line for a file that is not a JSON object
    _check(data, path)
    model = data["model"]
    grid = GridFile(
        timesteps=tuple(float(t) for t in data["timesteps"]),
        method=data["method"],
        nfe=data["nfe"],
        options=dict(data["options"]),
        model_sha256=model["sha256"],
        model_path=model.get("path"),
        tuning=dict(data.get("tuning", {})),
        path=path,
        calibration=Calibration.from_json(data["calibration"]) if "calibration" in data else None,
    )
    problem = None if schedule is None else _schedule_problem(grid, schedule)
    if problem:
        raise ValueError(f"{path} does not fit this model: {problem}")
    return grid


def _schedule_problem(grid: GridFile, schedule: Any) -> str | None:
    """Why ``grid`` cannot run on ``schedule``: its target, its range (the pipeline's own rule,
    `pndm.grids.explicit_grid`), a shifted calibrated time, ``denoise_to_zero``; or None."""
    from pndm import grids
    from pndm.samplers.method import check_denoise_target

    times, target = grid.timesteps, grids.final_target(schedule)
    if times[-1] != target:
        return (
            f"timesteps must end with the schedule's final target {target:g} (model times, then "
            f"the target), got {times[-1]:g}"
        )
    try:
        if schedule.discrete:
            grids.explicit_grid(times, schedule.num_train_timesteps)
        elif not grids.lowest_model_time(schedule) <= times[-2] <= times[0] <= schedule.t_max:
            return (
                f"timesteps must lie in [{schedule.t_min:g}, {schedule.t_max:g}], got "
                f"[{times[-2]:g}, {times[0]:g}]"
            )
        check_calibration(grid.calibration, schedule)
        check_denoise_target(grid.options, times, schedule)
    except ValueError as err:
        return str(err)
    return None


def _check(data: Any, path: Path) -> None:
    """Raise ``ValueError("<path> is not a valid grid file: <why>")`` on the first problem."""
    problem = _problem(data)
    if problem:
        raise ValueError(f"{path} is not a valid {FORMAT} file: {problem}")


def _problem(data: dict[str, Any]) -> str | None:
    if data.get("format") != FORMAT:
        return f"format is {data.get('format')!r}, not {FORMAT!r}"
    version = data.get("version")
    if version not in (VERSION, CALIBRATED_VERSION) or isinstance(version, bool):
        return (
            f"version {version!r} is not supported (this pndm reads {VERSION} and "
            f"{CALIBRATED_VERSION})"
        )
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    return (
        _timesteps_problem(data["timesteps"])
        or _fields_problem(data)
        or _model_problem(data["model"])
        or _calibration_problem(data)
        or _method_problem(data)
    )


def _method_problem(data: Mapping[str, Any]) -> str | None:
    """A known fixed-step method whose options are valid and whose NFE on the grid is ``nfe``."""
    from pndm.samplers import nfe as method_nfe  # imports torch: when read, not when imported

    method, steps = data["method"], len(data["timesteps"]) - 1
    try:
        calls = method_nfe(method, steps, **data["options"])
    except ValueError as err:
        return str(err)
    if calls is None:
        return f"method must be a fixed-step method (a grid file holds its grid), got {method!r}"
    if calls != data["nfe"]:
        return (
            f"nfe must be {calls} ({method} on these {steps} steps with options "
            f"{data['options'] or {}}), got {data['nfe']}"
        )
    return None


def _calibration_problem(data: Mapping[str, Any]) -> str | None:
    if (data["version"] == CALIBRATED_VERSION) != ("calibration" in data):
        return f"a calibration belongs in a version {CALIBRATED_VERSION} file, and only there"
    if "calibration" not in data:
        return None
    try:
        times = Calibration.from_json(data["calibration"]).times
    except ValueError as err:
        return str(err)
    grid = data["timesteps"]
    if not grid[-1] <= min(times) <= max(times) <= grid[0]:
        return f"calibration times {list(times)} must lie within the grid [{grid[-1]}, {grid[0]}]"
    return None


def _timesteps_problem(times: Any) -> str | None:
    if not isinstance(times, list) or len(times) < 2:
        return "timesteps must be a list of at least 2 numbers (model times, then the target)"
    if not all(_is_number(t) and math.isfinite(t) for t in times):
        return "timesteps must hold finite numbers only"
    if not all(a > b for a, b in zip(times, times[1:], strict=False)):
        return "timesteps must be strictly decreasing"
    from pndm.grids import check_grid_steps  # imports torch: when read, not when imported

    try:
        check_grid_steps(len(times) - 1)
    except ValueError as err:
        return str(err)
    return None


def _fields_problem(data: Mapping[str, Any]) -> str | None:
    if not isinstance(data["method"], str) or not data["method"]:
        return f"method must be a method name, got {data['method']!r}"
    nfe = data["nfe"]
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        return f"nfe must be an integer >= 1, got {nfe!r}"
    if not isinstance(data["options"], dict):
        return f"options must be an object, got {type(data['options']).__name__}"
    if not isinstance(data.get("tuning", {}), dict):
        return f"tuning must be an object, got {type(data['tuning']).__name__}"
    return _guidance_problem(data.get("tuning", {}).get("guidance_scale", 1.0))


def _guidance_problem(scale: Any) -> str | None:
    """``tuning.guidance_scale`` (pndm sample compares it): a guidance scale, or absent."""
    from pndm.guidance import MAX_GUIDANCE

    if not _is_number(scale) or not 0 <= scale <= MAX_GUIDANCE:  # NaN fails the range
        return f"tuning.guidance_scale must be a number in [0, {MAX_GUIDANCE:g}], got {scale!r}"
    return None


def _model_problem(model: Any) -> str | None:
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str):
        return 'model must be an object with a "sha256" string'
    if not isinstance(model.get("path"), str | None):
        return "model path must be a string or null"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- checking


def check_grid(
    grid: GridFile,
    *,
    model_hash: str | None,
    method: str | None,
    guidance_scale: float | None = None,
) -> None:
    """Warn (`GridMismatchWarning`) where the model, method or guidance scale differs from the
    grid file's (its ``tuning.guidance_scale``; absent: 1, no guidance).

    ``None`` skips that comparison (e.g. method None: the file's own method is used)."""
    name = grid.path or "the grid file"
    tuned_at = grid.tuning.get("guidance_scale", 1.0)
    if guidance_scale is not None and tuned_at != guidance_scale:
        warnings.warn(
            f"{name} was tuned at guidance scale {tuned_at:g}, not {guidance_scale:g}; guidance "
            "changes the ODE, so the grid may not suit it (tune with --guidance)",
            GridMismatchWarning,
            stacklevel=2,
        )
    if model_hash is not None and model_hash != grid.model_sha256:
        tuned_on = f" ({grid.model_path})" if grid.model_path else ""
        warnings.warn(
            f"{name} was tuned on another model{tuned_on}: {_short(grid.model_sha256)}, this "
            f"one is {_short(model_hash)}; the grid may not suit it",
            GridMismatchWarning,
            stacklevel=2,
        )
    if method is not None and method != grid.method:
        dropped = "; its options and calibration are not applied" if grid.calibration else ""
        warnings.warn(
            f"{name} was tuned for method {grid.method!r}, not {method!r}; the grid may not "
            f"suit it{dropped}",
            GridMismatchWarning,
            stacklevel=2,
        )


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]
