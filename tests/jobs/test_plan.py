"""The plan of a job: the grid is built once, the pipeline samples on it, and the summary names
its steps and NFE (issue 21: an explicit grid was reported as the --steps default, "50 steps")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pndm.compat.pipeline import PNDMPipeline
from pndm.images import to_uint8
from pndm.jobs import run
from pndm.jobs.job import SampleJob
from pndm.jobs.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = [999.0, 600.0, 250.5, 40.0]  # model times; the target -1 is appended


@pytest.mark.parametrize(
    ("method", "options", "steps", "nfe"),
    [("ddim", {}, 4, 4), ("ipndm", {"afs": True}, 4, 3), ("f-pndm", {}, 4, 13)],
)
def test_an_explicit_grid_is_summarised_by_its_steps_and_nfe(
    tmp_path: Path, method: str, options: dict, steps: int, nfe: int
) -> None:
    job = SampleJob(out=tmp_path / "s.npz", seeds=[0, 1], method=method, timesteps=GRID,
                    method_options=options, progress=False)  # fmt: skip
    assert plan(job).grid == (*GRID, -1.0) and plan(job).steps == steps
    line = run.run_job(job).line()
    assert f"{method}, {steps} steps, NFE {nfe}," in line


def test_the_pipeline_samples_on_the_plans_grid(tmp_path: Path, monkeypatch) -> None:
    """The grid reaches the pipeline as the plan holds it, and the images are the pipeline's own
    on that grid."""
    seen = []
    real = PNDMPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["timesteps"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PNDMPipeline, "__call__", spy)
    job = SampleJob(out=tmp_path / "s.npz", seeds=[3, 4], method="ddim", timesteps=GRID,
                    batch_size=2, progress=False)  # fmt: skip
    run.run_job(job)
    assert seen == [[*GRID, -1.0]]
    pipe = PNDMPipeline.from_pretrained(run.model_folder(None))
    direct = real(pipe, batch_size=2, seeds=[3, 4], method="ddim", timesteps=GRID,
                  output_type="np").images  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "s.npz")["arr_0"], to_uint8(np.asarray(direct)))


def test_a_finished_folder_reports_the_plans_nfe(tmp_path: Path) -> None:
    job = SampleJob(out=f"{tmp_path}/f/", seeds=[0], method="plms", steps=6, progress=False)
    run.run_job(job)
    line = run.run_job(job).line()  # nothing left to sample: no model loaded
    assert "wrote 0 images (1 already there)" in line and "plms, 6 steps, NFE 7," in line


@pytest.mark.parametrize(("asked", "sent"), [(None, False), (True, True), (False, False)])
def test_a_sample_job_fixes_its_layout(tmp_path: Path, monkeypatch, asked, sent) -> None:
    """A folder's bytes may not depend on a timing: a job sends NCHW (False) unless asked, never
    the pipeline's measured default (None), whose winner may change from process to process."""
    seen = []
    real = PNDMPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["channels_last"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PNDMPipeline, "__call__", spy)
    job = SampleJob(out=tmp_path / "s.npz", seeds=[3], steps=2, channels_last=asked,
                    progress=False)  # fmt: skip
    run.run_job(job)
    assert seen == [sent]
