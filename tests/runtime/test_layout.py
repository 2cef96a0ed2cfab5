"""The input layout chosen by measuring (`pndm.runtime.layout`), with an injected clock.

A fake UNet advances a fake clock by a cost per layout (and a large one on a layout's first call,
the warm-up), so which layout is fastest is set by the test, never by this machine's load; no
test times anything. The pipeline test runs the small UNet for real and checks the images
against NCHW's and float64's within `assert_rounding_close`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SMALL_UNET, assert_rounding_close

from pndm import PNDMPipeline, PNDMScheduler, UNet2DModel
from pndm.models import inference
from pndm.runtime import layout
from pndm.runtime.devices import torch_threads
from pndm.runtime.fast import FastCache, prepare_model

pytestmark = pytest.mark.usefixtures("one_thread")
WARM_UP = 100.0  # a layout's first call costs WARM_UP / cost more: timed, the fastest would lose
WINOGRAD_CONV = torch.nn.Conv2d(256, 256, 3, padding=1)  # a layer where Winograd pays
WINOGRAD_X = torch.zeros(8, 256, 8, 8).contiguous(memory_format=torch.channels_last)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeUNet:
    """Returns its input plus a layout-dependent round-off (1e-6 for channels-last, 2e-6 for
    Winograd); records each call's layout; costs ``cost[layout]`` on ``clock``."""

    OFFSET = {"nchw": 0.0, "channels_last": 1e-6, "winograd": 2e-6}

    def __init__(self, clock: Clock, cost: dict[str, float]) -> None:
        self.clock, self.cost, self.seen = clock, cost, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, return_dict: bool) -> tuple[Any]:
        name = "nchw" if x.is_contiguous() else "channels_last"
        with torch.no_grad():
            if name == "channels_last" and inference.use_winograd(WINOGRAD_CONV, WINOGRAD_X):
                name = "winograd" if torch.get_num_threads() > 1 else name
        warm = name in self.seen
        self.seen.append(name)
        self.clock.now += self.cost[name] + (0.0 if warm else WARM_UP / self.cost[name])
        return (x + self.OFFSET[name],)


def fake(cost: dict[str, float]) -> tuple[FakeUNet, FastCache]:
    clock = Clock()
    return FakeUNet(clock, cost), FastCache(layouts=layout.MeasuredLayouts(clock))


def run(unet: FakeUNet, cache: FastCache, calls: int, shape=(2, 3, 8, 8), **options) -> list:
    """One run of ``calls`` model calls; returns each call's output less its input."""
    model, context = prepare_model(unet, cache, **options)
    with context:
        xs = [torch.full(shape, float(i)) for i in range(calls)]
        return [float((model(x, torch.zeros(shape[0])) - x).max()) for x in xs]


@pytest.mark.parametrize("fastest", ["nchw", "channels_last", "winograd"])
def test_the_probe_keeps_the_fastest_layout(fastest) -> None:
    """Two threads: three candidates, each warmed up and timed on the first call's input; that
    call returns the fastest's own output, as every later call does."""
    unet, cache = fake({"nchw": 3.0, "channels_last": 2.0, "winograd": 2.5} | {fastest: 1.0})
    with torch_threads(2):
        offsets = run(unet, cache, 4)
    probe = ["nchw", "channels_last", "winograd"] * 2  # warm-ups, then the timed calls
    assert unet.seen == [*probe, fastest, fastest, fastest]
    assert offsets == pytest.approx([FakeUNet.OFFSET[fastest]] * 4, abs=1e-7)
    assert set(next(iter(cache.layouts.seconds.values()))) == {"nchw", "channels_last",
                                                               "winograd"}  # fmt: skip


def test_one_thread_has_two_candidates_and_ties_go_to_nchw() -> None:
    """On one thread channels-last is Winograd's candidate (use_winograd's rule)."""
    unet, cache = fake({"nchw": 1.0, "channels_last": 1.0})
    run(unet, cache, 3)
    assert unet.seen == ["nchw", "channels_last", "nchw", "channels_last", "nchw", "nchw"]


def test_winograd_is_a_candidate_only_for_float32_on_more_threads() -> None:
    assert layout.candidates(torch.float32, 2) == (layout.NCHW, layout.CHANNELS_LAST,
                                                   layout.WINOGRAD)  # fmt: skip
    for dtype, threads in [(torch.float32, 1), (torch.bfloat16, 2), (torch.float64, 4)]:
        assert layout.candidates(dtype, threads) == (layout.NCHW, layout.CHANNELS_LAST)


def test_the_choice_is_kept_per_signature() -> None:
    unet, cache = fake({"nchw": 2.0, "channels_last": 1.0, "winograd": 3.0})
    run(unet, cache, 1)  # the probe
    unet.seen.clear()
    run(unet, cache, 3)  # a later run (batch) with the same signature: no probe
    assert unet.seen == ["channels_last"] * 3
    unet.seen.clear()
    run(unet, cache, 1, shape=(4, 3, 8, 8))  # another batch size is probed again
    assert unet.seen == ["nchw", "channels_last"] * 2
    with torch_threads(2):  # and so is another thread count
        run(unet, cache, 1)
    assert len(cache.layouts.chosen) == 3


