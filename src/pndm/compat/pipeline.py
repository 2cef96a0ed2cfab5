"""PNDMPipeline: noise -> a pure sampler on the scheduler's grid -> images (diffusers-compatible).

Glue only: arguments -> grid (`pndm.grids`) -> noise (`pndm.noise`, drawn as diffusers draws it)
-> prepared model (`pndm.runtime.fast`) -> ``SAMPLERS[method]`` on one ε function
(`pndm.wrapper`) -> images (`pndm.images`). The pure F-PNDM and PLMS samplers equal
``PNDMScheduler.step`` on the same grid, so the default images equal diffusers' ``PNDMPipeline``.

Precision: the noise is drawn in float32 and the solver state and every ε stay in float32 (a
float64 UNet gets a float64 solver); only the UNet runs in its own dtype (on the CPU pndm's
half-precision UNet convolves the float32 state in float32 first, `UNet2DModel.input_conv`).
diffusers feeds float32 noise to a half-precision UNet and crashes (diffusers-compat.md §8); a
half-precision state would round x_n at every step, and the PNDM history (weights up to 59/24)
amplifies that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from pndm import images, noise
from pndm.calibration import Calibration, check_calibration
from pndm.checks import check_count
from pndm.compat import folders
from pndm.compat.outputs import ImagePipelineOutput
from pndm.config import FrozenConfig
from pndm.files import PathLike
from pndm.grids import default_method
from pndm.guidance import Conditioning, Labels, check_class_names, check_null_label
from pndm.models.inference import HALF_DTYPES
from pndm.models.unet_2d import UNet2DModel
from pndm.runtime.fast import FastCache, check_batch_fits, prepare_model
from pndm.samplers import get_sampler, nfe
from pndm.wrapper import EpsFn, Observed, make_eps_fn

Callback = Callable[[int, torch.Tensor, torch.Tensor], Any]


class PNDMPipeline:
    """diffusers' ``PNDMPipeline(unet, scheduler)``: unconditional image generation.

    ``scheduler`` may be any scheduler with a ``.config`` mapping (a diffusers DDPMScheduler
    included); as in diffusers it is replaced by ``PNDMScheduler.from_config(scheduler.config)``.

    Calling it takes diffusers' arguments (``output_type`` "pil", "np" (B, H, W, C) or "pt"
    (B, C, H, W), all in [0, 1]), then keyword-only extensions: ``method`` (a name in
    ``SAMPLERS``; None: the config's own, "f-pndm" or with ``skip_prk_steps`` "plms"); ``seeds``
    (image i's noise is decided by seeds[i] alone) or ``latents`` (x_T), each excluding
    ``generator``; ``timesteps`` (model times t_0 > ... > t_{N-1}, the target then appended, or
    a full grid ending at the target -1, e.g. ``pndm.tuning``'s or a grid file's; it replaces
    ``num_inference_steps``); ``calibration`` (a `pndm.calibration.Calibration` of the model's
    calls, tuned with that grid: ``load_grid(path).calibration``); ``class_labels`` (a
    class-conditional UNet's class for every image: an int, one int per image, or "random", each
    image's label drawn from its seed; a class name in ``class_names`` stands for its int) and
    ``guidance_scale`` w (classifier-free guidance, `pndm.guidance`: 1 is the conditional model
    alone; other values need the model's "no class" label, ``null_class_label``);
    ``from_pretrained`` reads both from ``model_index.json``, ``save_pretrained`` writes them;
    ``callback(i, t, x)`` before model call i; ``channels_last``, ``compile``, ``cuda_graphs``
    (`pndm.runtime.fast.prepare_model`; a call leaves the UNet as it was); ``**method_options``
    of the sampler (e.g. ``order=`` for "vab"; unknown names raise).
    """

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        null_class_label: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        folders.check_unet(unet)
        self.unet = unet
        self.scheduler = folders.as_pndm_scheduler(scheduler)
        self.null_class_label = check_null_label(unet.config, null_class_label)
        self.class_names = check_class_names(unet.config, self.null_class_label, class_names)
        self._progress_bar_config: dict[str, Any] = {}
        self._fast_cache = FastCache()  # compiled UNet, CUDA graphs, derived weights

    def release_derived_weights(self) -> None:
        """Forget the weights derived from the UNet's (Winograd kernels, channels-last copies)
        that the pipeline keeps between calls (`pndm.models.inference.DerivedWeights`): frees
        their memory, and makes the next call derive them afresh after weight surgery that no
        check can see (a permutation written through ``.data``)."""
        self._fast_cache.derived.clear()

    @property
    def components(self) -> dict[str, Any]:
        """``{"unet": ..., "scheduler": ...}``, so ``PNDMPipeline(**pipe.components)`` works."""
        return {"unet": self.unet, "scheduler": self.scheduler}

    @property
    def config(self) -> FrozenConfig:
        """The ``model_index.json`` content this pipeline saves."""
        return FrozenConfig(folders.model_index(*self._labels))

    @property
    def _labels(self) -> folders.ModelLabels:
        return folders.ModelLabels(self.null_class_label, self.class_names)

    @property
    def device(self) -> torch.device:
        """The UNet's device: where noise is placed and sampling runs."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (the solver runs in float32, see the module docstring)."""
        return next(self.unet.parameters()).dtype

    def to(self, *args: Any, **kwargs: Any) -> PNDMPipeline:
        """Move or cast the UNet as ``nn.Module.to`` (``to("cuda", torch.bfloat16)``)."""
        self.unet.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Keyword arguments for tqdm, e.g. ``disable=True`` (replaces the previous ones)."""
        self._progress_bar_config = kwargs

    def progress_bar(self, iterable: Any = None, total: int | None = None) -> Any:
        """A tqdm bar over ``iterable`` or of ``total`` units, with the configured options."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, **self._progress_bar_config)

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
        """Load a local folder, pipeline or flat hub layout (`pndm.compat.folders`); ``unet=`` /
        ``scheduler=`` replace a component instead of loading it; ``torch_dtype`` casts the UNet;
        the class labels ``model_index.json`` records are checked against the UNet."""
        folder = pretrained_model_name_or_path
        unet, scheduler = folders.load_components(
            folder, torch_dtype, variant, unet=unet, scheduler=scheduler
        )
        return cls(unet, scheduler, *folders.read_labels(folder, unet.config))

    def save_pretrained(
        self, save_directory: PathLike, safe_serialization: bool = True, variant: str | None = None
    ) -> None:
        """Write diffusers' layout; ``model_index.json`` last, so a folder with one is complete."""
        folders.save_components(save_directory, self.unet, self.scheduler, safe_serialization,
                                variant, self._labels)  # fmt: skip

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: noise.Generator = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        method: str | None = None,
        seeds: Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        timesteps: Sequence[float] | None = None,
        calibration: Calibration | None = None,
        class_labels: Labels = None,
        guidance_scale: float = 1.0,
        callback: Callback | None = None,
        channels_last: bool | None = None,
        compile: bool | str = False,
        cuda_graphs: bool = False,
        **method_options: Any,
    ) -> ImagePipelineOutput | tuple[Any]:
        """``batch_size`` images, ``num_inference_steps`` steps (see the class docstring)."""
        seeds = self._check_call(batch_size, output_type, generator, seeds, latents, calibration)
        name = self._method(method)
        grid = self.scheduler.grid(num_inference_steps, timesteps)
        calls = nfe(name, grid.numel() - 1, **method_options)  # also checks the option names
        shape = noise.noise_shape(self.unet.config, batch_size, latents)
        cond = self._conditioning(class_labels, guidance_scale, seeds, shape, cuda_graphs)
        x = noise.initial_noise(shape, self.device, self.solver_dtype, generator=generator,
                                seeds=seeds, latents=latents)  # fmt: skip
        fast = {"channels_last": channels_last, "compile": compile, "cuda_graphs": cuda_graphs}
        model, context = prepare_model(self.unet, self._fast_cache, **fast)
        with self.progress_bar(total=calls) as bar, context:
            eps_fn = self.eps_fn(cond.apply(model, self.device))
            eps_fn = eps_fn if calibration is None else calibration.apply(eps_fn)
            eps_fn = Observed(eps_fn, callback, bar.update)
            x = get_sampler(name)(eps_fn, x, grid, self.scheduler.schedule, **method_options)
        eps_fn.check_finite(x)
        result = images.postprocess(x, output_type)
        return ImagePipelineOutput(images=result) if return_dict else (result,)

    def _conditioning(
        self, labels: Labels, scale: Any, seeds: Any, shape: tuple[int, ...], cuda_graphs: bool
    ) -> Conditioning:
        """The run's labels and guidance, checked, and its batch (doubled under guidance)
        checked against the free memory."""
        cond = Conditioning.of(self.unet.config, self.null_class_label, labels, scale, seeds,
                               shape[0], self.class_names)  # fmt: skip
        if cuda_graphs and cond.labels is not None:
            raise ValueError("cuda_graphs takes no class labels yet; sample without CUDA graphs")
        check_batch_fits(self.device, self.dtype, self.unet, shape[0], shape[1:],
                         self.solver_dtype, cond.batch_factor)  # fmt: skip
        return cond

    def _check_call(
        self,
        batch_size: Any,
        output_type: str,
        generator: Any,
        seeds: Any,
        latents: Any,
        calibration: Any,
    ) -> list[int] | None:
        """The arguments that need no model; returns the seeds as a list of ints."""
        check_calibration(calibration, self.scheduler.schedule)
        batch_size = check_count("batch_size", batch_size)
        images.check_output_type(output_type)
        noise.check_source(generator, seeds, latents)
        return None if seeds is None else noise.check_seeds(seeds, batch_size)

    def _method(self, method: str | None) -> str:
        config = self.scheduler.config
        if config.get("v_prediction_compat") and config.prediction_type == "v_prediction":
            raise ValueError(
                "v_prediction_compat='diffusers' exists only in PNDMScheduler.step; the pipeline "
                "converts every model output to ε at its own point (set v_prediction_compat=None)"
            )
        return default_method(config) if method is None else get_sampler(method).name

    @property
    def solver_dtype(self) -> torch.dtype:
        """The dtype of the noise, the solver state and every ε: float64 for a float64 UNet, else
        float32 (see the module docstring)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def eps_fn(self, model: Any = None) -> EpsFn:
        """The ε(x, t) the solver sees for this pipeline's model: ``model`` (default the UNet; or
        a prepared stand-in of the same dtype) run in its own dtype, its output converted to ε by
        the config's prediction type (`pndm.wrapper`), in `solver_dtype`. pndm's bfloat16 or
        float16 UNet gets the float32 state itself, which on the CPU its input convolution
        rounds only after convolving (`UNet2DModel.input_conv`); another UNet gets it in its
        dtype."""
        model = self.unet if model is None else model
        own_half = isinstance(self.unet, UNet2DModel) and self.dtype in HALF_DTYPES
        model_dtype = self.dtype if self.dtype != self.solver_dtype and not own_half else None
        kind = self.scheduler.config.prediction_type
        return make_eps_fn(model, self.scheduler.schedule, kind, 0.0, model_dtype)

    @staticmethod
    def numpy_to_pil(images_: np.ndarray) -> list[PIL.Image.Image]:
        """(B, H, W, C) floats in [0, 1] -> PIL images ("L" for one channel), as diffusers."""
        return images.numpy_to_pil(images_)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(unet={type(self.unet).__name__}, scheduler={self.scheduler!r})"
