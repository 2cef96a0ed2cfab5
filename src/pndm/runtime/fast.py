"""Everything that prepares a model for speed: input layout, torch.compile, CUDA graphs, the
weight cache, and a memory-aware batch size.

`prepare_model` is the one entry point the pipeline uses: it returns ``model(x, t)`` with the fast
paths applied and the context within which the UNet's weights are constants (so derived kernels
are made once, and kept for the next run while the weights stay the same). Nothing here changes
the UNet itself: the layout (by default measured, `pndm.runtime.layout`) only lays out the inputs
(the activations follow; PyTorch's convolutions pick the channels-last kernels from them), so a
call leaves the UNet as it was. The solver stays float32 and, with its coefficients and times
precomputed on the device, runs no host-device synchronisation inside the loop. A model call of
the CIFAR-10 UNet is about 300 kernels, so at small batches on a large GPU it is launch-bound,
which replaying it from a CUDA graph removes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from pndm.checks import check_flag
from pndm.images import image_shape
from pndm.models.inference import DerivedWeights, weight_cache
from pndm.runtime.layout import CHANNELS_LAST, MEASURED, NCHW, Layout, MeasuredLayouts

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CPU_MAX_BATCH = 32  # on CPU a larger batch only adds memory: the convolutions are saturated
MAX_BATCH = 1024


def compile_mode(compile: bool | str) -> str | None:
    """``compile=`` of the pipeline as a torch.compile mode (None: do not compile)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "default"
    if compile not in COMPILE_MODES:
        raise ValueError(
            f"compile must be True, False or one of {', '.join(COMPILE_MODES)}, got {compile!r}"
        )
    return str(compile)


@dataclass
class FastCache:
    """What `prepare_model` keeps between calls: the compiled UNet, the captured graphs, the
    measured input layouts and the derived weights (`pndm.models.inference.DerivedWeights`)."""

    compiled: tuple[Any, ...] | None = None  # (unet, mode, torch.compile(unet))
    graphed: tuple[Any, ...] | None = None  # (what it was captured for, CudaGraphModel)
    layouts: MeasuredLayouts = MEASURED  # the process's one store (`pndm.runtime.layout`)
    derived: DerivedWeights = field(default_factory=DerivedWeights)


def prepare_model(
    unet: Any,
    cache: FastCache,
    *,
    channels_last: bool | None = None,
    compile: bool | str = False,
    cuda_graphs: bool = False,
) -> tuple[Model, AbstractContextManager[Any]]:
    """``(model, context)``: ``model(x, t)`` is the UNet's raw output with the fast paths on;
    call it inside ``context`` (the weight cache, kept in ``cache`` from run to run while the
    UNet's weights stay the same).

    channels_last: True: channels-last inputs (on one CPU thread the wide 3x3 convolutions then
    run as Winograd); False: NCHW. None (the default): on the CPU, the fastest of NCHW,
    channels-last and (on more than one thread) Winograd, timed on the first model call with
    this architecture, batch shape, dtype and thread count, then kept for the process
    (`pndm.runtime.layout`: on a shared 2-core CPU channels-last measured 1.07-1.12x NCHW in
    one run and 0.78-0.84x in another, so no fixed rule is right). The images depend on the
    layout within float32 round-off: the same in one process, fixed layouts give the same bits
    across processes. NCHW under ``compile`` (each layout would be compiled again) and on CUDA,
    as before: not measured there yet, and ``torch.backends.cudnn.benchmark`` already times
    cuDNN's algorithms within a layout.
    compile: True or a torch.compile mode, compiled once per UNet and mode and kept in
    ``cache``. cuda_graphs: replay each call from a CUDA graph, captured once per UNet, weights'
    storage, layout and compile mode.
    """
    fixed = None if channels_last is None else _fixed_layout(channels_last)
    mode = compile_mode(compile)
    net = unet if mode is None else _compiled(unet, mode, cache)
    layout = fixed or (cache.layouts.for_model(unet) if mode is None else NCHW)

    def model(x: torch.Tensor, t: torch.Tensor, class_labels: Any = None) -> torch.Tensor:
        labels = {} if class_labels is None else {"class_labels": class_labels}
        return layout(lambda inputs: net(inputs, t, return_dict=False, **labels)[0], x)

    if cuda_graphs:
        model = _graphed(unet, model, (fixed, mode), cache)
    return model, weight_cache(cache.derived, unet)


def _fixed_layout(channels_last: bool) -> Layout:
    return CHANNELS_LAST if check_flag("channels_last", channels_last) else NCHW


def _compiled(unet: Any, mode: str, cache: FastCache) -> Any:
    if cache.compiled is None or cache.compiled[:2] != (unet, mode):
        compiled = torch.compile(unet) if mode == "default" else torch.compile(unet, mode=mode)
        cache.compiled = (unet, mode, compiled)
    return cache.compiled[2]


def _graphed(unet: Any, model: Model, key: tuple[Any, ...], cache: FastCache) -> Model:
    weight = next(unet.parameters())
    if weight.device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs the UNet on a CUDA device, not {weight.device}")
    key = (unet, weight.data_ptr(), weight.dtype, *key)
    if cache.graphed is None or cache.graphed[0] != key:
        cache.graphed = (key, CudaGraphModel(model))
    return cache.graphed[1]


