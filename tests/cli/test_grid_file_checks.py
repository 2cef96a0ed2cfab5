"""Grid files checked whole when read (issue 22): the NFE against the grid and options, a
fixed-step method, the one bound of steps, the calibration's band; read against the model's
schedule, the target, the range, the shifted times and ``denoise_to_zero``. Each refusal is one
line naming the file and the field: from `load_grid` as from ``pndm sample --timesteps``, which
then exits 2 within seconds, writes nothing and loads no model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import GRID, assert_one_line_error

from pndm.cli import main
from pndm.compat.pipeline import PNDMPipeline
from pndm.schedule import NoiseSchedule
from pndm.tuning.grid_file import load_grid

DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000})
VALID = {"format": "pndm-timesteps", "version": 1, "timesteps": GRID, "method": "ipndm",
         "nfe": 5, "options": {}, "model": {"sha256": "sha256:abc", "path": None}}  # fmt: skip
LONG = [*np.linspace(999.0, 0.0, 2000).tolist(), -1.0]  # 2000 fractional steps in [0, 999]


def calibrated(**calibration: Any) -> dict[str, Any]:
    table = {"times": [999.0, 400.5], "time_shifts": [0.0, 0.0], "eps_scales": [1.0, 1.0]}
    return {**VALID, "version": 2, "calibration": {**table, **calibration}}


ANY_MODEL = [  # wrong whatever the model
    ({**VALID, "nfe": 4}, "nfe must be 5 (ipndm on these 5 steps with options {}), got 4"),
    ({**VALID, "options": {"afs": True}}, "nfe must be 4"),
    ({**VALID, "method": "pf"}, "method must be a fixed-step method (a grid file"),
    ({**VALID, "method": "pec-adaptive"}, "fixed-step method (a grid file holds"),
    ({**VALID, "method": "pndmm"}, "method must be one of"),
    ({**VALID, "options": {"afs": "yes"}}, "afs must be True or False, got 'yes'"),
    ({**VALID, "timesteps": LONG, "nfe": 2000}, "the steps of timesteps must be an integer in"),
    (calibrated(eps_scales=[1.0, 1e3]), "eps_scales must lie in [e^-5, e^5]"),
    *[
        ({**VALID, "tuning": {"guidance_scale": bad}}, "tuning.guidance_scale must be a number in")
        for bad in (None, [1], "2", True, -1.0, 1e9)
    ],
]
THIS_MODEL = [  # wrong on a discrete schedule of 1000 training steps (the shipped model's)
    ({**VALID, "timesteps": [999.0, 500.0, 10.0], "nfe": 2}, "must end with the schedule's"),
    ({**VALID, "timesteps": [1500.0, 500.0, -1.0], "nfe": 2}, "timesteps must be strictly"),
    (calibrated(time_shifts=[1e6, 0.0]), "calibration time_shifts must keep"),
    (calibrated(time_shifts=[0.0, -5000.0]), "calibration time_shifts must keep"),
    ({**VALID, "options": {"denoise_to_zero": True}, "nfe": 6}, "denoise_to_zero must be False"),
]


def write(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content))
    return path


def assert_refused(capsys, tmp_path: Path, argv: list[str], *needles: str) -> None:
    """Exit 2, one stderr line holding every needle, within seconds, nothing written."""
    before = sorted(tmp_path.rglob("*"))
    start = time.perf_counter()
    code = main(argv)
    assert time.perf_counter() - start < 10
    assert_one_line_error(capsys, code, *needles)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.fixture
def no_model(monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(PNDMPipeline, "from_pretrained", refuse)


@pytest.mark.parametrize(("content", "needle"), ANY_MODEL + THIS_MODEL)
def test_sample_refuses_the_file_in_one_line(tmp_path, capsys, no_model, content, needle) -> None:
    path = write(tmp_path / "grid.json", content)
    argv = ["sample", "--timesteps", str(path), "--out", str(tmp_path / "s.png")]
    assert_refused(capsys, tmp_path, argv, str(path), needle)


@pytest.mark.parametrize(("content", "needle"), ANY_MODEL)
def test_load_grid_refuses_what_is_wrong_for_any_model(tmp_path, content, needle) -> None:
    path = write(tmp_path / "grid.json", content)
    with pytest.raises(ValueError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize(("content", "needle"), THIS_MODEL)
def test_load_grid_against_a_schedule(tmp_path, content, needle) -> None:
    path = write(tmp_path / "grid.json", content)
    assert load_grid(path).path == path  # no schedule: nothing to hold it against
    with pytest.raises(ValueError) as err:
        load_grid(path, DDPM)
    message = str(err.value)
    assert message.startswith(f"{path} does not fit this model: ") and needle in message


def test_a_file_the_tuner_could_write_passes(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.json", calibrated(time_shifts=[-1.0, 3.0], eps_scales=[1.1, 0.9]))
    assert load_grid(path, DDPM).steps == 5


def test_a_folder_is_not_a_grid_file(tmp_path: Path, capsys, no_model) -> None:
    folder = tmp_path / "grid.json"
    folder.mkdir()
    argv = ["sample", "--timesteps", str(folder), "--out", str(tmp_path / "s.png")]
    assert_refused(
        capsys,
        tmp_path,
        argv,
        f"grid file must be a file (pndm tune writes one), got the folder {folder}",
    )
    code = main(["sample", "--timesteps", str(tmp_path / "none.json"), "--out", "s.png"])
    assert_one_line_error(capsys, code, "grid file not found")
