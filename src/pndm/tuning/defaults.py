"""The tuner's defaults, in one place that imports nothing (``pndm tune --help`` shows them and
loads no torch)."""

from __future__ import annotations

TEACHER_STEPS = 200  # the teacher's model calls (`pndm.tuning.objective.teacher`)
TUNE_SAMPLES = 64  # tuning noises of `tune_pipeline` (and ``pndm tune``) by default
CALIBRATE_SAMPLES = 256  # ... with calibrate: 2 parameters per call need more to generalise


def default_samples(calibrate: bool) -> int:
    """The tuning noises used unless told: CALIBRATE_SAMPLES with ``calibrate``, else
    TUNE_SAMPLES."""
    return CALIBRATE_SAMPLES if calibrate else TUNE_SAMPLES