class CudaGraphModel:
    """``model(x, t)`` replayed from one CUDA graph per input signature (shape, dtype, stride).

    The first call of a signature warms the model up on a side stream (cuDNN autotuning,
    allocator) and captures it; later calls copy x and t into the captured input buffers, replay,
    and return a copy of the output (samplers keep earlier outputs in their history). A stride-0
    time (one time for the batch, as the samplers pass it) is captured as such, so the UNet's
    shared-time path is the one in the graph.
    """

    def __init__(self, model: Model, warmup: int = 2) -> None:
        self.model = model
        self.warmup = warmup
        self._graphs: dict[tuple[Any, ...], tuple[Any, torch.Tensor, torch.Tensor, Any]] = {}

    @staticmethod
    def _signature(x: torch.Tensor, t: torch.Tensor) -> tuple[Any, ...]:
        return (x.shape, x.dtype, x.stride(), x.device, t.shape, t.dtype, t.stride())

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the UNet on a CUDA device, got {x.device}")
        key = self._signature(x, t)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, t)
        graph, static_x, static_t, out = self._graphs[key]
        static_x.copy_(x)
        _time_storage(static_t).copy_(_time_storage(t))
        graph.replay()
        return out.clone()

    def _capture(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[Any, torch.Tensor, torch.Tensor, Any]:
        static_x = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_x.copy_(x)
        static_t = _time_like(t)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.model(static_x, static_t)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.model(static_x, static_t)
        return graph, static_x, static_t, out


def _time_storage(t: torch.Tensor) -> torch.Tensor:
    """The distinct entries of a (B,) time tensor: one for a stride-0 expand, else all."""
    return t[:1] if t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0 else t


def _time_like(t: torch.Tensor) -> torch.Tensor:
    """A fresh buffer shaped and strided as t (a stride-0 expand stays one)."""
    base = _time_storage(t).clone()
    return base.expand(t.shape) if base.shape != t.shape else base


# --- batch size ---------------------------------------------------------------------------------


def image_bytes(config: Mapping[str, Any], sample_shape: Sequence[int], dtype: torch.dtype) -> int:
    """An upper estimate of the memory one image needs in a UNet forward without autograd.

    Live at the peak: every skip tensor of the down path (kept for the up path), plus a working
    set of a few tensors of the widest level (the concatenated ResNet input, its normalised copy,
    the conv outputs), plus one attention score matrix per head at an attention level.
    """
    _, height, width = sample_shape
    channels = list(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    element = torch.empty((), dtype=dtype).element_size()
    skips, widest, scores = channels[0] * height * width, 0, 0
    for level, width_c in enumerate(channels):
        pixels = (height >> level) * (width >> level)
        skips += (layers + 1) * width_c * pixels
        below = channels[min(level + 1, len(channels) - 1)]
        widest = max(widest, (width_c + below) * pixels)  # the up path's concatenated input
        if "Attn" in config["down_block_types"][level]:
            heads = _heads(config, width_c)
            scores = max(scores, heads * pixels * pixels)
    return int((skips + 6 * widest + 2 * scores) * element)


def _heads(config: Mapping[str, Any], channels: int) -> int:
    head_dim = config.get("attention_head_dim")
    return 1 if not head_dim else max(1, channels // int(head_dim))


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device``: the CUDA allocator's view, or available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


SOLVER_IMAGES = 8  # x, four ε's of F-PNDM, a stage input and the noise


def per_image_bytes(
    model: Any,
    dtype: torch.dtype,
    sample_shape: Sequence[int] | None = None,
    held: int = 0,
    solver_dtype: torch.dtype = torch.float32,
) -> int:
    """`image_bytes` for the UNet plus the sampler's state (`SOLVER_IMAGES` images in
    ``solver_dtype``) and ``held`` more images kept through the whole run (the tuner holds its
    noise and the teacher's end point)."""
    config = model.config
    if sample_shape is None:
        sample_shape = image_shape(config)
    element = torch.empty((), dtype=solver_dtype).element_size()
    state = (SOLVER_IMAGES + held) * math.prod(sample_shape) * element
    return image_bytes(config, sample_shape, dtype) + state


def check_fits(device: torch.device | str, dtype: torch.dtype, model: Any) -> None:
    """Refuse, before any work, a model whose one image needs more than all the free memory."""
    device = torch.device(device)
    need, free = per_image_bytes(model, dtype), free_memory(device)
    if need > free:
        raise ValueError(
            f"one image of this model (sample_size {model.config['sample_size']}) needs about "
            f"{need / 2**30:.3g} GiB on {device}, but only {free / 2**30:.3g} GiB are free"
        )


def check_batch_fits(
    device: torch.device | str,
    dtype: torch.dtype,
    model: Any,
    batch_size: int,
    sample_shape: Sequence[int],
    solver_dtype: torch.dtype = torch.float32,
    factor: int = 1,
) -> None:
    """Refuse, before any allocation, ``batch_size`` images that need more than all the free
    memory on ``device`` (`per_image_bytes` each, ``factor`` times: 2 under guidance, whose
    model sees two halves per image), naming the largest batch that fits."""
    device = torch.device(device)
    each = factor * per_image_bytes(model, dtype, sample_shape, solver_dtype=solver_dtype)
    free = free_memory(device)
    if batch_size * each > free:
        raise ValueError(
            f"batch_size {batch_size} needs about {batch_size * each / 2**30:.3g} GiB on {device}, "
            f"but only {free / 2**30:.3g} GiB are free; use batch_size <= {max(1, free // each)}"
        )


def default_batch_size(
    device: torch.device | str,
    dtype: torch.dtype,
    model: Any,
    sample_shape: Sequence[int] | None = None,
    fraction: float = 0.5,
) -> int:
    """The number of images per batch that fits ``fraction`` of the free memory on ``device``
    (`per_image_bytes` each), capped at `CPU_MAX_BATCH` on CPU, where larger batches stop
    paying, and at `MAX_BATCH` on CUDA."""
    device = torch.device(device)
    budget = int(free_memory(device) * fraction)
    cap = CPU_MAX_BATCH if device.type == "cpu" else MAX_BATCH
    return max(1, min(cap, budget // per_image_bytes(model, dtype, sample_shape)))
