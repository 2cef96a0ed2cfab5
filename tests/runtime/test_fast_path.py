"""The fast path: inference-only UNet rewrites, pipeline options, CUDA graphs, batch sizing.

Everything here runs on the CPU in seconds; CUDA cases are skipped without a GPU, and the real
torch.compile case is marked slow (compiling the small UNet with inductor takes about 40 s on two
cores; ``pytest --slow`` runs it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_UNET, assert_rounding_close, cli_sample

from pndm import PNDMPipeline, PNDMScheduler, UNet2DModel
from pndm.models import blocks, inference, unet_2d
from pndm.models.blocks import SUBPIXEL_MIN_PIXELS, TimeProjections, Upsample2D
from pndm.models.inference import derived, weight_cache, winograd_conv3x3, winograd_kernels
from pndm.runtime.fast import (
    CPU_MAX_BATCH,
    CudaGraphModel,
    compile_mode,
    default_batch_size,
    image_bytes,
)
from pndm.samplers.core import transfer
from pndm.samplers.steps import Grid
from pndm.schedule import NoiseSchedule

# float32 rewrites of small direct convolutions (summed taps, folded biases), unit-scale seeded
# inputs, outputs of order 1: measured differences ~1e-6 (8 ulp at 1.0), under AVX2, AVX and
# SSE4.1 kernels alike; 1e-5 leaves 10x for AVX-512's other order of summation. Winograd paths,
# whose error is 2-3x the direct kernel's, are checked against float64 instead (below).
ATOL = 1e-5
# bf16 UNet, float32 solver, images in [0, 1] (u = 2^-8): as tests/compat/test_pipeline.py
BF16_MAX, BF16_MEAN = 4 * 2**-8, 2**-9
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


pytestmark = pytest.mark.usefixtures("one_thread")


def small_unet(**overrides) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(**{**SMALL_UNET, **overrides}).eval()


def small_pipe(unet: UNet2DModel | None = None) -> PNDMPipeline:
    pipe = PNDMPipeline(unet or small_unet(), PNDMScheduler(beta_end=1e-3, skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_upsample(module: Upsample2D, x: torch.Tensor) -> torch.Tensor:
    return module.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --- sub-pixel upsampling -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 16, 8, 8), (2, 8, 5, 7), (1, 4, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsample_equals_upsample_then_conv(shape, channels_last) -> None:
    torch.manual_seed(1)
    module = Upsample2D(shape[1])
    x = torch.randn(shape)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        got, want = module._subpixel(x), plain_upsample(module, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    if shape[2] * shape[3] > 1:  # a 1x1 image is both layouts at once
        assert got.is_contiguous(memory_format=layout)


def test_subpixel_runs_only_without_autograd_on_large_cpu_inputs(monkeypatch) -> None:
    module = Upsample2D(4)
    used: list[bool] = []
    original = Upsample2D._subpixel
    monkeypatch.setattr(
        Upsample2D, "_subpixel", lambda self, x: used.append(True) or original(self, x)
    )
    side = 8
    big = torch.randn(SUBPIXEL_MIN_PIXELS // side**2, 4, side, side)
    small = big[:1]
    with torch.no_grad():
        module(big)
        assert used == [True]
        module(small)  # below the threshold: the weight rearrangement would not pay
    module(big)  # autograd: the plain path (training keeps its arithmetic)
    assert used == [True]


def test_subpixel_taps_survive_meta_build_and_half_cast(tmp_path) -> None:
    unet = small_unet()
    unet.save_pretrained(tmp_path)
    loaded = UNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    ups = [m for m in loaded.modules() if isinstance(m, Upsample2D)]
    assert ups and all(m.taps.device.type == "cpu" for m in ups)
    torch.testing.assert_close(ups[0].taps.float(), blocks.phase_taps())
    assert "taps" not in "".join(loaded.state_dict())


# --- Winograd convolution and the scoped weight cache --------------------------------------------


# F(4x4, 3x3) rounding, pointwise: |error| <= 64 u sum |w| |x| (u = 2^-24). Measured 8-44 u
# (the most for 3 input channels, ~10-23 for 128-512); the direct kernel measures 2-5 u.
WINOGRAD_L1_ULPS = 64


def assert_winograd_bound(got: torch.Tensor, conv: torch.nn.Conv2d, x: torch.Tensor) -> None:
    """|got - conv(x) in float64| <= 64 u (sum |w| |x| + 1) pointwise: a bound on the rounding
    of any order of summation (AVX2 or AVX-512), so it holds on any CPU and for any seed."""
    bias64 = None if conv.bias is None else conv.bias.double()
    want = F.conv2d(x.double(), conv.weight.double(), bias64, padding=1)
    bound = F.conv2d(x.double().abs(), conv.weight.double().abs(), None, padding=1)
    error = (got.double() - want).abs()
    assert (error <= WINOGRAD_L1_ULPS * 2**-24 * (bound + 1)).all(), float(error.max())


@pytest.mark.parametrize(
    ("shape", "out"),
    [((2, 8, 8, 4), 5), ((1, 3, 4, 4), 4), ((8, 32, 8, 12), 16), ((3, 128, 32, 32), 128)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_equals_direct_convolution(shape, out, bias) -> None:
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(shape[1], out, 3, padding=1, bias=bias)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = winograd_conv3x3(x, winograd_kernels(conv.weight), conv.bias)
        assert_winograd_bound(got, conv, x)
        exact = F.conv2d(x.double(), conv.weight.double(), None, padding=1)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got.double() - exact).abs().max() > 0  # float32 arithmetic really ran


def test_winograd_is_one_call_per_stage_whatever_the_batch() -> None:
    """The ops a Winograd convolution issues do not grow with the batch or the image size (many
    small calls stall on a busy machine), and a batch gives what its images give one by one."""
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    kernels, bias = winograd_kernels(conv.weight.detach()), conv.bias.detach()

    def ops(x: torch.Tensor) -> int:
        winograd_conv3x3(x, kernels, bias)  # the cached tile index made for this shape
        with torch.profiler.profile() as prof, weight_cache():
            winograd_conv3x3(x, kernels, bias)
        return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))

    x = torch.randn(5, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    assert ops(x[:1, :, :8, :8]) == ops(x)
    whole = winograd_conv3x3(x, kernels, bias)
    for i in range(5):
        torch.testing.assert_close(whole[i : i + 1], winograd_conv3x3(x[i : i + 1], kernels, bias))


def test_winograd_rejects_sizes_that_are_not_multiples_of_4() -> None:
    x = torch.randn(1, 4, 6, 8)
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd_conv3x3(x, winograd_kernels(torch.randn(2, 4, 3, 3)), None)


def test_winograd_runs_only_where_it_pays(monkeypatch) -> None:
    used: list[tuple[int, ...]] = []
    real = inference.winograd_conv3x3
    monkeypatch.setattr(
        inference, "winograd_conv3x3", lambda x, *a: used.append(tuple(x.shape)) or real(x, *a)
    )
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1)
    x = torch.randn(8, 256, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        inference.conv3x3(conv, x)  # no weight cache: the kernel transform would not pay
        with weight_cache():
            assert_winograd_bound(inference.conv3x3(conv, x), conv, x)
            inference.conv3x3(conv, x.contiguous())  # NCHW
            inference.conv3x3(conv, x[:1])  # too few pixels
            inference.conv3x3(conv, x[..., :6, :6])  # not multiples of 4
            inference.conv3x3(torch.nn.Conv2d(256, 64, 3, padding=1), x)  # too few channels
            inference.conv3x3(torch.nn.Conv2d(256, 256, 3, padding=1, stride=2), x)
    with weight_cache():
        inference.conv3x3(conv, x)  # autograd: direct
    assert used == [(8, 256, 8, 8)]


def test_scratch_buffers_are_reused_only_inside_the_weight_cache() -> None:
    like = torch.zeros(1)
    with weight_cache():
        small = inference.scratch("t", (2, 3), like)
        again = inference.scratch("t", (3, 2), like)
        assert again.data_ptr() == small.data_ptr() and again.shape == (3, 2)
        other = inference.scratch("u", (2, 3), like)  # another name: its own buffer
        assert other.data_ptr() != small.data_ptr()
        grown = inference.scratch("t", (100,), like)  # bigger: a new buffer, kept from now on
        assert inference.scratch("t", (4,), like).data_ptr() == grown.data_ptr()
        assert inference.scratch("t", (2,), like.double()).dtype == torch.float64
    outside = [inference.scratch("t", (2, 3), like) for _ in range(2)]
    assert outside[0].data_ptr() != outside[1].data_ptr()


def test_winograd_layers_sharing_scratch_buffers_stay_exact() -> None:
    """Consecutive Winograd layers of different shapes reuse one set of scratch buffers."""
    torch.manual_seed(3)
    convs = [torch.nn.Conv2d(c, k, 3, padding=1) for c, k in ((128, 256), (256, 128), (128, 256))]
    x = torch.randn(8, 128, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), weight_cache():
        for conv in convs:
            assert inference.use_winograd(conv, x)
            y = inference.conv3x3(conv, x)
            assert_winograd_bound(y, conv, x)  # each layer exact up to its own rounding
            x = y


def test_weight_cache_makes_each_derived_weight_once_per_block() -> None:
    made: list[int] = []
    module = torch.nn.Linear(2, 2)

    def make() -> torch.Tensor:
        made.append(1)
        return module.weight * 2

    derived(module, "double", make)
    with weight_cache():
        first = derived(module, "double", make)
        assert derived(module, "double", make) is first
        with torch.no_grad():
            module.weight.add_(1.0)  # inside the block the weights are constants: not seen
        assert derived(module, "double", make) is first
    derived(module, "double", make)
    assert len(made) == 3  # outside: every call; inside: once


def counted_double(module: torch.nn.Module, made: list[int]) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        made.append(1)
        return module.weight * 2

    return make


def test_a_store_keeps_derived_weights_across_blocks_while_the_weights_stay() -> None:
    module, made, store = torch.nn.Linear(2, 2), [], inference.DerivedWeights()
    make = counted_double(module, made)
    for _ in range(3):
        with weight_cache(store, module):
            value = derived(module, "double", make)
    assert len(made) == 1 and torch.equal(value, module.weight * 2)
    with weight_cache():  # without a store: nothing kept, nothing reused
        derived(module, "double", make)
    assert len(made) == 2


def replace_weight(module: torch.nn.Module) -> None:
    module.weight = torch.nn.Parameter(module.weight.detach() + 1.0)


def write_through_data(module: torch.nn.Module) -> None:
    module.weight.data.mul_(1.0 + 2**-20)  # bumps no version counter: caught by the sum


def write_in_place(module: torch.nn.Module) -> None:
    with torch.no_grad():
        module.weight[0, 0] += 1.0


def load_other_state(module: torch.nn.Module) -> None:
    module.load_state_dict({k: v + 1.0 for k, v in module.state_dict().items()})


def add_to_bias(module: torch.nn.Module) -> None:
    module.bias.data.add_(1.0)  # a weight the derived value does not read: derived afresh too


CHANGES = [replace_weight, write_through_data, write_in_place, load_other_state, add_to_bias]


@pytest.mark.parametrize("change", CHANGES)
def test_a_store_derives_afresh_after_any_change_of_the_weights(change) -> None:
    module, made, store = torch.nn.Linear(2, 2), [], inference.DerivedWeights()
    make = counted_double(module, made)
    with weight_cache(store, module):
        derived(module, "double", make)
    change(module)
    with weight_cache(store, module):
        value = derived(module, "double", make)
    assert len(made) == 2 and torch.equal(value, module.weight * 2)


def test_the_stamp_sees_a_write_through_data_that_the_float_sum_misses() -> None:
    """One element of a 512 x 512 weight (of size about 0.04) moved from 1e-30 to 2e-30 through
    ``.data`` (no version bump): lost in the float32 sum in any order of summation, seen by the
    raw bits' sum."""
    module = torch.nn.Linear(512, 512)
    module.weight.data[0, 0] = 1e-30
    before = inference.weights_stamp(module)
    total = module.weight.sum(dtype=torch.float32)
    module.weight.data[0, 0] = 2e-30
    assert torch.equal(module.weight.sum(dtype=torch.float32), total)  # the float sum misses it
    assert inference.weights_stamp(module) != before


