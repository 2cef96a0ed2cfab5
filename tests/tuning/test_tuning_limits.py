"""The tuner's limits (issue 22): NFE, iterations and tuning noises bounded, every argument
checked, all before any model call (`pndm.tuning.limits`)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from conftest import GREY, PLAIN, tiny_unet

from pndm.compat.pipeline import PNDMPipeline
from pndm.compat.scheduler import PNDMScheduler
from pndm.schedule import NoiseSchedule
from pndm.tuning import check_tune_request, tune, tune_pipeline, tune_timesteps
from pndm.tuning.search import reachable_nfes, steps_for_nfe

DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})


def no_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the model was called")


def noise(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"nfe": 1_000_000}, r"nfe must be an integer in \[1, 1000\], got 1000000"),
        ({"nfe": 200}, r"nfe must be an integer in \[1, 199\], got 200: .* teacher of 200"),
        ({"nfe": True}, "nfe must be an integer"),
        ({"budget": 10**9}, r"budget must be an integer in \[1, 10000\], got 1000000000"),
        ({"search_options": "no"}, "search_options must be True or False, got 'no'"),
        ({"calibrate": 1}, "calibrate must be True or False, got 1"),
        ({"progress": 5}, "progress must be callable"),
        ({"noise": torch.zeros(0, 3)}, "noise must be a non-empty floating-point tensor"),
        ({"noise": torch.zeros(2, 3, dtype=torch.complex64)}, "noise must be a non-empty"),
        ({"noise": torch.ones(2, 3, dtype=torch.bool)}, "noise must be a non-empty"),
        ({"noise": [[0.0, 1.0]]}, "noise must be a torch.Tensor"),
        ({"reference": noise().fill_(float("nan"))}, "reference contains NaN or inf"),
        ({"reference": noise().to(torch.int64)}, "reference must be a non-empty floating"),
        ({"reference": noise(3)}, "reference must be a tensor of the noise's shape"),
        ({"eps_fn": "model"}, "eps_fn must be callable"),
    ],
)
def test_bad_arguments_are_refused_before_any_model_call(arguments: dict, message: str) -> None:
    call = {"eps_fn": no_model, "schedule": DDPM, "noise": noise(), "method": "ipndm", "nfe": 4}
    call |= arguments
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        tune(call.pop("eps_fn"), call.pop("schedule"), call.pop("noise"), **call)
    assert "\n" not in str(err.value) and time.perf_counter() - start < 5


def test_tune_timesteps_bounds_its_nfe() -> None:
    with pytest.raises(ValueError, match=r"nfe must be an integer in \[1, 1000\]"):
        tune_timesteps(no_model, DDPM, noise(), method="ipndm", nfe=1_000_000)


def test_a_noise_batch_that_cannot_fit_is_refused_naming_what_fits(monkeypatch) -> None:
    """The teacher's end points and the samplers' state: 9 more copies of each noise."""
    monkeypatch.setattr("pndm.tuning.limits.free_memory", lambda device: 9 * 3 * 8 * 5)
    tune_args = {"method": "ipndm", "nfe": 1, "budget": 1}
    with pytest.raises(ValueError, match="noise's batch size must be at most 5 on cpu, got 6"):
        tune(no_model, DDPM, noise(6), **tune_args)
    ones = tune(lambda x, t: torch.zeros_like(x), DDPM, noise(5), **tune_args)
    assert ones.nfe == 1


@pytest.fixture(scope="module")
def pipe() -> PNDMPipeline:
    return PNDMPipeline(unet=tiny_unet(0, **GREY, **PLAIN), scheduler=PNDMScheduler())


def test_tune_pipeline_refuses_samples_beyond_memory_before_drawing_noise(
    pipe: PNDMPipeline, monkeypatch
) -> None:
    def no_noise(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tuning noise was drawn")

    monkeypatch.setattr("pndm.tuning.api.initial_noise", no_noise)
    monkeypatch.setattr(pipe.unet, "forward", no_model)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"samples must be at most \d+ on cpu, got 1000000000000"):
        tune_pipeline(pipe, method="ipndm", nfe=4, samples=10**12)
    with pytest.raises(ValueError, match=r"iterations must be an integer in \[1, 10000\]"):
        tune_pipeline(pipe, method="ipndm", nfe=4, samples=2, iterations=10**6)
    assert time.perf_counter() - start < 5


def test_the_memory_estimate_counts_what_tuning_holds(pipe: PNDMPipeline, monkeypatch) -> None:
    """Per noise: the UNet's working set for one image, the sampler's 8 images, the noise and
    the teacher's end point (float32 for a float32 UNet): what `per_image_bytes` adds up."""
    from pndm.runtime.fast import image_bytes

    each = image_bytes(pipe.unet.config, (1, 8, 8), torch.float32) + (8 + 2) * 64 * 4
    monkeypatch.setattr("pndm.tuning.limits.free_memory", lambda device: 3 * each)
    monkeypatch.setattr("pndm.tuning.api.tune", lambda *args, **kwargs: "tuned")
    assert tune_pipeline(pipe, method="ipndm", nfe=4, samples=3) == "tuned"
    with pytest.raises(ValueError, match="samples must be at most 3 on cpu, got 4"):
        tune_pipeline(pipe, method="ipndm", nfe=4, samples=4)


def test_a_request_of_many_samples_lists_no_seeds() -> None:
    """check_tune_request used to build the list of every tuning seed (10^9 of them: 22 GB)."""
    start = time.perf_counter()
    assert check_tune_request("ipndm", 4, samples=10**15) is None
    assert time.perf_counter() - start < 5


def test_the_nfe_searches_are_bounded() -> None:
    """Both loop over 1 .. nfe + 2 step counts: 10^9 of them ran without end."""
    for search in (lambda: steps_for_nfe("ipndm", 10**9, {}),
                   lambda: reachable_nfes("ipndm", 10**9, [{}])):  # fmt: skip
        with pytest.raises(ValueError, match=r"nfe must be an integer in \[1, 1000\]"):
            search()
