"""`pndm.jobs.job.check_job`: a job from the Python API is checked as the CLI's flags are (its
seeds as ``--seeds``, its output as ``--out``), before anything is read or written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pndm.jobs.job import SampleJob
from pndm.jobs.run import run_job


@pytest.mark.parametrize(
    ("seeds", "needle"),
    [
        ([3, 3], "seed 3 is listed twice"),
        ([0, 1, 0], "seed 0 is listed twice"),
        ([], "no seeds to sample"),
        ([-1], "seeds must be integers in [0, 2**64), got -1"),
        ([2**64], "seeds must be integers in [0, 2**64)"),
        ([True], "seeds must be integers in [0, 2**64), got True"),
        ([1.0], "seeds must be integers in [0, 2**64), got 1.0"),
        ("0-3", "seeds must be a list of integers, got '0-3'"),
        (np.arange(3), "seeds must be a list of integers"),
        (7, "seeds must be a list of integers, got 7"),
    ],
)
@pytest.mark.parametrize("out", ["f/", "x.npz"])
def test_bad_seeds_are_refused_before_anything_is_written(
    tmp_path: Path, seeds, needle: str, out: str
) -> None:
    job = SampleJob(out=f"{tmp_path}/{out}", seeds=seeds, steps=4, progress=False)
    with pytest.raises(ValueError) as err:
        run_job(job, load=lambda *a: pytest.fail("loaded the model"))
    assert needle in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_too_many_seeds_are_refused(tmp_path: Path, monkeypatch) -> None:
    from pndm.jobs import seeds

    monkeypatch.setattr(seeds, "MAX_IMAGES", 2)
    job = SampleJob(out=f"{tmp_path}/f/", seeds=[0, 1, 2], steps=4, progress=False)
    with pytest.raises(ValueError, match="3 images in one run is more than 2"):
        run_job(job, load=lambda *a: pytest.fail("loaded the model"))


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_output_path_is_refused(tmp_path: Path, monkeypatch, out: str) -> None:
    monkeypatch.chdir(tmp_path)  # Path("") is the current folder
    job = SampleJob(out=out, seeds=[0], steps=4, progress=False)
    with pytest.raises(ValueError, match="out must be a file or folder path, got"):
        run_job(job, load=lambda *a: pytest.fail("loaded the model"))
    assert list(tmp_path.iterdir()) == []