def test_a_store_keeps_only_what_the_last_run_used() -> None:
    module, made, store = torch.nn.Linear(2, 2), [], inference.DerivedWeights()
    make = counted_double(module, made)
    with weight_cache(store, module):
        derived(module, "double", make)
        derived(module, "other", make)  # as a layout probe derives every candidate's kernels
    with weight_cache(store, module):
        derived(module, "double", make)
    assert set(store.values) == {(module, "double")} and len(made) == 2


def test_a_store_cannot_vouch_for_inference_tensors() -> None:
    with torch.inference_mode():
        module = torch.nn.Linear(2, 2)
    made, store = [], inference.DerivedWeights()
    make = counted_double(module, made)
    for _ in range(2):
        with torch.inference_mode(), weight_cache(store, module):
            derived(module, "double", make)
        assert store.values == {}  # nothing held between runs it cannot vouch for
    assert inference.weights_stamp(module) is None and len(made) == 2


def test_a_run_nested_in_another_keeps_what_each_derived() -> None:
    """A callback may call the pipeline again: each run keeps its own values on exit."""
    module, made, store = torch.nn.Linear(2, 2), [], inference.DerivedWeights()
    make = counted_double(module, made)
    with weight_cache(store, module):
        with weight_cache(store, module):
            derived(module, "inner", make)
        derived(module, "outer", make)
    assert set(store.values) == {(module, "outer")}
    with weight_cache(store, module):
        derived(module, "outer", make)
    assert len(made) == 2


