"""A tuning request checked with no model (`check_tune_request`), the tuner's torch-free defaults,
and `tune_pipeline`'s use of both."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from conftest import GREY, PLAIN, tiny_unet

from pndm.compat.pipeline import PNDMPipeline
from pndm.compat.scheduler import PNDMScheduler
from pndm.noise import initial_noise
from pndm.tuning import check_tune_request, tune_pipeline
from pndm.tuning.defaults import CALIBRATE_SAMPLES, TUNE_SAMPLES, default_samples
from pndm.tuning.search import tuning_seeds


def test_grid_file_and_defaults_import_no_torch() -> None:
    """``pndm tune --help`` and grid files need no torch: the package, its grid files and its
    defaults load none (the package's other names load lazily)."""
    code = "import sys, pndm.tuning, pndm.tuning.grid_file, pndm.tuning.defaults; "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_samples() -> None:
    assert (TUNE_SAMPLES, CALIBRATE_SAMPLES) == (64, 256)
    assert default_samples(False) == TUNE_SAMPLES and default_samples(True) == CALIBRATE_SAMPLES


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"method": "pndmm", "nfe": 4}, "method must be one of ddim, s-pndm"),
        ({"method": "pf", "nfe": 4}, "'pf' is adaptive"),
        ({"method": "ipndm", "nfe": 0}, "nfe must be an integer >= 1"),
        ({"method": "ipndm", "nfe": 4, "seed": -1}, "seed must be an integer >= 0"),
        ({"method": "ipndm", "nfe": 4, "seed": 2**62}, "seed must be below"),
        ({"method": "ipndm", "nfe": 4, "samples": 0}, "samples must be an integer >= 1"),
        ({"method": "ipndm", "nfe": 4, "bogus": 1}, "unknown option(s) 'bogus'"),
        (
            {"method": "f-pndm", "nfe": 5},
            "cannot make exactly 5 model calls with any option set searched; "
            "reachable: 4, 8, 12, 13, 14, 15, 16",
        ),
        (
            {"method": "f-pndm", "nfe": 5, "search_options": False},
            "with options {} cannot make exactly 5 model calls; reachable: 4, 8, 12",
        ),
    ],
)
def test_bad_requests_are_refused_in_one_line(request_: dict[str, Any], message: str) -> None:
    request_ = {"samples": 8, **request_}
    with pytest.raises(ValueError) as err:
        check_tune_request(**request_)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "f-pndm", "nfe": 12},
        {"method": "ipndm", "nfe": 4, "search_options": False, "afs": True},
        {"method": "vab", "nfe": 3, "order": 3},
        {"method": "ipndm", "nfe": 1, "seed": 2**20},
    ],
)
def test_reachable_requests_pass(request_: dict[str, Any]) -> None:
    assert check_tune_request(samples=TUNE_SAMPLES, **request_) is None


class _Untouchable:
    """A pipeline stand-in that fails on any use: the request must be refused before."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the pipeline was used ({name})")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"method": "f-pndm", "nfe": 5}, "cannot make exactly 5 model calls"),
        ({"method": "ipndm", "nfe": 4, "seed": -1}, "seed must be an integer >= 0"),
        ({"method": "ipndm", "nfe": 4, "samples": 0}, "samples must be an integer >= 1"),
        ({"method": "ipndm", "nfe": 4, "calibrate": "yes"}, "calibrate must be True or False"),
    ],
)
def test_tune_pipeline_checks_the_request_before_using_the_pipeline(
    request_: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tune_pipeline(_Untouchable(), **request_)


def test_tune_pipeline_tunes_on_the_default_count_of_seeded_noises(monkeypatch) -> None:
    pipe = PNDMPipeline(unet=tiny_unet(0, **GREY, **PLAIN), scheduler=PNDMScheduler())
    seen = []

    def fake_tune(eps_fn: Any, schedule: Any, noise: torch.Tensor, **kwargs: Any) -> str:
        seen.append(noise)
        return "tuned"

    monkeypatch.setattr("pndm.tuning.api.tune", fake_tune)
    assert tune_pipeline(pipe, method="ipndm", nfe=4) == "tuned"
    tune_pipeline(pipe, method="ipndm", nfe=4, calibrate=True)
    tune_pipeline(pipe, method="ipndm", nfe=4, samples=3, seed=2)
    assert [len(x) for x in seen] == [TUNE_SAMPLES, CALIBRATE_SAMPLES, 3]
    expected = initial_noise((3, 1, 8, 8), "cpu", torch.float32, seeds=tuning_seeds(3, 2))
    assert torch.equal(seen[-1], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_tune_pipeline_drives_the_solver_s_eps_of_the_pipeline(monkeypatch, dtype) -> None:
    """The tuner sees what the pipeline's solver sees (`PNDMPipeline.eps_fn`, `solver_dtype`):
    float32 noise and ε for a half-precision UNet, float64 for a float64 one."""
    pipe = PNDMPipeline(unet=tiny_unet(0, **GREY, **PLAIN), scheduler=PNDMScheduler()).to(dtype)
    solver = torch.float64 if dtype == torch.float64 else torch.float32
    seen = {}

    def fake_tune(eps_fn: Any, schedule: Any, noise: torch.Tensor, **kwargs: Any) -> None:
        seen.update(eps_fn=eps_fn, schedule=schedule, noise=noise)

    monkeypatch.setattr("pndm.tuning.api.tune", fake_tune)
    tune_pipeline(pipe, method="ipndm", nfe=4, samples=2)
    assert pipe.solver_dtype == solver == seen["noise"].dtype
    assert seen["schedule"] is pipe.scheduler.schedule
    t = torch.full((2,), 500.0, dtype=torch.float64)
    eps = seen["eps_fn"](seen["noise"], t)
    assert eps.dtype == solver
    assert torch.equal(eps, pipe.eps_fn()(seen["noise"], t))
