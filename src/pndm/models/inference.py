"""Inference-only arithmetic of the UNet: a scoped cache of derived weights, Winograd convolution.

`weight_cache()` marks a block in which the weights are constants (a sampling run): weights
derived from them (Winograd kernels, sub-pixel kernels, channels-last copies, the stacked time
projections) are made on first use and reused by every later model call. Given a
`DerivedWeights` store and the model, the block also reuses what the store kept from the
previous run, but only while the model's weights are those it was derived from
(`weights_stamp`); else, and without a store, derived weights are dropped on exit. Outside the
block everything is computed per call, and Winograd is not used (its kernel transform would cost
about what it saves). Inside it, big temporaries come from reused `scratch` buffers (dropped on
exit) instead of fresh allocations that the OS would page in again at every layer.

Winograd F(4x4, 3x3) (Lavin & Gray 2016): a 3x3 convolution over 4x4 output tiles as 36 matrix
products on transformed 6x6 input tiles, 4x fewer multiply-adds than direct convolution. The
interpolation points 0, 1, -1, 1/2, -2 (and infinity) keep the float32 rounding error near the
direct kernel's (max 1.3-2.0e-5 against oneDNN's 0.7-1.4e-5 on unit-variance inputs with
He-scaled weights, 128-512 channels; the textbook points 0, +-1, +-2 give 4-5e-5). Every
transform is a matrix product too, so nothing runs as slow elementwise passes. Measured on a
2-core AVX2 CPU, channels-last float32, batch 8 (`benchmarks/winograd.py`): 1.2-2.3x faster than
oneDNN's direct kernel from 128 channels at 32x32 down to 256 channels at 4x4; below about 64
for C_in C_out / (C_in + C_out) it loses.

Only on one thread: each stage is one call over all tiles, but that is still six parallel regions
per layer against oneDNN's one, and with two threads on a machine where another process holds a
core every region waits for the descheduled thread. On one thread, the whole channels-last
pipeline (CIFAR-10 UNet, batch 8, `benchmarks/contention.py`) measured 1.11x NCHW on a quiet
2-core CPU and 0.84x while other tenants loaded it. Within `winograd_on_any_threads` the one-thread
rule is dropped: the layout probe (`pndm.runtime.layout`) times Winograd on more threads as a
candidate of its own and keeps it only where it measured fastest.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DerivedKey = tuple[nn.Module, str]


@dataclass
class _Run:
    """One `weight_cache` block: its derived weights (perhaps a store's), the keys it used, its
    scratch buffers."""

    derived: dict[DerivedKey, torch.Tensor]
    used: set[DerivedKey] = field(default_factory=set)
    scratch: dict[str, torch.Tensor] = field(default_factory=dict)


_CACHE: ContextVar[_Run | None] = ContextVar("pndm_derived_weights", default=None)
_ANY_THREADS: ContextVar[bool] = ContextVar("pndm_winograd_any_threads", default=False)
# Winograd pays where C_in C_out / (C_in + C_out), the matrix products' work per byte moved by
# the transforms, reaches this, and the batch has at least this many input pixels (measured).
WINOGRAD_MIN_CHANNEL_RATIO = 64
WINOGRAD_MIN_PIXELS = 256


def weights_stamp(model: nn.Module) -> tuple[Any, ...] | None:
    """What tells whether ``model``'s weights changed: each parameter's and buffer's storage,
    dtype, shape and version counter (bumped by every in-place write, ``load_state_dict`` and
    optimiser steps included), and, for writes through ``.data`` (which bump no counter), the sum
    of its raw bits as integers (any change of one element changes it). Not seen: writes through
    ``.data`` that only permute elements or whose bit changes cancel; call
    `PNDMPipeline.release_derived_weights` after such surgery. None where it cannot tell:
    inference-mode tensors keep no counter. One read of the weights per run."""
    tensors = [*model.parameters(), *model.buffers()]
    try:
        ids = tuple((t.data_ptr(), t._version, t.dtype, t.shape, t.device) for t in tensors)
    except RuntimeError:
        return None
    if not tensors:
        return ()
    with torch.no_grad():
        bits = torch.stack([_bits_sum(t) for t in tensors]).tolist()
    return ids + tuple(bits)


def _bits_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum (int64, wrapping) of t's raw bytes read as int32 words (as integers of its element
    size where they do not fill words): a half-precision tensor is summed two elements a word,
    half the work of summing int16s."""
    flat = t.detach().reshape(-1)
    if not t.is_floating_point():
        return flat.sum(dtype=torch.int64)
    raw = flat.view(torch.uint8)
    if raw.numel() % 4 == 0:
        return raw.view(torch.int32).sum(dtype=torch.int64)
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return flat.view(ints).sum(dtype=torch.int64)


class DerivedWeights:
    """Derived weights kept from one run to the next (a pipeline holds one): reused only while
    `weights_stamp` of the model is unchanged, and only those the last run used (a layout probe
    derives the Winograd kernels of every candidate; the next run keeps the winner's). Memory:
    the Winograd kernels are 4x their 3x3 convolutions' weights (about 0.45 GB for the CIFAR-10
    UNet), a channels-last copy 1x; `clear` (or deleting the pipeline) frees them. Each run
    works on its own copy of the kept dict, so runs nested in a callback or on other threads
    only ever replace what is kept, each with the values of its own stamp. A model that kept
    nothing (a UNet that derives nothing, such as diffusers') is not stamped again."""

    def __init__(self) -> None:
        self.values: dict[DerivedKey, torch.Tensor] = {}
        self.stamp: tuple[Any, ...] | None = None
        self.idle = False  # the last run kept nothing: do not stamp

    def open(self, model: nn.Module) -> tuple[dict[DerivedKey, torch.Tensor], Any]:
        """(the values to start a run of ``model`` with, its stamp): the kept ones if its
        weights are those they were derived from, else none. Stamped here, before the run, where
        reading values on the host costs no device sync; a model not wholly on the CPU keeps
        nothing (only CPU values are kept, `derived`), so it is not stamped."""
        on_cpu = all(t.device.type == "cpu" for t in model.parameters())
        stamp = weights_stamp(model) if on_cpu and not self.idle else None
        same = stamp is not None and stamp == self.stamp
        return (dict(self.values) if same else {}), stamp

    def close(self, stamp: Any, values: dict[DerivedKey, torch.Tensor], used: set) -> None:
        """Keep the values a run used, under the stamp taken when it opened (its weights were
        constants); nothing where it had no stamp."""
        kept = {k: v for k, v in values.items() if k in used} if stamp is not None else {}
        self.values, self.stamp, self.idle = kept, stamp, not used

    def clear(self) -> None:
        self.values, self.stamp, self.idle = {}, None, False


@contextmanager
def weight_cache(
    store: DerivedWeights | None = None, model: nn.Module | None = None
) -> Iterator[None]:
    """Within the block the weights are constants: derived weights are made once, then reused;
    with a ``store`` and the ``model`` (a module) they come from, across blocks while the
    weights stay."""
    keep = store is not None and isinstance(model, nn.Module)
    values, stamp = store.open(model) if keep else ({}, None)
    run = _Run(values)
    token = _CACHE.set(run)
    try:
        yield
    finally:
        _CACHE.reset(token)
        if keep:
            store.close(stamp, run.derived, run.used)


def _active_cache() -> _Run | None:
    """The cache of the enclosing `weight_cache`; None outside one, and while dynamo traces (it
    cannot trace ``ContextVar.get``: reading it there would break the compiled graph)."""
    return None if torch.compiler.is_compiling() else _CACHE.get()


def cache_active() -> bool:
    return _active_cache() is not None


@contextmanager
def winograd_on_any_threads() -> Iterator[None]:
    """Within the block `use_winograd` drops its one-thread rule (every other condition stays)."""
    token = _ANY_THREADS.set(True)
    try:
        yield
    finally:
        _ANY_THREADS.reset(token)


def derived(module: nn.Module, kind: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, cached per module and kind inside `weight_cache` (computed each call outside).

    Only CPU results are kept: a CUDA graph may capture a derived weight, which must then live as
    long as the graph, not as long as the block.
    """
    run = _active_cache()
    if run is None:
        return make()
    key = (module, kind)  # the module itself: its id could be reused once it is freed
    if key not in run.derived:
        value = make()
        if value.device.type != "cpu":
            return value
        run.derived[key] = value
    run.used.add(key)
    return run.derived[key]


def derived_like(
    module: nn.Module, kind: str, make: Callable[[], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """`derived` ``make()`` (a convolution weight) in x's layout: channels-last for a
    channels-last x, cached per layout. oneDNN would otherwise copy the weight to that layout at
    every call: 16 % of the 3x3 convolutions' time of a bfloat16 CIFAR-10 call (batch 8)."""
    if not is_channels_last(x):
        return derived(module, kind, make)
    last = torch.channels_last
    return derived(module, f"{kind}:channels_last", lambda: make().contiguous(memory_format=last))


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``like``-typed tensor for temporaries that die within one call.

    Inside `weight_cache` one growing buffer per name is reused: a fresh multi-MiB allocation
    is page-faulted in again at every layer, which measured up to 7x the cost of the arithmetic
    on it. Callers must not return views of it.
    """
    run = _active_cache()
    if run is None:
        return like.new_empty(shape)
    numel = math.prod(shape)
    buffer = run.scratch.get(name)
    stale = buffer is None or buffer.dtype != like.dtype or buffer.device != like.device
    if stale or buffer.numel() < numel:
        buffer = run.scratch[name] = like.new_empty(numel)
    return buffer[:numel].view(shape)


HALF_DTYPES = (torch.bfloat16, torch.float16)  # UNets whose input conv takes a float32 sample


def float32_input_pays(conv: nn.Module, sample: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a ``dtype`` UNet's input convolution takes the float32 ``sample`` as it is: a
    half-precision UNet on the CPU, a plain zero-padded `nn.Conv2d` (a subclass or wrapper keeps
    its own call). Rounding the sample first loses the low bits of the solver state that ε
    depends on most near the data (ε ≈ (x - x̂_0) / σ): on the digits model most of the
    bfloat16 images' difference to float32 (docs/bfloat16.md). Not on CUDA, where a float32
    convolution may run as TF32 and keep little more than bfloat16 would."""
    return (
        dtype in HALF_DTYPES
        and sample.dtype == torch.float32
        and sample.device.type == "cpu"
        and type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
    )


def float32_conv(conv: nn.Conv2d, sample: torch.Tensor) -> torch.Tensor:
    """``conv`` on the float32 ``sample`` with float32 copies of its weights (the input
    kernel: small), in float32."""
    weight = derived_like(conv, "float32", lambda: conv.weight.float(), sample)
    bias = None if conv.bias is None else conv.bias.float()
    return F.conv2d(sample, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# --- Winograd F(4x4, 3x3) -----------------------------------------------------------------------

# Y = A^T [(G g G^T) * (B^T d B)] A for a 6x6 input tile d and a 3x3 kernel g (points 0, 1, -1,
# 1/2, -2, infinity): the Toom-Cook matrices, exact in binary except G (kept in float64).
_BT = (
    (1.0, -1.5, -2.0, 1.5, 1.0, 0.0),
    (0.0, -1.0, 0.5, 2.5, 1.0, 0.0),
    (0.0, 1.0, -2.5, 0.5, 1.0, 0.0),
    (0.0, -2.0, -1.0, 2.0, 1.0, 0.0),
    (0.0, 0.5, -1.0, -0.5, 1.0, 0.0),
    (0.0, 1.0, -1.5, -2.0, 1.5, 1.0),
)
_G = (
    (1.0, 0.0, 0.0),
    (1 / 3, 1 / 3, 1 / 3),
    (-1 / 3, 1 / 3, -1 / 3),
    (-16 / 15, -8 / 15, -4 / 15),
    (1 / 15, -2 / 15, 4 / 15),
    (0.0, 0.0, 1.0),
)
_AT = (
    (1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
    (0.0, 1.0, -1.0, 0.5, -2.0, 0.0),
    (0.0, 1.0, 1.0, 0.25, 4.0, 0.0),
    (0.0, 1.0, -1.0, 0.125, -8.0, 1.0),
)
B_T = torch.tensor(_BT)  # float32 CPU, the only place the transforms run
A_T2 = torch.kron(torch.tensor(_AT), torch.tensor(_AT))  # (16, 36): both output transforms
_G64 = torch.tensor(_G, dtype=torch.float64)
G_G = torch.kron(_G64, _G64)  # (36, 9): the kernel transform, float64
KERNEL_CHUNK_COLUMNS = 32768  # 9 MB of float64 per product


def winograd_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(36, C_in, C_out): the transformed 3x3 kernels G g G^T, tile position first; float64
    products with G (x) G (36 x 9), each rounded once to the weight's dtype. In column chunks:
    one whole float64 product of a 512x256 layer is 38 MB, 4x slower than cache-sized pieces."""
    k, c = weight.shape[:2]
    taps = weight.detach().permute(2, 3, 1, 0).reshape(9, c * k)  # (u v, C_in C_out)
    out = weight.new_empty((36, c * k))
    for start in range(0, c * k, KERNEL_CHUNK_COLUMNS):
        part = slice(start, start + KERNEL_CHUNK_COLUMNS)
        out[:, part] = G_G @ taps[:, part].double()
    return out.view(36, c, k)


def use_winograd(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv(x)` runs as Winograd: a 3x3 stride-1 'same' conv, channels-last float32 on
    the CPU with one torch thread (any number within `winograd_on_any_threads`), H and W
    multiples of 4, without autograd, inside `weight_cache`, where it measurably pays (above)."""
    b, c, h, w = x.shape
    k = conv.out_channels
    shape_ok = conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    return (
        cache_active()  # first: False while dynamo traces, which cannot trace the thread count
        and shape_ok
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and (torch.get_num_threads() == 1 or _ANY_THREADS.get())
        and not torch.is_grad_enabled()
        and h % 4 == 0
        and w % 4 == 0
        and b * h * w >= WINOGRAD_MIN_PIXELS
        and c * k >= WINOGRAD_MIN_CHANNEL_RATIO * (c + k)
        and is_channels_last(x)
    )


def conv3x3(conv: nn.Conv2d, x: torch.Tensor, bias: Any = "own") -> torch.Tensor:
    """``conv`` applied to x with ``bias`` (its own by default; a tensor, or None): Winograd
    where `use_winograd` says so, else the usual convolution (weights in x's layout)."""
    bias = conv.bias if isinstance(bias, str) else bias
    if use_winograd(conv, x):
        kernels = derived(conv, "winograd", lambda: winograd_kernels(conv.weight))
        return winograd_conv3x3(x, kernels, bias)
    weight = derived_like(conv, "weight", lambda: conv.weight, x)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def winograd_conv3x3(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """3x3 'same' convolution of float32 CPU x (B, C, H, W), H and W multiples of 4, as
    F(4x4, 3x3) with `winograd_kernels`: one call per stage over all tiles of the batch (each
    call is one parallel region; many small ones stall when another process holds a core).
    Returns channels-last."""
    b, c, h, w = x.shape
    if h % 4 or w % 4:
        raise ValueError(f"Winograd F(4x4, 3x3) needs H and W multiples of 4, got {h}x{w}")
    k, t = kernels.shape[2], b * (h // 4) * (w // 4)
    d = _input_tiles(x)  # (36, T C): tile position (r, s) first
    rows = scratch("rows", (6, 6, t * c), x)  # (a, s, T C): B^T d
    torch.mm(B_T, d.view(6, 6 * t * c), out=rows.view(6, 6 * t * c))
    v = scratch("transformed", (6, 6, t * c), x)  # (a, b, T C): B^T d B
    torch.bmm(B_T.expand(6, 6, 6), rows, out=v)
    m = scratch("products", (36, t, k), x)
    torch.bmm(v.view(36, t, c), kernels, out=m)  # M = V U per tile position
    y = scratch("outputs", (16, t * k), x)
    torch.mm(A_T2, m.view(36, t * k), out=y)  # Y = A^T M A
    out = x.new_empty((b, h, w, k))  # NHWC
    dst = out.view(b, h // 4, 4, w // 4, 4, k).permute(2, 4, 0, 1, 3, 5)  # (p, q, B, i, j, K)
    if bias is None:
        dst.copy_(y.view(dst.shape))
    else:
        torch.add(y.view(dst.shape), bias, out=dst)
    return out.permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=32)
def tile_index(b: int, h: int, w: int) -> torch.Tensor:
    """(36 B nh nw,) rows of x's (B H W + 1, C) pixels that make its overlapping 6x6 tiles
    (stride 4) with one pixel of zero padding: a padding pixel reads row B H W (the zero row)."""
    rows = torch.arange(-1, h + 1).view(1, -1, 1)
    cols = torch.arange(-1, w + 1).view(1, 1, -1)
    pixel = (torch.arange(b).view(-1, 1, 1) * h + rows) * w + cols
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    padded = torch.where(inside, pixel, b * h * w)  # (B, H+2, W+2)
    s = padded.stride()
    view = padded.as_strided((6, 6, b, h // 4, w // 4), (s[1], s[2], s[0], 4 * s[1], 4 * s[2]))
    return view.reshape(-1)


def _input_tiles(x: torch.Tensor) -> torch.Tensor:
    """(36, B nh nw C): the zero-padded input's 6x6 tiles, position in the tile first, gathered
    in one call, so that each transform below is one product over all tiles."""
    b, c, h, w = x.shape
    pixels = scratch("pixels", (b * h * w + 1, c), x)  # NHWC rows, then a zero row
    pixels[:-1].view(b, h, w, c).copy_(x.permute(0, 2, 3, 1))
    pixels[-1].zero_()
    index = tile_index(b, h, w)
    tiles = scratch("tiles", (index.numel(), c), x)
    torch.index_select(pixels, 0, index, out=tiles)
    return tiles.view(36, -1)