def test_a_store_of_a_model_that_derives_nothing_stops_stamping(monkeypatch) -> None:
    module, store = torch.nn.Linear(2, 2), inference.DerivedWeights()
    stamps: list[int] = []
    real = inference.weights_stamp
    monkeypatch.setattr(inference, "weights_stamp", lambda m: stamps.append(1) or real(m))
    for _ in range(3):
        with weight_cache(store, module):
            pass
    assert len(stamps) == 1 and inference.weights_stamp(torch.nn.Identity()) == ()


def test_release_derived_weights_frees_them() -> None:
    pipe = small_pipe()
    pipe(**KWARGS)
    assert pipe._fast_cache.derived.values
    pipe.release_derived_weights()
    assert pipe._fast_cache.derived.values == {}


def test_pipeline_winograd_kernels_follow_the_weights_from_call_to_call() -> None:
    """The Winograd layout (channels-last on one thread) keeps its kernels between calls; after
    the weights change through ``.data`` (no version bump), the next call's images are those of
    a new pipeline of the changed weights, bit for bit, and the kernels were derived anew."""
    unet = small_unet(block_out_channels=(32, 256), norm_num_groups=8)
    args = {**KWARGS, "batch_size": 8, "seeds": list(range(8)), "channels_last": True}
    pipe = small_pipe(unet)
    first = pipe(**args).images
    kernels = {k: v for k, v in pipe._fast_cache.derived.values.items() if k[1] == "winograd"}
    assert kernels
    np.testing.assert_array_equal(pipe(**args).images, first)
    assert all(pipe._fast_cache.derived.values[k] is v for k, v in kernels.items())
    conv = next(iter(kernels))[0]
    conv.weight.data.mul_(0.5)
    changed = pipe(**args).images
    np.testing.assert_array_equal(changed, small_pipe(copy.deepcopy(unet))(**args).images)
    assert not np.array_equal(changed, first)
    assert pipe._fast_cache.derived.values[(conv, "winograd")] is not kernels[(conv, "winograd")]


