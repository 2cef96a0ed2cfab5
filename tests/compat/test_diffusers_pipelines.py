"""pndm inside diffusers' own pipelines: tiny random Stable Diffusion and SDXL pipelines built
offline (`benchlib.tiny_diffusers`), their scheduler swapped for `pndm.SamplerScheduler`.

The reference of every comparison is the pure sampler (``SAMPLERS[method]``) on the pipeline's
guided ε (`pndm.tuning.diffusers`: the UNet under classifier-free guidance, as diffusers computes
it) on the scheduler's grid, in float32 as the pipeline's latents. Tolerance: none, the latents
are equal bit for bit. The scheduler runs the pure sampler's own operations in the same dtype
(float32) on the same values, the UNet sees the same inputs in the same batch (unconditional and
conditional halves of one call) and the ε conversions are the wrapper's operations in its order;
nothing is rounded differently, on any CPU. (In float64, `test_sampler_scheduler` holds the same.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

from benchlib.tiny_diffusers import CallCounter, tiny_sd, tiny_sdxl  # noqa: E402
from diffusers.schedulers import AysSchedules  # noqa: E402

from pndm import SamplerScheduler  # noqa: E402
from pndm.calibration import Calibration  # noqa: E402
from pndm.samplers import SAMPLERS  # noqa: E402
from pndm.tuning.diffusers import (  # noqa: E402
    conditioning,
    guided_unet,
    latent_size,
    use_tuned,
)
from pndm.tuning.grid_file import GridFile  # noqa: E402
from pndm.wrapper import make_eps_fn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FIXED = [name for name, method in SAMPLERS.items() if not method.adaptive]
PROMPTS = ["a red cube", "two cats"]
GUIDANCE = 7.5


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_sdxl(tmp_path_factory.mktemp("sdxl"))


def noise() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def generate(pipe, scheduler: SamplerScheduler, **kwargs) -> tuple[torch.Tensor, int]:
    """The pipeline's latents with ``scheduler``, and its UNet calls."""
    pipe.scheduler = scheduler
    with CallCounter(pipe.unet) as counter:
        out = pipe(PROMPTS, guidance_scale=GUIDANCE, latents=noise(), output_type="latent",
                   **kwargs).images  # fmt: skip
    return out, counter.calls


def reference(pipe, scheduler: SamplerScheduler, grid: torch.Tensor, eps_wrap=None):
    """The pure sampler on the pipeline's guided ε (module docstring)."""
    size = latent_size(pipe, None, None)
    guided = guided_unet(pipe, conditioning(pipe, PROMPTS, 2, None, size), GUIDANCE, 8)
    eps_fn = make_eps_fn(guided, scheduler.schedule, scheduler.config.prediction_type)
    eps_fn = eps_fn if eps_wrap is None else eps_wrap(eps_fn)
    run = SAMPLERS[scheduler.config.method]
    return run(eps_fn, noise(), grid, scheduler.schedule, **scheduler.options)


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_every_method_in_the_pipeline_is_the_pure_sampler(request, which: str, name: str) -> None:
    pipe = request.getfixturevalue(which)
    scheduler = SamplerScheduler.from_config(pipe.scheduler.config, method=name)
    out, calls = generate(pipe, scheduler, num_inference_steps=4)
    assert calls == len(scheduler.timesteps) == SAMPLERS[name].nfe(4)  # one guided batch a call
    assert torch.equal(out, reference(pipe, scheduler, scheduler.grid(4)))


@pytest.mark.parametrize(
    ("which", "key", "name"),
    [("sd", "StableDiffusionTimesteps", "ipndm"), ("sd", "StableDiffusionTimesteps", "f-pndm"),
     ("sdxl", "StableDiffusionXLTimesteps", "pec-data"), ("sd", "StableDiffusionSigmas", "plms"),
     ("sdxl", "StableDiffusionSigmas", "dpmpp-2m")],
)  # fmt: skip
def test_align_your_steps_timesteps_and_sigmas(request, which: str, key: str, name: str) -> None:
    """``pipe(timesteps=...)`` and ``pipe(sigmas=...)`` pass diffusers' retrieve_timesteps check;
    the scheduler lists the method's calls on that grid."""
    pipe = request.getfixturevalue(which)
    scheduler = SamplerScheduler.from_config(pipe.scheduler.config, method=name)
    how = {"sigmas" if "Sigmas" in key else "timesteps": AysSchedules[key]}
    out, calls = generate(pipe, scheduler, **how)
    grid = scheduler.grid(**how)
    assert grid.numel() == 11 and calls == SAMPLERS[name].nfe(10) == len(scheduler.timesteps)
    assert torch.equal(out, reference(pipe, scheduler, grid))


