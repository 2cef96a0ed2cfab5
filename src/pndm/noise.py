"""Initial noise x_T: per-image seeds, generators as diffusers draws them, or given latents.

An image's seed alone decides its noise (NVlabs/edm's convention): image i of a ``seeds`` call is
``torch.randn((1, C, H, W), generator=torch.Generator("cpu").manual_seed(seeds[i]))``, whatever
batch it is in. ``randn_tensor`` reproduces diffusers' function of that name bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pndm.checks import check_seed
from pndm.images import image_shape

Generator = torch.Generator | Sequence[torch.Generator] | None


def check_seeds(seeds: Any, batch_size: int) -> list[int]:
    """``seeds``: one integer per image (a list, tuple or 1-D array) -> a list of ints."""
    if isinstance(seeds, np.ndarray) and seeds.ndim == 1:
        seeds = seeds.tolist()
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise ValueError(f"seeds must be a list of integers, one per image, got {seeds!r}")
    if len(seeds) != batch_size:
        raise ValueError(
            f"seeds has {len(seeds)} entries for batch_size={batch_size}; give one seed per image"
        )
    return [check_seed(seed) for seed in seeds]


def check_source(generator: Any, seeds: Any, latents: Any) -> None:
    """At most one of generator, seeds and latents decides the noise."""
    given = [
        name
        for name, value in (("generator", generator), ("seeds", seeds), ("latents", latents))
        if value is not None
    ]
    if len(given) > 1:
        given_text = " and ".join(given)
        raise ValueError(f"pass only one of generator, seeds and latents; got {given_text}")


def noise_shape(
    unet_config: Mapping[str, Any], batch_size: int, latents: Any = None
) -> tuple[int, int, int, int]:
    """(B, C, H, W): the UNet's in_channels and sample_size (int or (H, W)); without a
    sample_size, the size of ``latents`` (any size the UNet accepts)."""
    if (
        unet_config["sample_size"] is None
        and isinstance(latents, torch.Tensor)
        and latents.ndim == 4
    ):
        return batch_size, int(unet_config["in_channels"]), *map(int, latents.shape[-2:])
    if unet_config["sample_size"] is None:
        raise ValueError("unet.config.sample_size is None; pass latents of the size you want")
    return batch_size, *image_shape(unet_config)


def initial_noise(
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    generator: Generator = None,
    seeds: Sequence[int] | None = None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_T of ``shape`` in ``dtype`` on ``device``: drawn in float32 (so half-precision models
    start from the same noise), from per-image seeds, generators or the global RNG; or
    ``latents`` as given, after checking them."""
    if latents is not None:
        return check_latents(latents, shape).to(device=device, dtype=dtype)
    if seeds is not None:
        generator = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)


def check_latents(latents: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise ValueError(f"latents must be a floating-point tensor of shape {shape}")
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents has shape {tuple(latents.shape)}; expected {shape}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents (the initial noise) contains NaN or inf")
    return latents


def randn_tensor(
    shape: Sequence[int],
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise drawn as diffusers' ``randn_tensor`` draws it.

    One generator draws the whole batch; a list draws one (1, ...) sample per generator (a
    one-element list is one generator, as in diffusers; otherwise its length must equal the
    batch size). No generator: the global RNG of ``device``.
    """
    device = torch.device(device or "cpu")
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    generators = _as_generator_list(generator)
    draw_on = _draw_device(generators, device)
    if len(generators) == 1:
        noise = torch.randn(tuple(shape), generator=generators[0], device=draw_on, dtype=dtype)
        return noise.to(device)
    if len(generators) != shape[0]:
        raise ValueError(
            f"generator is a list of {len(generators)} generators for a batch of {shape[0]}; "
            "pass one generator per image, or a single generator"
        )
    one = (1, *shape[1:])
    draws = [torch.randn(one, generator=g, device=draw_on, dtype=dtype) for g in generators]
    return torch.cat(draws).to(device)


def _as_generator_list(generator: Generator) -> list[torch.Generator]:
    generators = list(generator) if isinstance(generator, list | tuple) else [generator]
    if not generators:  # would otherwise fail deep inside as a KeyError
        raise ValueError(
            "generator must be a torch.Generator or a list of them, one per image, got "
            f"an empty {type(generator).__name__}"
        )
    for g in generators:
        if not isinstance(g, torch.Generator):
            raise ValueError(
                f"generator must be a torch.Generator or a list of them, got {type(g).__name__}"
            )
    return generators


def _draw_device(generators: list[torch.Generator], device: torch.device) -> torch.device:
    """Where diffusers draws: on the generators' device; CPU generators for any device."""
    kinds = {g.device.type for g in generators}
    if len(kinds) > 1:
        raise ValueError(f"the generators are on different device types: {sorted(kinds)}")
    kind = kinds.pop()
    if kind == device.type:
        return device
    if kind == "cpu":
        return torch.device("cpu")
    raise ValueError(
        f"cannot draw noise for device {device} from a generator on {kind}; use a CPU "
        f"generator or one on {device.type}"
    )