def test_unet_inside_the_weight_cache_matches() -> None:
    """A UNet whose 8x8 level takes the Winograd path, channels-last, batch 8: its error
    against float64 stays that of the plain float32 forward."""
    unet = small_unet(block_out_channels=(32, 256), norm_num_groups=8)
    unet.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    x = x.contiguous(memory_format=torch.channels_last)
    t = torch.tensor(321.0).expand(8)
    with torch.enable_grad():
        want = unet(x, t).sample.detach()
    with torch.no_grad():
        exact = copy.deepcopy(unet).double()(x.double(), t.double()).sample
        with weight_cache():
            got = unet(x, t).sample
    assert_rounding_close(got, want, exact)


# --- fused time projections ---------------------------------------------------------------------


@pytest.mark.parametrize("shift", ["default", "scale_shift"])
@pytest.mark.parametrize("times", ["shared", "per-image"])
def test_inference_forward_equals_the_autograd_forward(shift, times) -> None:
    unet = small_unet(resnet_time_scale_shift=shift)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    t = torch.tensor(417.0).expand(8) if times == "shared" else torch.linspace(10, 900, 8)
    with torch.enable_grad():
        want = unet(x, t).sample.detach()  # the per-ResNet projections, no in-place ops
    with torch.no_grad():
        got = unet(x, t).sample
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_time_condition_is_one_matmul_for_every_resnet() -> None:
    unet = small_unet()
    resnets = [m for m in unet.modules() if isinstance(m, blocks.ResnetBlock2D)]
    with torch.no_grad():
        cond = unet.time_condition(torch.tensor(5.0).expand(3))
    assert isinstance(cond, TimeProjections) and cond.shared
    widths = sum(r.time_emb_proj.out_features for r in resnets)
    assert cond.values.shape == (1, widths)  # one time: embedded once
    slots = [r.time_slot for r in resnets]
    assert slots[0].start == 0 and slots[-1].stop == widths
    assert all(a.stop == b.start for a, b in zip(slots, slots[1:], strict=False))


