"""Tuned grid files (`pndm.tuning.grid_file`), ``pndm tune`` and ``pndm sample --timesteps``."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import GREY, GRID, PLAIN, assert_one_line_error, tiny_unet, tuned
from PIL import Image

from pndm.assets import shipped_model_path
from pndm.cli import main
from pndm.compat.folders import model_hash
from pndm.compat.pipeline import PNDMPipeline
from pndm.compat.scheduler import PNDMScheduler
from pndm.models.unet_2d import UNet2DModel
from pndm.tuning.grid_file import GridMismatchWarning, check_grid, load_grid, save_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def grey_unet(seed: int) -> UNet2DModel:
    return tiny_unet(seed, **GREY, **PLAIN)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 8x8 grey pipeline folder: another model than the grids were tuned on."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    PNDMPipeline(unet=grey_unet(0), scheduler=PNDMScheduler()).save_pretrained(folder)
    return folder


def write_grid(path: Path, model: Path, **kwargs: Any) -> Path:
    save_grid(path, tuned(**kwargs), model_hash(model), model_path=model)
    return path


# ----------------------------------------------------------------------------- the file


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    written = save_grid(path, tuned(), "sha256:abc", model_path="m", samples=2, seed=3)
    loaded = load_grid(path)
    assert loaded == written
    assert loaded.timesteps == tuple(GRID) and loaded.steps == 5
    assert (loaded.method, loaded.nfe, loaded.options) == ("ipndm", 4, {"afs": True})
    assert (loaded.model_sha256, loaded.model_path) == ("sha256:abc", "m")
    assert loaded.tuning == {"error": 0.1, "start_error": 0.2, "model_calls": 300,
                             "seconds": 1.5, "samples": 2, "seed": 3}  # fmt: skip
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("pndm-timesteps", 1)


def test_no_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    save_grid(path, tuned(), "sha256:abc")
    with pytest.raises(FileExistsError) as err:  # e.g. a file that appeared during the tuning
        save_grid(path, tuned(method="ddim"), "sha256:abc")
    assert load_grid(path).method == "ipndm"  # the existing file is untouched
    (kept,) = [p for p in tmp_path.iterdir() if p.name != "grid.json"]
    assert kept.name in str(err.value) and load_grid(kept).method == "ddim"  # nothing lost
    kept.unlink()
    save_grid(path, tuned(method="ddim"), "sha256:abc", overwrite=True)
    assert load_grid(path).method == "ddim"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.json"]  # no temporaries left
    with pytest.raises(FileNotFoundError, match="folder not found"):
        save_grid(tmp_path / "nope" / "grid.json", tuned(), "sha256:abc")


def _valid() -> dict[str, Any]:
    return {"format": "pndm-timesteps", "version": 1, "timesteps": GRID, "method": "ipndm",
            "nfe": 5, "options": {}, "model": {"sha256": "sha256:abc", "path": None}}  # fmt: skip


CALIBRATION = {"times": [999.0, 400.5], "time_shifts": [0.0, 3.0], "eps_scales": [1.0, 0.9]}
BAD_FILES = [
    ("{not json", "not valid JSON"),
    ([1, 2], "must hold a JSON object"),
    ({**_valid(), "format": "pndm-sample-folder/1"}, "format is"),
    ({**_valid(), "version": 3}, "version 3 is not supported"),
    ({**_valid(), "version": True}, "version True is not supported"),
    ({**_valid(), "version": 2}, "belongs in a version 2 file"),
    ({**_valid(), "calibration": CALIBRATION}, "belongs in a version 2 file"),
    (
        {**_valid(), "version": 2, "calibration": {**CALIBRATION, "eps_scales": [1.0, -1.0]}},
        "eps_scales must be positive",
    ),
    (
        {**_valid(), "version": 2, "calibration": {**CALIBRATION, "time_shifts": [0.0]}},
        "one time shift and one ε scale per calibrated time",
    ),
    (
        {**_valid(), "version": 2, "calibration": {**CALIBRATION, "times": [1.0, 2.0]}},
        "strictly decreasing",
    ),
    (
        {**_valid(), "version": 2, "calibration": {**CALIBRATION, "times": [1.0, "x"]}},
        "finite numbers",
    ),
    ({**_valid(), "version": 2, "calibration": {"times": [1.0]}}, 'exactly "times"'),
    ({k: v for k, v in _valid().items() if k != "nfe"}, "missing key(s) nfe"),
    ({**_valid(), "timesteps": [10, 20, -1]}, "strictly decreasing"),
    ({**_valid(), "timesteps": [10.0, 10.0, -1]}, "strictly decreasing"),
    ({**_valid(), "timesteps": [10, "5", -1]}, "finite numbers"),
    ({**_valid(), "timesteps": [10, True, -1]}, "finite numbers"),
    ({**_valid(), "timesteps": [10]}, "at least 2 numbers"),
    ({**_valid(), "timesteps": "999,-1"}, "at least 2 numbers"),
    ({**_valid(), "nfe": 2.5}, "nfe must be an integer"),
    ({**_valid(), "nfe": True}, "nfe must be an integer"),
    ({**_valid(), "nfe": 0}, "nfe must be an integer"),
    ({**_valid(), "method": ""}, "method must be"),
    ({**_valid(), "options": []}, "options must be an object"),
    ({**_valid(), "model": {"path": "m"}}, '"sha256" string'),
    ({**_valid(), "tuning": 3}, "tuning must be an object"),
]


@pytest.mark.parametrize(("content", "needle"), BAD_FILES)
def test_bad_files_fail_in_one_line(tmp_path: Path, capsys, content: Any, needle: str) -> None:
    path = tmp_path / "grid.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match="grid.json") as err:
        load_grid(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    code = main(["sample", "--timesteps", str(path), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(capsys, code, needle)


def test_nan_timesteps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(_valid()).replace("400.5", "NaN"))
    with pytest.raises(ValueError, match="finite numbers"):
        load_grid(path)


def test_missing_file(tmp_path: Path, capsys) -> None:
    code = main(["sample", "--timesteps", str(tmp_path / "g.json"), "--out", "s.png"])
    assert_one_line_error(capsys, code, "grid file not found")


def test_importing_grid_file_does_not_import_torch() -> None:
    code = "import sys, pndm.tuning.grid_file; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- hashes, warnings


def _folder(path: Path, unet: Any, **scheduler: Any) -> Path:
    PNDMPipeline(unet=unet, scheduler=PNDMScheduler(**scheduler)).save_pretrained(path)
    return path


def test_the_model_hash_is_of_the_weights_and_configs_not_the_files(tmp_path: Path) -> None:
    """One identity (pndm.compat.folders.model_hash) for a folder and a pipeline: the same
    weights and configs hash alike however they are stored; any change of either does not."""
    unet = grey_unet(0)
    digest = model_hash(_folder(tmp_path / "a", unet))
    assert digest.startswith("sha256:")
    PNDMPipeline(unet=unet, scheduler=PNDMScheduler()).save_pretrained(
        tmp_path / "bin", safe_serialization=False
    )
    assert model_hash(tmp_path / "bin") == digest  # .bin instead of .safetensors
    assert model_hash(PNDMPipeline(unet=grey_unet(0), scheduler=PNDMScheduler())) == digest
    assert model_hash(PNDMPipeline.from_pretrained(tmp_path / "a")) == digest
    assert model_hash(_folder(tmp_path / "b", grey_unet(1))) != digest
    changed = grey_unet(0)
    with torch.no_grad():
        changed.conv_in.bias.add_(1e-3)
    assert model_hash(_folder(tmp_path / "c", changed)) != digest
    assert model_hash(_folder(tmp_path / "d", unet, prediction_type="v_prediction")) != digest
    assert model_hash(PNDMPipeline(unet=grey_unet(0).double(), scheduler=PNDMScheduler())) == digest
    assert (
        model_hash(PNDMPipeline(unet=grey_unet(0).bfloat16(), scheduler=PNDMScheduler())) != digest
    )


def test_a_half_precision_folder_hashes_as_the_model_loaded_from_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "h", grey_unet(0).half())
    assert model_hash(folder) == model_hash(PNDMPipeline.from_pretrained(folder))  # float32


def test_shipped_model_hash_from_folder_equals_pipeline() -> None:
    pipe = PNDMPipeline.from_pretrained(shipped_model_path())
    assert model_hash(shipped_model_path()) == model_hash(pipe)


def test_check_grid_warns_on_other_model_or_method(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path / "g.json", shipped_model_path()))
    own = grid.model_sha256
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_grid(grid, model_hash=own, method="ipndm")
        check_grid(grid, model_hash=None, method=None)
    with pytest.warns(GridMismatchWarning, match="tuned on another model"):
        check_grid(
            grid, model_hash=model_hash(_folder(tmp_path / "t", grey_unet(0))), method="ipndm"
        )
    with pytest.warns(GridMismatchWarning, match="tuned for method 'ipndm', not 'ddim'"):
        check_grid(grid, model_hash=own, method="ddim")
    assert issubclass(GridMismatchWarning, UserWarning)


# ----------------------------------------------------------------------------- the pipeline


def test_pipe_takes_a_full_grid_or_model_times(tiny_model: Path) -> None:
    pipe = PNDMPipeline.from_pretrained(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    run = {"seeds": [0, 1], "batch_size": 2, "output_type": "np", "method": "ipndm"}
    full = pipe(timesteps=torch.tensor(GRID, dtype=torch.float64), **run).images
    model_times = pipe(timesteps=GRID[:-1], **run).images
    from_file = pipe(timesteps=list(tuned().timesteps.tolist()), **run).images
    np.testing.assert_array_equal(full, model_times)
    np.testing.assert_array_equal(full, from_file)


# ----------------------------------------------------------------------------- the CLI


def test_sample_with_grid_file_warns_on_other_model_and_method(tiny_model, tmp_path, capsys):
    grid = write_grid(tmp_path / "g.json", shipped_model_path())
    out = tmp_path / "s.png"
    base = ["sample", "--timesteps", str(grid), "--num-images", "2", "--no-progress"]
    assert main([*base, "--model", str(tiny_model), "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning:")] == [err[0]]
    assert "tuned on another model" in err[0] and "ipndm, 5 steps, NFE 4" in err[1]
    assert Image.open(out).size[0] > 0
    argv = [*base, "--model", str(tiny_model), "--method", "ddim", "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 2 and "tuned for method 'ipndm', not 'ddim'" in err
    assert "ddim, 5 steps, NFE 5" in err  # the file's options (afs) are ipndm's, not ddim's


def test_resumed_folder_detects_another_grid(tiny_model: Path, tmp_path: Path, capsys) -> None:
    model = tiny_model
    a = write_grid(tmp_path / "a.json", model)
    b = write_grid(tmp_path / "b.json", model, timesteps=[999.0, 600.0, 300.0, 10.0, -1.0])
    c = write_grid(tmp_path / "c.json", model, afs=False)
    out = f"{tmp_path / 'folder'}/"
    base = ["sample", "--model", str(model), "--no-progress", "--out", out]
    assert main([*base, "--timesteps", str(a), "--seeds", "0-1"]) == 0
    assert main([*base, "--timesteps", str(a), "--seeds", "0-2"]) == 0  # same grid: resumes
    assert "wrote 1 images (2 already there)" in capsys.readouterr().err
    recorded = json.loads((tmp_path / "folder" / "pndm.json").read_text())["settings"]
    assert recorded["timesteps"] == GRID and recorded["method_options"] == {"afs": True}
    assert_one_line_error(capsys, main([*base, "--timesteps", str(b)]), "timesteps [999.0")
    assert_one_line_error(capsys, main([*base, "--timesteps", str(c)]), "method_options")
    assert_one_line_error(capsys, main([*base, "--steps", "5"]), "timesteps null")


def test_steps_and_timesteps_exclude_each_other(tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path / "g.json", shipped_model_path())
    argv = ["sample", "--timesteps", str(grid), "--steps", "10", "--out", "s.png"]
    assert_one_line_error(capsys, main(argv), "give --steps or --timesteps, not both")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_valid(), "options": {"order": 3}}))  # save_grid refuses it
    argv = ["sample", "--timesteps", str(bad), "--out", str(tmp_path / "s.png")]
    assert_one_line_error(capsys, main(argv), "unknown option(s) 'order' for method 'ipndm'")


def test_tune_checks_out_before_any_model_call(tmp_path: Path, capsys, monkeypatch) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(PNDMPipeline, "from_pretrained", no_model)
    monkeypatch.setattr("pndm.tuning.tune_pipeline", no_model)
    existing = tmp_path / "grid.json"
    existing.write_text("{}")
    base = ["tune", "--method", "ipndm", "--nfe", "4", "--out"]
    assert_one_line_error(capsys, main([*base, str(existing)]), "exists; pass --overwrite")
    missing = str(tmp_path / "nope" / "g.json")
    assert_one_line_error(capsys, main([*base, missing]), "folder not found")
    argv = ["tune", "--method", "pndmm", "--nfe", "4", "--out", str(tmp_path / "g.json")]
    assert_one_line_error(capsys, main(argv), "method must be one of", "got 'pndmm'")
    argv = ["tune", "--method", "pf", "--nfe", "4", "--out", str(tmp_path / "g.json")]
    assert_one_line_error(capsys, main(argv), "'pf' is adaptive")
    argv = [
        "tune",
        "--method",
        "ipndm",
        "--nfe",
        "4",
        "--seed",
        "-1",
        "--out",
        str(tmp_path / "g.json"),
    ]
    assert_one_line_error(capsys, main(argv), "seed must be an integer >= 0")
    argv = [*base, str(tmp_path / "g.txt")]
    assert_one_line_error(capsys, main(argv), "--out writes .json files")
    assert_one_line_error(capsys, main([*base, str(tmp_path)]), "is a folder; give a file name")
    assert_one_line_error(capsys, main([*base, ""]), "argument --out/-o: is empty; give a path")
    assert existing.read_text() == "{}"


def test_tune_then_sample_end_to_end(tmp_path: Path, capsys) -> None:
    """The real tuner on the shipped model with a tiny budget, then sampling with its grid."""
    grid_path = tmp_path / "grid.json"
    tune = ["tune", "--method", "ipndm", "--nfe", "4", "--out", str(grid_path), "--samples",
            "2", "--iterations", "2", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(tune) == 0
    summary = capsys.readouterr().err.strip()
    assert summary.startswith(f"wrote {grid_path}: ipndm, NFE 4,") and "model calls" in summary
    grid = load_grid(grid_path)
    assert (grid.method, grid.nfe, grid.tuning["samples"]) == ("ipndm", 4, 2)
    assert grid.model_sha256 == model_hash(shipped_model_path())
    assert grid.timesteps[-1] == -1.0 and grid.tuning["error"] <= grid.tuning["start_error"]
    out = tmp_path / "s.npz"
    sample = ["sample", "--timesteps", str(grid_path), "--num-images", "2", "--out", str(out)]
    assert main([*sample, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and f"NFE {grid.nfe}," in err
    images = np.load(out)["arr_0"]
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
