"""Time grids tuned to a model, and the grid files ``pndm tune`` writes (see `pndm.tuning.api`).

Names load lazily: `pndm.tuning.grid_file` and `pndm.tuning.defaults` import no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pndm._lazy import lazy_getattr

_EXPORTS = {
    "Tuned": "pndm.tuning.api",
    "tune": "pndm.tuning.api",
    "tune_timesteps": "pndm.tuning.api",
    "tune_pipeline": "pndm.tuning.api",
    "tune_diffusers_pipeline": "pndm.tuning.diffusers",
    "use_tuned": "pndm.tuning.diffusers",
    "progress_total": "pndm.tuning.api",
    "check_tune_request": "pndm.tuning.search",
    "GridFile": "pndm.tuning.grid_file",
    "load_grid": "pndm.tuning.grid_file",
    "save_grid": "pndm.tuning.grid_file",
    "check_grid": "pndm.tuning.grid_file",
}
__all__ = [
    "GridFile",
    "Tuned",
    "check_grid",
    "check_tune_request",
    "load_grid",
    "progress_total",
    "save_grid",
    "tune",
    "tune_diffusers_pipeline",
    "tune_pipeline",
    "tune_timesteps",
    "use_tuned",
]

if TYPE_CHECKING:  # pragma: no cover
    from pndm.tuning.api import Tuned, progress_total, tune, tune_pipeline, tune_timesteps
    from pndm.tuning.diffusers import tune_diffusers_pipeline, use_tuned
    from pndm.tuning.grid_file import GridFile, check_grid, load_grid, save_grid
    from pndm.tuning.search import check_tune_request

__getattr__ = lazy_getattr(globals(), _EXPORTS)