@pytest.mark.parametrize(
    ("t", "shared"),
    [
        (torch.tensor([3.0]), True),
        (torch.tensor(3.0).expand(4), True),
        (torch.full((4,), 3.0), True),  # CPU: compared by value
        (torch.tensor([3.0, 3.0, 4.0]), False),
    ],
)
def test_one_time_detection(t, shared) -> None:
    assert unet_2d._one_time(t) is shared


# --- the pipeline's fast options ----------------------------------------------------------------

KWARGS = {"batch_size": 2, "num_inference_steps": 4, "seeds": [0, 1], "output_type": "np"}


@pytest.mark.parametrize("channels_last", [True, None])
def test_channels_last_option_matches_the_plain_path(channels_last) -> None:
    """True and the CPU default (None) against NCHW, on a UNet with a Winograd level."""
    unet = small_unet(block_out_channels=(32, 256), norm_num_groups=8)
    args = {**KWARGS, "batch_size": 8, "seeds": list(range(8))}
    plain = small_pipe(copy.deepcopy(unet))(channels_last=False, **args).images
    exact = small_pipe(copy.deepcopy(unet).double())(channels_last=False, **args).images
    fast = small_pipe(unet)(channels_last=channels_last, **args).images
    assert_rounding_close(fast, plain, exact)


def test_winograd_by_rule_only_on_one_thread() -> None:
    """With more threads Winograd can lose under load (benchmarks/contention.py): by rule it is
    off there even for channels-last inputs; the layout probe turns it on to time it."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1)
    x = torch.randn(8, 256, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), weight_cache():
        assert inference.use_winograd(conv, x)
        torch.set_num_threads(2)
        try:
            assert not inference.use_winograd(conv, x)
            with inference.winograd_on_any_threads():
                assert inference.use_winograd(conv, x)
                assert not inference.use_winograd(conv, x.contiguous())  # other rules hold
        finally:
            torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("option", "inputs_last", "weights_last"), [(False, False, False), (True, True, False)]
)
def test_channels_last_layouts_on_the_cpu(option, inputs_last, weights_last) -> None:
    """The layout asked for; no option changes the UNet's own layout."""
    pipe = small_pipe()
    seen: list[bool] = []
    pipe.unet.register_forward_pre_hook(lambda m, a: seen.append(inference.is_channels_last(a[0])))
    pipe(channels_last=option, **KWARGS)
    assert set(seen) == {inputs_last}
    weight = pipe.unet.conv_in.weight
    assert inference.is_channels_last(weight) is weights_last


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_unet_with_float32_solver(dtype) -> None:
    plain = small_pipe()(**KWARGS).images
    pipe = small_pipe().to(dtype)
    seen: list[torch.dtype] = []
    fast = pipe(channels_last=True, callback=lambda i, t, x: seen.append(x.dtype), **KWARGS)
    assert set(seen) == {torch.float32}  # the solver state stays float32
    err = np.abs(fast.images - plain)
    u = 2**-8 if dtype == torch.bfloat16 else 2**-11
    assert err.max() <= 4 * u and err.mean() <= u / 2


