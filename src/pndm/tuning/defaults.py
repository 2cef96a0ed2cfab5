"""The tuner's defaults, in one place that imports nothing (``pndm tune --help`` shows them and
loads no torch)."""

from __future__ import annotations

TEACHER_STEPS = 200  # the teacher's model calls (`pndm.tuning.objective.teacher`)
TUNE_SAMPLES = 64  # tuning noises of `tune_pipeline` (and ``pndm tune``) by default
CALIBRATE_SAMPLES = 256  # ... with calibrate: 2 parameters per call need more to generalise
MAX_NFE = TEACHER_STEPS - 1  # fewer calls than the teacher: the grid is fitted to its solution
MAX_ITERATIONS = 10_000  # objective evaluations; the default budgets stay below 6,000


def default_samples(calibrate: bool) -> int:
    """The tuning noises used unless told: CALIBRATE_SAMPLES with ``calibrate``, else
    TUNE_SAMPLES."""
    return CALIBRATE_SAMPLES if calibrate else TUNE_SAMPLES
