"""Tuning a diffusers text-to-image pipeline, and running the result in it.

`pipeline_eps` is the ε a Stable Diffusion (1.x/2.x) or SDXL pipeline's sampler sees: its UNet on
latents under classifier-free guidance, ε_u + g (ε_c - ε_u), converted from the config's
``prediction_type``. It follows diffusers 0.42's ``StableDiffusionPipeline.__call__`` (the prompt
embeddings from ``encode_prompt``, unconditional first; guidance on the UNet's output) and
``StableDiffusionXLPipeline.__call__`` (its added conditioning: the pooled text embedding and the
time ids [h, w, 0, 0, h, w] of ``_get_add_time_ids`` with the default sizes and crop). The prompt
embeddings are computed once; the UNet runs on ``batch_size`` latents at a time (twice that with
guidance), so any number of tuning noises fits the device. `tune_diffusers_pipeline` tunes a grid
on it (`pndm.tuning.tune`); `use_tuned` puts a tuned grid into the pipeline. For any other
pipeline, write its ε and call `pndm.tuning.tune_timesteps` (README).

diffusers is never imported here: the pipeline passed in brings it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pndm.checks import check_count, check_flag
from pndm.compat.sampler_scheduler import SamplerScheduler
from pndm.noise import initial_noise
from pndm.tuning.api import Tuned, tune
from pndm.tuning.defaults import default_samples
from pndm.tuning.grid_file import GridFile, load_grid
from pndm.tuning.objective import Progress
from pndm.tuning.search import check_tune_request, tuning_seeds
from pndm.wrapper import EpsFn, make_eps_fn


@dataclass(frozen=True)
class Conditioning:
    """Per prompt, the text embeddings (unconditional, conditional) and, for SDXL, the pooled
    embeddings and the time ids; ``index[i]``: the prompt of latent i."""

    negative: torch.Tensor
    positive: torch.Tensor
    index: torch.Tensor
    negative_pooled: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def unet_kwargs(self, rows: slice) -> dict[str, Any]:
        """The UNet's conditioning of latents ``rows`` (guidance doubles them, uncond first)."""
        i = self.index[rows]
        kwargs: dict[str, Any] = {
            "encoder_hidden_states": torch.cat([self.negative[i], self.positive[i]])
        }
        if self.pooled is not None and self.negative_pooled is not None:
            time_ids = self.time_ids.expand(2 * i.numel(), -1)  # type: ignore[union-attr]
            pooled = torch.cat([self.negative_pooled[i], self.pooled[i]])
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        return kwargs


def latent_size(pipe: Any, height: int | None, width: int | None) -> tuple[int, int]:
    """(height, width) of the images: the pipeline's default (``unet.config.sample_size`` times
    ``vae_scale_factor``) unless given."""
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return (height or default, width or default)


@torch.no_grad()
def conditioning(
    pipe: Any,
    prompts: Sequence[str],
    samples: int,
    negative_prompt: str | Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
) -> Conditioning:
    """The prompts' conditioning, computed once; latent i gets prompt i % len(prompts)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    out = pipe.encode_prompt(
        prompt=prompts,
        device=pipe.device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative_prompt,
    )
    index = torch.arange(samples, device=pipe.device) % len(prompts)  # fmt: skip
    if len(out) == 2:  # StableDiffusionPipeline: (prompt_embeds, negative_prompt_embeds)
        return Conditioning(out[1], out[0], index)
    positive, negative, pooled, negative_pooled = out  # StableDiffusionXLPipeline
    h, w = size or latent_size(pipe, None, None)
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=positive.dtype, device=pipe.device)
    return Conditioning(negative, positive, index, negative_pooled, pooled, time_ids)


def guided_unet(pipe: Any, cond: Conditioning, guidance_scale: float, batch_size: int) -> EpsFn:
    """The guided UNet output at (x, t), ``batch_size`` latents per UNet call, in x's dtype."""
    unet = pipe.unet

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, x.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            x_in = torch.cat([x[rows]] * 2).to(unet.dtype)
            t_in = torch.cat([t[rows]] * 2)
            out = unet(x_in, t_in, **cond.unet_kwargs(rows), return_dict=False)[0]
            uncond, text = out.chunk(2)
            outputs.append(uncond + guidance_scale * (text - uncond))
        return torch.cat(outputs).to(x.dtype)

    return model