def test_cuda_graphs_need_cuda() -> None:
    with pytest.raises(ValueError, match="cuda_graphs=True needs the UNet on a CUDA device"):
        small_pipe()(cuda_graphs=True, **KWARGS)
    with pytest.raises(ValueError, match="needs the UNet on a CUDA device"):
        CudaGraphModel(lambda x, t: x)(torch.zeros(1), torch.zeros(1))


def test_compile_modes_are_checked() -> None:
    assert compile_mode(False) is None and compile_mode(True) == "default"
    assert compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(
        ValueError, match="compile must be True, False or one of default, .*, got 'fast'"
    ):
        small_pipe()(compile="fast", **KWARGS)


def test_compile_mode_is_passed_and_cached(monkeypatch) -> None:
    calls: list = []

    def fake_compile(module, mode=None):
        calls.append(mode)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = small_pipe()
    pipe(compile="max-autotune-no-cudagraphs", **KWARGS)
    pipe(compile="max-autotune-no-cudagraphs", **KWARGS)
    pipe(compile=True, **KWARGS)
    assert calls == ["max-autotune-no-cudagraphs", None]


def test_compiled_unet_is_one_graph_for_every_step_and_run(monkeypatch) -> None:
    """torch.compile traces the UNet as one graph: no graph break (the weight cache is not
    touched while compiling) and no recompilation when the time, the step count or the run
    changes. Dynamo's real tracing, with a backend that counts the graphs it is handed."""
    import torch._dynamo

    graphs: list[int] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend=backend))
    torch._dynamo.reset()
    pipe = small_pipe()
    for steps in (3, 5):
        pipe(compile=True, channels_last=True, **{**KWARGS, "num_inference_steps": steps})
    torch._dynamo.reset()
    assert len(graphs) == 1 and graphs[0] > 100  # the whole UNet, once


@pytest.mark.slow  # an inductor compile: about 40 s on two cores
def test_torch_compile_on_cpu_matches() -> None:
    plain = small_pipe()(**KWARGS).images
    fast = small_pipe()(channels_last=True, compile=True, **KWARGS).images
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4)


# --- solver precomputation ----------------------------------------------------------------------


def test_midpoint_transfer_is_precomputed_and_equal() -> None:
    schedule = NoiseSchedule.from_config({})
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    grid = Grid.build(x, torch.tensor([900.0, 600.0, 300.0, -1.0]), schedule, midpoints=True)
    for n in range(grid.steps):
        a, a_mid = grid.alpha_bar[n], grid.mid_alpha_bar[n]
        assert torch.equal(grid.transfer_mid(x, eps, n), transfer(x, eps, a, a_mid))


# --- batch size ---------------------------------------------------------------------------------


def test_default_batch_size_follows_free_memory(monkeypatch) -> None:
    unet = small_unet()
    per_image = image_bytes(unet.config, (3, 16, 16), torch.float32)
    monkeypatch.setattr("pndm.runtime.fast.free_memory", lambda device: 10 * per_image)
    assert 1 <= default_batch_size("cpu", torch.float32, unet) <= 5
    monkeypatch.setattr("pndm.runtime.fast.free_memory", lambda device: 0)
    assert default_batch_size("cpu", torch.float32, unet) == 1
    monkeypatch.setattr("pndm.runtime.fast.free_memory", lambda device: 1 << 50)
    assert default_batch_size("cpu", torch.float32, unet) == CPU_MAX_BATCH


