"""Inference-only arithmetic of the UNet: a scoped cache of derived weights, Winograd convolution.

`weight_cache()` marks a block in which the weights are constants (a sampling run): weights
derived from them (Winograd kernels, sub-pixel kernels, the stacked time projections) are made
on first use and reused by every later model call, then dropped on exit, so nothing can go stale
across runs. Outside the block everything is computed per call, and Winograd is not used (its
kernel transform would cost about what it saves). Inside it, big temporaries come from reused
`scratch` buffers instead of fresh allocations that the OS would page in again at every layer.

Winograd F(4x4, 3x3) (Lavin & Gray 2016): a 3x3 convolution over 4x4 output tiles as 36 matrix
products on transformed 6x6 input tiles, 4x fewer multiply-adds than direct convolution. The
interpolation points 0, 1, -1, 1/2, -2 (and infinity) keep the float32 rounding error near the
direct kernel's (max 1.3-2.0e-5 against oneDNN's 0.7-1.4e-5 on unit-variance inputs with
He-scaled weights, 128-512 channels; the textbook points 0, +-1, +-2 give 4-5e-5). Every
transform is a matrix product too, so nothing runs as slow elementwise passes. Measured on a
2-core AVX2 CPU, channels-last float32, batch 8 (`benchmarks/winograd.py`): 1.2-2.3x faster than
oneDNN's direct kernel from 128 channels at 32x32 down to 256 channels at 4x4; below about 64
for C_in C_out / (C_in + C_out) it loses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_CACHE: ContextVar[dict[tuple[int, str], torch.Tensor] | None] = ContextVar(
    "pndm_derived_weights", default=None
)
# Winograd pays where C_in C_out / (C_in + C_out), the matrix products' work per byte moved by
# the transforms, reaches this, and the batch has at least this many input pixels (measured).
WINOGRAD_MIN_CHANNEL_RATIO = 64
WINOGRAD_MIN_PIXELS = 256


@contextmanager
def weight_cache() -> Iterator[None]:
    """Within the block the weights are constants: derived weights are made once, then reused."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _active_cache() -> dict[tuple[int, str], torch.Tensor] | None:
    """The cache of the enclosing `weight_cache`; None outside one, and while dynamo traces (it
    cannot trace ``ContextVar.get``: reading it there would break the compiled graph)."""
    return None if torch.compiler.is_compiling() else _CACHE.get()


def cache_active() -> bool:
    return _active_cache() is not None


def derived(module: nn.Module, kind: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, cached per module and kind inside `weight_cache` (computed each call outside).

    Only CPU results are kept: a CUDA graph may capture a derived weight, which must then live as
    long as the graph, not as long as the block.
    """
    cache = _active_cache()
    if cache is None:
        return make()
    key = (id(module), kind)
    if key not in cache:
        value = make()
        if value.device.type != "cpu":
            return value
        cache[key] = value
    return cache[key]


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``like``-typed tensor for temporaries that die within one call.

    Inside `weight_cache` one growing buffer per name is reused: a fresh multi-MiB allocation
    is page-faulted in again at every layer, which measured up to 7x the cost of the arithmetic
    on it. Callers must not return views of it.
    """
    cache = _active_cache()
    if cache is None:
        return like.new_empty(shape)
    numel, key = math.prod(shape), (0, f"scratch:{name}")
    buffer = cache.get(key)
    stale = buffer is None or buffer.dtype != like.dtype or buffer.device != like.device
    if stale or buffer.numel() < numel:
        buffer = cache[key] = like.new_empty(numel)
    return buffer[:numel].view(shape)


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
# Output pixels per chunk of the batch: larger chunks fall out of the cache (measured: 32 images
# of 128 channels at 32x32 run at 0.7x in one piece, 1.25x in chunks of 8).
WINOGRAD_CHUNK_PIXELS = 8192
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
    the CPU, H and W multiples of 4, without autograd, inside `weight_cache`, where it measurably
    pays (see above)."""
    b, c, h, w = x.shape
    k = conv.out_channels
    shape_ok = conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    return (
        shape_ok
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and h % 4 == 0
        and w % 4 == 0
        and b * h * w >= WINOGRAD_MIN_PIXELS
        and c * k >= WINOGRAD_MIN_CHANNEL_RATIO * (c + k)
        and is_channels_last(x)
        and cache_active()
    )


def conv3x3(conv: nn.Conv2d, x: torch.Tensor, bias: Any = "own") -> torch.Tensor:
    """``conv`` applied to x with ``bias`` (its own by default; a tensor, or None): Winograd
    where `use_winograd` says so, else the usual convolution."""
    bias = conv.bias if isinstance(bias, str) else bias
    if use_winograd(conv, x):
        kernels = derived(conv, "winograd", lambda: winograd_kernels(conv.weight))
        return winograd_conv3x3(x, kernels, bias)
    return F.conv2d(x, conv.weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def winograd_conv3x3(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """3x3 'same' convolution of float32 CPU x (B, C, H, W), H and W multiples of 4, as
    F(4x4, 3x3) with `winograd_kernels`; over chunks of the batch. Returns channels-last."""
    b, _, h, w = x.shape
    if h % 4 or w % 4:
        raise ValueError(f"Winograd F(4x4, 3x3) needs H and W multiples of 4, got {h}x{w}")
    out = x.new_empty((b, h, w, kernels.shape[2]))  # NHWC
    step = max(1, WINOGRAD_CHUNK_PIXELS // (h * w))
    for start in range(0, b, step):
        _winograd_chunk(x[start : start + step], kernels, bias, out[start : start + step])
    return out.permute(0, 3, 1, 2)


def _winograd_chunk(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> None:
    """out (B, H, W, K) = conv(x). Input tiles (stride 4) -> V = B^T d B, as a product along the
    rows then the columns; per tile position M = V U; Y = A^T M A as one product with A^T (x) A^T;
    then Y is laid out into ``out`` (+ bias)."""
    b, c, h, w = x.shape
    nh, nw, k = h // 4, w // 4, kernels.shape[2]
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(b, h + 2, (w + 2) * c)
    row_tiles = padded.unfold(1, 6, 4).transpose(2, 3)  # (B, nh, 6, (W+2) C), rows 4i..4i+5
    rows = scratch("rows", (b, nh, 6, (w + 2) * c), x)
    for image in range(b):  # one image at a time: its tiles have one stride
        torch.matmul(B_T, row_tiles[image], out=rows[image])
    rows = rows.view(b * nh * 6, w + 2, c)
    v = scratch("tiles", (nw, b * nh * 6, 6, c), x)  # memory order (j, B, i, a, b, C)
    for j in range(nw):
        torch.matmul(B_T, rows[:, 4 * j : 4 * j + 6], out=v[j])
    m = scratch("products", (36, nw * b * nh, k), x)
    torch.bmm(v.view(nw * b * nh, 36, c).transpose(0, 1), kernels, out=m)  # per tile position
    y = scratch("outputs", (16, nw * b * nh * k), x)
    torch.mm(A_T2, m.view(36, -1), out=y)
    y = y.view(4, 4, nw, b, nh, k)
    dst = out.view(b, nh, 4, nw, 4, k).permute(2, 4, 3, 0, 1, 5)  # (p, q, j, B, i, K) view
    if bias is None:
        dst.copy_(y)
    else:
        torch.add(y, bias, out=dst)