def pipeline_eps(
    pipe: Any,
    prompts: Sequence[str],
    samples: int,
    *,
    guidance_scale: float = 7.5,
    negative_prompt: str | Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 8,
) -> EpsFn:
    """The guided ε(x, t) that the pipeline's sampler sees for ``samples`` latents (module
    docstring), the output converted by the scheduler config's ``prediction_type``."""
    batch_size = check_count("batch_size", batch_size)
    size = latent_size(pipe, height, width)
    cond = conditioning(pipe, prompts, samples, negative_prompt, size)
    scheduler = SamplerScheduler.from_config(pipe.scheduler.config)  # checks the schedule keys
    model = guided_unet(pipe, cond, float(guidance_scale), batch_size)
    return make_eps_fn(model, scheduler.schedule, scheduler.config.prediction_type)


def latent_noise(
    pipe: Any, samples: int, seed: int, size: tuple[int, int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Per-seed tuning noise of the pipeline's latent shape (`pndm.tuning.search.tuning_seeds`)."""
    shape = (samples, pipe.unet.config.in_channels, *(s // pipe.vae_scale_factor for s in size))
    return initial_noise(shape, pipe.device, dtype, seeds=tuning_seeds(samples, seed))


def tune_diffusers_pipeline(
    pipe: Any,
    prompts: Sequence[str],
    *,
    method: str,
    nfe: int,
    guidance_scale: float = 7.5,
    negative_prompt: str | Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    samples: int | None = None,
    calibrate: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    iterations: int | None = None,
    search_options: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Tuned:
    """`pndm.tuning.tune` on a diffusers Stable Diffusion or SDXL pipeline: ``method``'s grid at
    ``nfe`` UNet calls (each call is a guided pair per latent) for ``samples`` tuning noises
    (default 64, or 256 with ``calibrate``), latent i conditioned on prompt i % len(prompts);
    ``batch_size`` latents per UNet call. Use the result with `use_tuned`."""
    samples = default_samples(check_flag("calibrate", calibrate)) if samples is None else samples
    check_tune_request(method, nfe, samples=samples, seed=seed, search_options=search_options,
                       **options)  # fmt: skip
    size = latent_size(pipe, height, width)
    eps_fn = pipeline_eps(pipe, prompts, samples, guidance_scale=guidance_scale,
                          negative_prompt=negative_prompt, height=size[0], width=size[1],
                          batch_size=batch_size)  # fmt: skip
    schedule = SamplerScheduler.from_config(pipe.scheduler.config).schedule
    noise = latent_noise(pipe, samples, seed, size)
    with torch.no_grad():
        return tune(eps_fn, schedule, noise, method=method, nfe=nfe, budget=iterations,
                    search_options=search_options, calibrate=calibrate, progress=progress,
                    **options)  # fmt: skip


def use_tuned(pipe: Any, tuned: Tuned | GridFile | str | Path) -> dict[str, Any]:
    """Run a tuned grid (a `Tuned`, a loaded grid file, or its path) in ``pipe``: its scheduler
    becomes a `SamplerScheduler` of the grid's method, options and calibration on the pipeline's
    schedule; returns the call's keyword arguments: ``pipe(prompt, **use_tuned(pipe, tuned))``."""
    if isinstance(tuned, str | Path):
        tuned = load_grid(tuned)
    pipe.scheduler = SamplerScheduler.from_config(
        pipe.scheduler.config, method=tuned.method, options=dict(tuned.options),
        calibration=tuned.calibration,
    )  # fmt: skip
    times = tuned.timesteps
    return {"timesteps": times.tolist() if isinstance(times, torch.Tensor) else list(times)}