def test_image_bytes_scales_with_size_and_dtype() -> None:
    config = small_unet().config
    base = image_bytes(config, (3, 16, 16), torch.float32)
    assert image_bytes(config, (3, 32, 32), torch.float32) > 3 * base
    assert image_bytes(config, (3, 16, 16), torch.bfloat16) == base // 2


# --- CUDA ---------------------------------------------------------------------------------------


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_match_eager_without_sync(dtype) -> None:
    eager = small_pipe().to("cuda", dtype)(**KWARGS).images
    pipe = small_pipe().to("cuda", dtype)
    pipe(cuda_graphs=True, channels_last=True, **KWARGS)  # capture

    def strict_after_first_call(i, t, x):
        if i == 0:
            torch.cuda.set_sync_debug_mode("error")

    try:
        graphed = pipe(
            cuda_graphs=True, channels_last=True, callback=strict_after_first_call, **KWARGS
        ).images
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_allclose(
        graphed, eager, rtol=0, atol=1e-4 if dtype == torch.float32 else 2e-2
    )


@cuda
@pytest.mark.gpu
def test_cuda_default_batch_size_fits() -> None:
    unet = small_unet().to("cuda")
    batch = default_batch_size("cuda", torch.float32, unet)
    assert batch >= 1
    small_pipe(unet)(batch_size=min(batch, 64), num_inference_steps=2, output_type="pt")


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("model") / "small"
    small_pipe().save_pretrained(folder)
    return folder


def test_cli_default_batch_size_is_memory_aware(model_dir, tmp_path, monkeypatch) -> None:
    from pndm.jobs import run as jobs

    calls: list[tuple[int, int]] = []
    real = jobs.sample_batch
    monkeypatch.setattr("pndm.runtime.fast.default_batch_size", lambda device, dtype, unet: 3)

    def spy(pipe, seeds, job, plan, size):
        calls.append((len(seeds), size))
        return real(pipe, seeds, job, plan, size)

    monkeypatch.setattr(jobs, "sample_batch", spy)
    assert cli_sample("--num-images", "7", "--out", str(tmp_path / "a.npz"), model=model_dir) == 0
    assert calls == [(3, 3), (3, 3), (1, 3)]  # the last batch is padded to the same size


@pytest.mark.parametrize(
    ("flags", "want"), [([], None), (["--channels-last"], True), (["--no-channels-last"], False)]
)
def test_cli_layout_flags(model_dir, tmp_path, monkeypatch, flags, want) -> None:
    """No flag: the measured default; either flag fixes the layout (bit-exact reruns)."""
    from pndm.jobs import run as jobs

    seen, real = [], jobs.sample_batch

    def spy(pipe, seeds, job, plan, size):
        seen.append(job.channels_last)
        return real(pipe, seeds, job, plan, size)

    monkeypatch.setattr(jobs, "sample_batch", spy)
    out = str(tmp_path / "a.npz")
    assert cli_sample("--num-images", "1", *flags, "--out", out, model=model_dir) == 0
    assert seen == [want]


def test_cli_fast_options(model_dir, tmp_path, capsys) -> None:
    plain, fast = tmp_path / "plain.npz", tmp_path / "fast.npz"
    assert cli_sample("--num-images", "2", "--out", str(plain), model=model_dir) == 0
    assert (
        cli_sample("--num-images", "2", "--channels-last", "--out", str(fast), model=model_dir) == 0
    )
    a, b = np.load(plain)["arr_0"].astype(int), np.load(fast)["arr_0"].astype(int)
    assert np.abs(a - b).max() <= 1  # float32 rounding may flip a uint8 level
    capsys.readouterr()
    code = cli_sample("--num-images", "1", "--cuda-graphs", "--out", str(tmp_path / "c.npz"),
                      model=model_dir)  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "cuda_graphs=True needs the UNet on a CUDA device" in err
