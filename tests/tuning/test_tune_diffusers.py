"""`pndm.tuning.tune_diffusers_pipeline`: a grid tuned on a diffusers pipeline's guided ε (tiny
random Stable Diffusion and SDXL pipelines, built offline) is no worse than its start on other
noise and other prompts, and runs in the pipeline at its NFE."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from benchlib.tiny_diffusers import CallCounter, tiny_sd, tiny_sdxl  # noqa: E402

from pndm import SamplerScheduler  # noqa: E402
from pndm.samplers import SAMPLERS  # noqa: E402
from pndm.tuning import tune_diffusers_pipeline, use_tuned  # noqa: E402
from pndm.tuning.diffusers import latent_noise, latent_size, pipeline_eps  # noqa: E402
from pndm.tuning.objective import rms, teacher  # noqa: E402
from pndm.tuning.search import steps_for_nfe  # noqa: E402
from pndm.tuning.spaces import start_grid  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TUNE = {"samples": 8, "iterations": 12, "batch_size": 8}  # small and quick: the test's budget


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd(tmp_path_factory.mktemp("sd"))


def held_out_errors(pipe, method: str, grids: list[torch.Tensor], options: dict) -> list[float]:
    """The RMS errors against the teacher on noise and prompts the tuner never saw."""
    eps = pipeline_eps(pipe, ["a blue house", "green tree", "an old car"], 6)
    schedule = SamplerScheduler.from_config(pipe.scheduler.config).schedule
    x = latent_noise(pipe, 6, seed=7, size=latent_size(pipe, None, None))
    with torch.no_grad():
        reference = teacher(eps, schedule, x)
        return [rms(SAMPLERS[method](eps, x, g, schedule, **options), reference) for g in grids]


def test_a_tuned_grid_is_no_worse_than_its_start_on_held_out_noise_and_prompts(sd) -> None:
    tuned = tune_diffusers_pipeline(sd, ["a red cube", "two cats"], method="ipndm", nfe=4, **TUNE)
    assert (tuned.method, tuned.nfe, tuned.timesteps.numel()) == ("ipndm", 4, 5)
    assert tuned.error <= tuned.start_error
    schedule = SamplerScheduler.from_config(sd.scheduler.config).schedule
    start = start_grid(tuned.start_grid, schedule, steps_for_nfe("ipndm", 4, tuned.options))
    before, after = held_out_errors(sd, "ipndm", [start, tuned.timesteps], tuned.options)
    assert after <= before, (before, after)  # measured 1.62 -> 0.75
    scheduler = sd.scheduler
    with CallCounter(sd.unet) as counter:  # the result, used in the pipeline: 4 UNet calls
        sd("a red cube", output_type="latent", **use_tuned(sd, tuned))
    assert counter.calls == 4
    sd.scheduler = scheduler


def test_sdxl_tunes_with_its_added_conditioning(tmp_path) -> None:
    pipe = tiny_sdxl(tmp_path)
    tuned = tune_diffusers_pipeline(pipe, ["a red cube"], method="pec-data", nfe=3,
                                    negative_prompt="blurry", **TUNE)  # fmt: skip
    assert tuned.error <= tuned.start_error and tuned.timesteps[-1] == -1


def test_the_guided_eps_does_not_depend_on_the_batch_size(sd) -> None:
    x = latent_noise(sd, 5, seed=3, size=latent_size(sd, None, None))
    t = torch.full((5,), 612.0, dtype=torch.float64)
    with torch.no_grad():
        whole = pipeline_eps(sd, ["a", "b"], 5, batch_size=8)(x, t)
        parts = pipeline_eps(sd, ["a", "b"], 5, batch_size=2)(x, t)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole[0], whole[1])  # different prompts, different ε


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"method": "pf", "nfe": 4}, "adaptive"), ({"method": "ipndm", "nfe": 0}, "nfe"),
     ({"method": "ipndm", "nfe": 4, "batch_size": 0}, "batch_size")],
)  # fmt: skip
def test_bad_requests_fail_before_any_model_call(sd, kwargs: dict, match: str) -> None:
    with CallCounter(sd.unet) as counter, pytest.raises(ValueError, match=match):
        tune_diffusers_pipeline(sd, ["a"], **{"samples": 4, **kwargs})
    assert counter.calls == 0
    with pytest.raises(ValueError, match="prompts"):
        tune_diffusers_pipeline(sd, [], method="ipndm", nfe=4)