def test_one_store_serves_every_pipeline_of_an_architecture() -> None:
    """Keyed by the UNet's config, not the object: a reloaded model gives the same bits."""
    store = layout.MeasuredLayouts(Clock())
    a, b = UNet2DModel(**SMALL_UNET), UNet2DModel(**SMALL_UNET)
    x = torch.zeros(2, 3, 16, 16)
    deeper = UNet2DModel(**{**SMALL_UNET, "layers_per_block": 2})
    for unet in (a, b, deeper):
        store.for_model(unet)(lambda inputs: inputs * 2, x)
    assert len(store.chosen) == 2  # b reused a's choice; the deeper architecture probed anew
    assert FastCache().layouts is FastCache().layouts is layout.MEASURED


def test_a_half_unet_is_probed_as_its_dtype_not_its_float32_input() -> None:
    """pndm's bfloat16 UNet gets the float32 state: keyed (and its candidates chosen) by the
    UNet's dtype, on 2 threads it gets no Winograd candidate, and float32 and bfloat16 UNets of
    one architecture are probed apart."""
    store = layout.MeasuredLayouts(Clock())
    x = torch.zeros(2, 3, 16, 16)
    with torch_threads(2):
        for dtype in (torch.float32, torch.bfloat16):
            store.for_model(UNet2DModel(**SMALL_UNET).to(dtype))(lambda inputs: inputs, x)
    kinds = {key[2]: set(seconds) for key, seconds in store.seconds.items()}
    assert kinds == {torch.float32: {"nchw", "channels_last", "winograd"},
                     torch.bfloat16: {"nchw", "channels_last"}}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "want"),
    [({"channels_last": False}, "nchw"), ({"channels_last": True}, "channels_last"),
     ({"compile": True}, "nchw")],
)  # fmt: skip
def test_fixed_layouts_and_compile_skip_the_probe(monkeypatch, options, want) -> None:
    monkeypatch.setattr(torch, "compile", lambda module, **_: module)
    unet, cache = fake({"nchw": 2.0, "channels_last": 1.0})
    run(unet, cache, 5, **options)
    assert unet.seen == [want] * 5 and not cache.layouts.chosen


def test_other_devices_keep_nchw() -> None:
    """Off the CPU (on CUDA cuDNN has its own benchmark) the default stays NCHW, unprobed."""
    seen: list[bool] = []

    def unet(x: torch.Tensor, t: torch.Tensor, return_dict: bool) -> tuple[Any]:
        seen.append(x.is_contiguous())
        return (x,)

    cache = FastCache(layouts=layout.MeasuredLayouts(Clock()))
    model, _ = prepare_model(unet, cache)
    for _ in range(3):
        model(torch.empty(2, 3, 8, 8, device="meta"), torch.empty(2, device="meta"))
    assert seen == [True] * 3 and not cache.layouts.chosen


# --- the pipeline ---------------------------------------------------------------------------

ARGS = {"batch_size": 2, "num_inference_steps": 4, "seeds": [0, 1], "output_type": "np"}


def pipe_for(unet: UNet2DModel) -> PNDMPipeline:
    pipe = PNDMPipeline(unet, PNDMScheduler(beta_end=1e-3, skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("fastest", ["nchw", "channels_last"])
def test_default_images_are_the_chosen_layouts_bit_for_bit(monkeypatch, fastest) -> None:
    """The probing run and a later one both equal the chosen layout's run exactly (so within
    float32 round-off of NCHW's, against float64); the probe adds 3 calls on one thread."""
    torch.manual_seed(0)
    unet = UNet2DModel(**SMALL_UNET).eval()
    clock, seen = Clock(), []

    def cost(module: Any, args: tuple[Any, ...]) -> None:
        seen.append(name := "nchw" if args[0].is_contiguous() else "channels_last")
        clock.now += 1.0 if name == fastest else 2.0

    unet.register_forward_pre_hook(cost)
    monkeypatch.setattr("pndm.compat.pipeline.FastCache",
                        lambda: FastCache(layouts=layout.MeasuredLayouts(clock)))  # fmt: skip
    pipe = pipe_for(unet)
    first = pipe(**ARGS).images
    probing_calls = len(seen)
    seen.clear()
    again = pipe(**ARGS).images
    assert seen == [fastest] * (probing_calls - 3)
    pinned = pipe(channels_last=fastest == "channels_last", **ARGS).images
    np.testing.assert_array_equal(first, pinned)
    np.testing.assert_array_equal(again, pinned)
    plain = pipe(channels_last=False, **ARGS).images
    exact = pipe_for(copy.deepcopy(unet).double())(channels_last=False, **ARGS).images
    assert_rounding_close(first, plain, exact)
