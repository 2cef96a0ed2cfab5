"""PNDMPipeline: noise -> a pure sampler on the scheduler's grid -> images (diffusers-compatible).

The pipeline is thin glue. ``__call__`` draws the initial noise exactly as diffusers does, builds
one ε function with ``wrapper.make_eps_fn`` (prediction type from the scheduler config), reads the
descending grid t_0 > ... > t_N = -1 from ``scheduler.grid`` (leading / linspace / trailing and
``steps_offset`` as the config says) and runs ``SAMPLERS[method]`` on it. Because the pure F-PNDM
and PLMS samplers equal ``PNDMScheduler.step`` on the same grid, the default images equal
diffusers' ``PNDMPipeline`` (float32 rounding; see tests/test_pipeline.py).

Precision. The noise is always drawn in float32 from the generator (so an fp16 run starts from the
same noise as an fp32 run), and the solver state x and every ε stay in float32; only the UNet runs
in its own dtype (the input is cast to it, its output cast back by the wrapper). diffusers feeds
float32 noise to a half-precision UNet and crashes (diffusers-compat.md §8); casting the whole
state to fp16 instead would round x_n at every step, and the PNDM history (four ε's combined with
weights up to 59/24) amplifies that. A float64 UNet gets a float64 solver.

Speed. The samplers precompute their coefficients on the device before the loop, so a step is only
tensor arithmetic: no host-device sync, no tensor built from Python numbers. On the CPU the UNet
gets channels-last inputs by default (its weights untouched), which is what lets its wide 3x3
convolutions run as Winograd (`pndm.models.inference`). Opt-in fast paths:
``channels_last=True`` converts the UNet (in place; it stays converted) and feeds it
channels-last inputs on any device; ``cuda_graphs=True`` replays each model call from a CUDA graph
(`pndm.fast.CudaGraphModel`, captured once per input shape and cached on the pipeline);
``compile=True`` (or a torch.compile mode) runs ``torch.compile(unet)``, compiled once and cached on
the pipeline for later calls. Within a call the UNet's weights are constants
(`pndm.models.inference.weight_cache`): kernels derived from them (Winograd, sub-pixel, the stacked
time projections) are made on the first model call and reused by the others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from pndm.config import DIFFUSERS_VERSION, FrozenConfig
from pndm.fast import CudaGraphModel, compile_mode
from pndm.io import PathLike, component_dir, read_json, write_json
from pndm.models.inference import weight_cache
from pndm.models.unet_2d import UNet2DModel
from pndm.outputs import BaseOutput
from pndm.samplers import get_sampler, nfe
from pndm.scheduler import PNDMScheduler
from pndm.wrapper import make_eps_fn

OUTPUT_TYPES = ("pil", "np", "pt")
MODEL_INDEX_NAME = "model_index.json"
SCHEDULER_CONFIG_NAME = PNDMScheduler.config_name
MODEL_INDEX = {
    "_class_name": "PNDMPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "PNDMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}
_MAX_SEED = 2**64  # torch.Generator.manual_seed takes seeds below this

Generator = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[int, torch.Tensor, torch.Tensor], Any]


@dataclass
class ImagePipelineOutput(BaseOutput):
    """``images``: PIL images, a (B, H, W, C) numpy array or a (B, C, H, W) tensor, in [0, 1]."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class PNDMPipeline:
    """diffusers' ``PNDMPipeline(unet, scheduler)``: unconditional image generation.

    ``scheduler`` may be any scheduler with a ``.config`` mapping (a diffusers DDPMScheduler
    included); as in diffusers it is replaced by ``PNDMScheduler.from_config(scheduler.config)``.
    Keys another scheduler class uses (``variance_type``, ``clip_sample``, ...) are dropped
    silently, as diffusers does.
    """

    def __init__(self, unet: Any, scheduler: Any) -> None:
        _check_unet(unet)
        self.unet = unet
        self.scheduler = as_pndm_scheduler(scheduler)
        self._progress_bar_config: dict[str, Any] = {}
        self._compiled: tuple[Any, ...] | None = None  # (unet, mode, torch.compile(unet))
        self._graphed: tuple[Any, ...] | None = None  # (what it was captured for, CudaGraphModel)

    # --- components, device, dtype ------------------------------------------------------------

    @property
    def components(self) -> dict[str, Any]:
        """``{"unet": ..., "scheduler": ...}``, so ``PNDMPipeline(**pipe.components)`` works."""
        return {"unet": self.unet, "scheduler": self.scheduler}

    @property
    def config(self) -> FrozenConfig:
        """The ``model_index.json`` content this pipeline saves."""
        return FrozenConfig(MODEL_INDEX)

    @property
    def device(self) -> torch.device:
        """The UNet's device: where noise is placed and sampling runs."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (the solver itself runs in float32, see the module docstring)."""
        return next(self.unet.parameters()).dtype

    def to(self, *args: Any, **kwargs: Any) -> PNDMPipeline:
        """Move or cast the UNet, as ``nn.Module.to``: ``to("cuda")``, ``to(torch.float16)``,
        ``to("cuda", torch.bfloat16)``. Returns the pipeline."""
        self.unet.to(*args, **kwargs)
        return self

    # --- progress bar -------------------------------------------------------------------------

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Keyword arguments for tqdm, e.g. ``disable=True`` (replaces the previous ones)."""
        self._progress_bar_config = kwargs

    def progress_bar(self, iterable: Any = None, total: int | None = None) -> Any:
        """A tqdm bar over ``iterable`` or of ``total`` units, with the configured options."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, **self._progress_bar_config)

    # --- folders ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: PathLike,
        torch_dtype: torch.dtype | str | None = None,
        *,
        unet: Any = None,
        scheduler: Any = None,
        variant: str | None = None,
    ) -> PNDMPipeline:
        """Load a local folder: the pipeline layout (``model_index.json``, ``unet/``,
        ``scheduler/``) or the flat hub layout (``config.json``, weights and
        ``scheduler_config.json`` at the root, as google/ddpm-cifar10-32). Any scheduler config
        (a DDPMScheduler's included) becomes a PNDMScheduler. ``unet=`` / ``scheduler=`` replace
        a component instead of loading it; ``torch_dtype`` casts the loaded UNet."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"pipeline folder not found: {folder} (local folders only)")
        _check_model_index(folder)
        if unet is None:
            subfolder = "unet" if (folder / "unet" / "config.json").is_file() else None
            unet = UNet2DModel.from_pretrained(
                folder, subfolder=subfolder, torch_dtype=torch_dtype, variant=variant
            )
        if scheduler is None:
            path = component_dir(folder, "scheduler", SCHEDULER_CONFIG_NAME)
            scheduler = scheduler_from_config(read_json(path / SCHEDULER_CONFIG_NAME))
        return cls(unet=unet, scheduler=scheduler)

    def save_pretrained(
        self, save_directory: PathLike, safe_serialization: bool = True, variant: str | None = None
    ) -> None:
        """Write diffusers' layout: ``unet/``, ``scheduler/``, then ``model_index.json``.

        Every file is written atomically; ``model_index.json`` is removed first and written last,
        so a folder that has one is complete.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_INDEX_NAME).unlink(missing_ok=True)
        self.unet.save_pretrained(
            folder / "unet", safe_serialization=safe_serialization, variant=variant
        )
        self.scheduler.save_pretrained(folder / "scheduler")
        write_json(folder / MODEL_INDEX_NAME, dict(MODEL_INDEX))

    # --- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: Generator = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        method: str | None = None,
        seeds: Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        timesteps: Sequence[float] | None = None,
        callback: Callback | None = None,
        channels_last: bool | None = None,
        compile: bool | str = False,
        cuda_graphs: bool = False,
        **method_options: Any,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images with ``num_inference_steps`` steps.

        Args (diffusers' first, then extensions, keyword-only):
            generator: a ``torch.Generator`` or one per image, used as diffusers' ``randn_tensor``
                (CPU generators draw on the CPU and the noise is moved to the UNet's device).
            output_type: "pil" (list of PIL images, mode "L" for one channel), "np" (B, H, W, C)
                float32 array, "pt" (B, C, H, W) float32 tensor on the UNet's device; all in
                [0, 1]. Anything else raises (diffusers silently returns numpy).
            method: a name in ``pndm.samplers.SAMPLERS``; None = the scheduler's own PNDM:
                "f-pndm" (N + 9 calls), or "plms" (N + 1) with ``skip_prk_steps``.
            seeds: one integer per image; image i's noise is ``torch.randn((1, C, H, W),
                generator=torch.Generator("cpu").manual_seed(seeds[i]))``, so it does not depend
                on the batch it is in. Excludes ``generator`` and ``latents``.
            latents: the initial noise x_T itself, (B, C, H, W); excludes generator and seeds.
            timesteps: explicit model times t_0 > ... > t_{N-1} instead of the config's spacing
                (the target -1, the final ᾱ, is appended).
            callback: ``callback(i, t, x)`` before every model call: i counts calls from 0
                (one step of a multistage method makes several), t is the (B,) float64 time
                tensor, x the model input in the solver's dtype. Reading t or x may sync.
            channels_last: True: convert the UNet (in place, it stays so) and its inputs to
                channels-last; False: neither; None: channels-last inputs on the CPU only (the
                UNet untouched), plain NCHW elsewhere.
            compile: run ``torch.compile(unet)``, compiled on first use and cached; True or a
                mode ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs").
            cuda_graphs: replay every model call from a CUDA graph (CUDA only; captured on the
                first call of each input shape and kept for later calls).
            **method_options: options of the sampler (e.g. ``order=`` for "vab"); unknown names
                raise, listing the method's options.

        Returns ``ImagePipelineOutput(images=...)``, or ``(images,)`` if not ``return_dict``.
        """
        seeds = _check_call(batch_size, output_type, generator, seeds, latents)
        name = self._method(method)
        grid = self.scheduler.grid(num_inference_steps, timesteps)
        calls = nfe(name, grid.numel() - 1, **method_options)  # also checks the option names
        x = self._initial_noise(batch_size, generator, seeds, latents)
        model = self._model(channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs)
        with self.progress_bar(total=calls) as bar, weight_cache():  # weights constant per call
            eps_fn = self._eps_fn(model, x.dtype, callback, bar)
            x = get_sampler(name)(eps_fn, x, grid, self.scheduler.schedule, **method_options)
        images = postprocess(x, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _method(self, method: str | None) -> str:
        config = self.scheduler.config
        if config.get("v_prediction_compat") and config.prediction_type == "v_prediction":
            raise ValueError(
                "v_prediction_compat='diffusers' exists only in PNDMScheduler.step; the pipeline "
                "converts every model output to ε at its own point (set v_prediction_compat=None)"
            )
        if method is None:
            return "plms" if config.skip_prk_steps else "f-pndm"
        get_sampler(method)  # raises, listing the methods
        return method

    def _initial_noise(
        self,
        batch_size: int,
        generator: Generator,
        seeds: list[int] | None,
        latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_T in the solver's dtype on the UNet's device (drawn in float32)."""
        shape = (batch_size, *self._sample_shape(latents))
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        if latents is not None:
            return _check_latents(latents, shape).to(device=self.device, dtype=dtype)
        if seeds is not None:
            generator = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        return noise.to(dtype)

    def _sample_shape(self, latents: torch.Tensor | None) -> tuple[int, int, int]:
        """(C, H, W): the UNet's in_channels and sample_size (int or (H, W)).

        Without a sample_size the size of ``latents`` is used (any multiple the UNet accepts).
        """
        config = self.unet.config
        size = config["sample_size"]
        if size is None and isinstance(latents, torch.Tensor) and latents.ndim == 4:
            size = tuple(latents.shape[-2:])
        if size is None:
            raise ValueError("unet.config.sample_size is None; pass latents of the size you want")
        height, width = (size, size) if isinstance(size, int) else size
        return int(config["in_channels"]), int(height), int(width)

    def _model(
        self, *, channels_last: bool | None, compile: bool | str, cuda_graphs: bool = False
    ) -> Callable[..., torch.Tensor]:
        """``model(x, t) -> output`` in the UNet's conventions, with the fast paths applied."""
        unet = self.unet
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        last = self.device.type == "cpu" if channels_last is None else channels_last
        mode = compile_mode(compile)
        if mode is not None:
            unet = self._compiled_unet(mode)
        layout = torch.channels_last if last else torch.contiguous_format

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return unet(x.contiguous(memory_format=layout), t, return_dict=False)[0]

        return self._graphed_model(model, (last, mode)) if cuda_graphs else model

    def _compiled_unet(self, mode: str) -> Any:
        """``torch.compile(self.unet)``, made once per UNet object and mode, reused across calls."""
        if self._compiled is None or self._compiled[:2] != (self.unet, mode):
            if mode == "default":
                compiled = torch.compile(self.unet)
            else:
                compiled = torch.compile(self.unet, mode=mode)
            self._compiled = (self.unet, mode, compiled)
        return self._compiled[2]

    def _graphed_model(self, model: Callable[..., torch.Tensor], key: tuple[Any, ...]) -> Any:
        """One `CudaGraphModel` per UNet, weights' storage, layout and compile mode."""
        if self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs the UNet on a CUDA device, not {self.device}")
        key = (self.unet, self.unet.conv_in.weight.data_ptr(), self.dtype, *key)
        if self._graphed is None or self._graphed[0] != key:
            self._graphed = (key, CudaGraphModel(model))
        return self._graphed[1]

    def _eps_fn(
        self, model: Callable[..., torch.Tensor], solver_dtype: torch.dtype, callback: Any, bar: Any
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The wrapper's ε function, plus the callback and a progress tick per model call."""
        model_dtype = self.dtype if self.dtype != solver_dtype else None
        eps = make_eps_fn(
            model, self.scheduler.schedule, self.scheduler.config.prediction_type, 0.0, model_dtype
        )
        count = 0

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal count
            if callback is not None:
                callback(count, t, x)
            count += 1
            out = eps(x, t)
            bar.update(1)
            return out

        return eps_fn

    @staticmethod
    def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
        """(B, H, W, C) floats in [0, 1] -> PIL images ("L" for one channel), as diffusers."""
        return numpy_to_pil(images)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(unet={type(self.unet).__name__}, scheduler={self.scheduler!r})"
        )


# --- schedulers ---------------------------------------------------------------------------------


def _scheduler_keys() -> frozenset[str]:
    params = inspect.signature(PNDMScheduler.__init__).parameters
    return frozenset(name for name in params if name != "self")


def scheduler_from_config(config: Mapping[str, Any], source: str | None = None) -> PNDMScheduler:
    """``PNDMScheduler.from_config`` of any scheduler's config; ``source`` is its class name.

    The keys of another scheduler class (a DDPMScheduler's ``variance_type``, ``clip_sample``,
    ...) are dropped silently, as diffusers does; a PNDMScheduler config keeps its unknown keys,
    so that ``from_config`` warns about them.
    """
    source = config.get("_class_name", source)
    if source != "PNDMScheduler":
        keys = _scheduler_keys()
        config = {k: v for k, v in config.items() if k in keys or k.startswith("_")}
    return PNDMScheduler.from_config(dict(config))


def as_pndm_scheduler(scheduler: Any) -> PNDMScheduler:
    """diffusers' ``PNDMScheduler.from_config(scheduler.config)`` for any scheduler object."""
    config = getattr(scheduler, "config", None)
    if not isinstance(config, Mapping):
        raise ValueError(
            f"scheduler must be a scheduler with a .config mapping (e.g. a PNDMScheduler or a "
            f"diffusers DDPMScheduler), got {type(scheduler).__name__}"
        )
    return scheduler_from_config(config, source=type(scheduler).__name__)


def _check_model_index(folder: Path) -> None:
    """A model_index.json, where there is one, must name a UNet2DModel as its unet."""
    path = folder / MODEL_INDEX_NAME
    if not path.is_file():
        return
    entry = read_json(path).get("unet")
    if entry is not None and (not isinstance(entry, list) or entry[-1] != "UNet2DModel"):
        raise ValueError(f"{path} names unet {entry!r}; PNDMPipeline needs a UNet2DModel")


def _check_unet(unet: Any) -> None:
    config = getattr(unet, "config", None)
    ok = callable(unet) and isinstance(config, Mapping) and hasattr(unet, "parameters")
    if not ok or "in_channels" not in config or "sample_size" not in config:
        raise ValueError(
            f"unet must be a UNet2DModel (a module with config.in_channels and "
            f"config.sample_size), got {type(unet).__name__}"
        )


# --- noise ----------------------------------------------------------------------------------


def _as_generator_list(generator: Generator) -> list[torch.Generator]:
    generators = list(generator) if isinstance(generator, list | tuple) else [generator]
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
        return torch.randn(tuple(shape), generator=generators[0], device=draw_on, dtype=dtype).to(
            device
        )
    if len(generators) != shape[0]:
        raise ValueError(
            f"generator is a list of {len(generators)} generators for a batch of {shape[0]}; "
            "pass one generator per image, or a single generator"
        )
    one = (1, *shape[1:])
    draws = [torch.randn(one, generator=g, device=draw_on, dtype=dtype) for g in generators]
    return torch.cat(draws).to(device)


# --- validation -----------------------------------------------------------------------------


def _check_call(
    batch_size: Any, output_type: Any, generator: Any, seeds: Any, latents: Any
) -> list[int] | None:
    """Validate the arguments that need no model; returns the seeds as a list of ints."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(
            f"unknown output_type {output_type!r}; choose one of {', '.join(OUTPUT_TYPES)}"
        )
    given = [
        n
        for n, v in (("generator", generator), ("seeds", seeds), ("latents", latents))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"pass only one of generator, seeds and latents; got {' and '.join(given)}"
        )
    return None if seeds is None else _check_seeds(seeds, int(batch_size))


def _check_seeds(seeds: Any, batch_size: int) -> list[int]:
    if isinstance(seeds, np.ndarray) and seeds.ndim == 1:
        seeds = seeds.tolist()
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise ValueError(f"seeds must be a list of integers, one per image, got {seeds!r}")
    if len(seeds) != batch_size:
        raise ValueError(
            f"seeds has {len(seeds)} entries for batch_size={batch_size}; give one seed per image"
        )
    for seed in seeds:
        integer = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
        if not integer or not 0 <= int(seed) < _MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, 2**64), got {seed!r}")
    return [int(seed) for seed in seeds]


def _check_latents(latents: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise ValueError(f"latents must be a floating-point tensor of shape {shape}")
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents has shape {tuple(latents.shape)}; expected {shape}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents (the initial noise) contains NaN or inf")
    return latents


# --- images ---------------------------------------------------------------------------------


def postprocess(
    x: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Samples in [-1, 1] -> images in [0, 1] of the requested ``output_type`` (float32)."""
    images = (x / 2 + 0.5).clamp(0, 1).float()
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).numpy()
    return array if output_type == "np" else numpy_to_pil(array)


def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
    """(B, H, W, C) or (H, W, C) floats in [0, 1] -> PIL images (mode "L" for one channel)."""
    if images.ndim == 3:
        images = images[None, ...]
    pixels = (images * 255).round().astype("uint8")
    if pixels.shape[-1] == 1:
        return [PIL.Image.fromarray(p[..., 0]) for p in pixels]  # uint8 2-D: mode "L"
    return [PIL.Image.fromarray(p) for p in pixels]