@pytest.mark.parametrize("name", FIXED)
def test_img2img_at_strength_0_6_makes_the_expected_calls(sd, name: str) -> None:
    """img2img slices timesteps[t_start:] (t_start = n - int(0.6 n)) and sets the begin index:
    the run restarts there and the UNet is called once per entry left."""
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SamplerScheduler.from_config(sd.scheduler.config, method=name)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with CallCounter(pipe.unet) as counter:
        generator = torch.Generator().manual_seed(2)
        out = pipe(PROMPTS, image=image, strength=0.6, num_inference_steps=10,
                   output_type="latent", generator=generator).images  # fmt: skip
    t_start = 10 - int(10 * 0.6)
    assert counter.calls == SAMPLERS[name].nfe(10) - t_start
    assert pipe.scheduler.begin_index == t_start and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", ["ipndm", "f-pndm", "pec-data", "dpmpp-2m"])
@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_v_prediction_configs(tmp_path, which: str, name: str) -> None:
    build = tiny_sd if which == "sd" else tiny_sdxl
    pipe = build(tmp_path, prediction_type="v_prediction")
    scheduler = SamplerScheduler.from_config(pipe.scheduler.config, method=name)
    assert scheduler.config.prediction_type == "v_prediction"
    out, _ = generate(pipe, scheduler, num_inference_steps=5)
    assert torch.equal(out, reference(pipe, scheduler, scheduler.grid(5)))


@pytest.mark.parametrize("name", ["ipndm", "pec-data", "plms"])
def test_a_calibrated_tuned_grid_runs_inside_the_pipeline(sd, name: str) -> None:
    """A grid file's grid, options and calibration: the pipeline calls the UNet at t_k + δ_k and
    its images are the pure sampler's with that calibration."""
    base = SamplerScheduler.from_config(sd.scheduler.config)
    grid = torch.tensor([999.0, 780.5, 512.25, 301.0, 120.0, 35.0, -1.0], dtype=torch.float64)
    calibration = Calibration(tuple(grid[:-1].tolist()), (4.0, -3.5, 2.0, 0.0, -6.0, 1.5),
                              (1.02, 0.98, 1.0, 1.03, 0.97, 1.01))  # fmt: skip
    options = {"lower_order_final": True}
    tuned = GridFile(tuple(grid.tolist()), name, 6, options, "sha256:x", calibration=calibration)
    kwargs = use_tuned(sd, tuned)
    scheduler = sd.scheduler
    assert isinstance(scheduler, SamplerScheduler) and scheduler.options == options
    out, calls = generate(sd, scheduler, **kwargs)
    assert calls == SAMPLERS[name].nfe(6, **options)
    assert scheduler.timesteps[0] == pytest.approx(999.0 + 4.0)
    assert torch.equal(out, reference(sd, scheduler, grid, calibration.apply))
    sd.scheduler = diffusers.PNDMScheduler.from_config(base.config)


def test_pndm_never_imports_diffusers() -> None:
    code = (
        "import sys, pndm, pndm.tuning; pndm.SamplerScheduler; pndm.tuning.use_tuned; "
        "print('diffusers' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sd_pipeline_keeps_its_own_scheduler_api(sd) -> None:
    """The swapped scheduler's config still reads as a diffusers scheduler config."""
    scheduler = SamplerScheduler.from_config(sd.scheduler.config, method="ipndm")
    back = diffusers.PNDMScheduler.from_config(scheduler.config)
    assert back.config.steps_offset == 1 and back.config.beta_schedule == "scaled_linear"
