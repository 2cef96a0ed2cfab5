"""Time grids tuned to a model, and the grid files ``pndm tune`` writes (see `pndm.tuning.search`).

Names load lazily: `pndm.tuning.grid_file` imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pndm._lazy import lazy_getattr

_EXPORTS = {
    "Tuned": "pndm.tuning.search",
    "tune": "pndm.tuning.search",
    "tune_timesteps": "pndm.tuning.search",
    "tune_pipeline": "pndm.tuning.search",
    "progress_total": "pndm.tuning.search",
    "GridFile": "pndm.tuning.grid_file",
    "load_grid": "pndm.tuning.grid_file",
    "save_grid": "pndm.tuning.grid_file",
    "check_grid": "pndm.tuning.grid_file",
    "model_hash": "pndm.tuning.grid_file",
}
__all__ = [
    "GridFile",
    "Tuned",
    "check_grid",
    "load_grid",
    "model_hash",
    "progress_total",
    "save_grid",
    "tune",
    "tune_pipeline",
    "tune_timesteps",
]

if TYPE_CHECKING:  # pragma: no cover
    from pndm.tuning.grid_file import GridFile, check_grid, load_grid, model_hash, save_grid
    from pndm.tuning.search import Tuned, progress_total, tune, tune_pipeline, tune_timesteps

__getattr__ = lazy_getattr(globals(), _EXPORTS)
