"""bfloat16 on the CPU: the kernels its fast path picks, its images against float32, and the
one-line warning on a processor without bfloat16 arithmetic.

Image bounds, mean |bf16 - fp32| in pixels of 0-255 on the [0, 1] images (same seeds):

- the ddpm-cifar10-32 architecture (random weights): at most 0.5/255, issue 25's bound for
  ``--dtype bfloat16`` (measured 0.12-0.16/255);
- the shipped digits model at ``pndm sample``'s default 50 steps: under one grey level of the
  saved 8-bit images, 1/255 (measured 0.35-0.47/255 on 8-32 images since the input convolution
  takes the float32 state, 0.62-0.68/255 before; the test of `UNet2DModel.input_conv` below
  catches its loss directly, so this bound keeps its margin for other CPUs' kernels). A trained
  model's sampling ODE carries
  any error of ε through to the strokes, more so with few steps (10 steps: 3.5/255; float32
  with ε times 1 + 2^-9 z per call, z ~ N(0, 1), moves them by 2.4/255), so the bound is for
  the default grid. Below the images, the bfloat16 UNet's ε itself is held within 2 unit
  roundoffs (u = 2^-8) of float32's (measured 0.78-0.81 u).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from benchlib.rounding import BF16_UNIT_ROUNDOFF, pixel_difference
from conftest import SMALL_UNET, cli_sample, tiny_pipeline_folder

from pndm import PNDMPipeline, PNDMScheduler, UNet2DModel
from pndm.assets import shipped_model_path
from pndm.models.inference import derived, derived_like, weight_cache
from pndm.models.norms import float32_norm_pays, group_norm_act
from pndm.models.unet_2d import DDPM_CIFAR10_CONFIG
from pndm.runtime import precision
from pndm.runtime.precision import SlowDtypeWarning, cpu_flags, has_bf16_hardware, warn_if_slow

pytestmark = pytest.mark.usefixtures("one_thread")
LAST = torch.channels_last
CIFAR_MEAN_PX = 0.5  # issue 25's bound (see the module docstring)
DIGITS_MEAN_PX = 1.0  # one grey level of an 8-bit image

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512bw\nbugs\t\t: spectre\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


# --- the processor's flags and the warning -------------------------------------------------------


@pytest.mark.parametrize(
    "cpuinfo, has",
    [
        (SAPPHIRE_RAPIDS, True),
        (SKYLAKE, False),
        (GRAVITON3, True),
        (SKYLAKE.replace("avx2", "bf16_x"), False),
    ],
)
def test_bf16_hardware_is_read_from_the_flags(cpuinfo: str, has: bool) -> None:
    flags = cpu_flags(cpuinfo)
    assert "fpu" in flags or "fp" in flags
    assert has_bf16_hardware(flags) is has


def test_no_flags_line_gives_no_flags() -> None:
    assert cpu_flags("processor\t: 0\nmodel name\t: something\n") == set()


def test_warns_once_in_one_line_only_for_bf16_on_a_cpu_without_it() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_slow("cpu", torch.bfloat16, cpu_flags(SKYLAKE))
    assert [w.category for w in caught] == [SlowDtypeWarning]
    message = str(caught[0].message)
    assert "\n" not in message and "bfloat16" in message and "slower than float32" in message
    quiet = [
        ("cpu", torch.bfloat16, cpu_flags(SAPPHIRE_RAPIDS)),
        ("cpu", torch.float32, cpu_flags(SKYLAKE)),
        ("cpu", torch.bfloat16, set()),  # flags unknown: nothing to say
        ("meta", torch.bfloat16, cpu_flags(SKYLAKE)),  # not the CPU
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for device, dtype, flags in quiet:
            warn_if_slow(device, dtype, flags)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipeline_folder(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("cpuinfo, lines", [(SKYLAKE, 1), (SAPPHIRE_RAPIDS, 0)])
def test_cli_bfloat16_says_it_will_be_slow_in_one_line_and_runs(
    cpuinfo: str, lines: int, model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(cpuinfo))
    out = tmp_path / "x.npz"
    args = ("--dtype", "bfloat16", "--num-images", "2", "--out", str(out))
    assert cli_sample(*args, model=model_dir) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if line.startswith("warning:")]
    assert len(warned) == lines and all("bfloat16" in line for line in warned)
    assert out.is_file()


# --- the kernels of the bfloat16 fast path -------------------------------------------------------


def test_group_norm_runs_in_float32_only_where_the_bf16_kernel_is_slow() -> None:
    norm = torch.nn.GroupNorm(32, 256)
    x = torch.randn(2, 256, 16, 16, dtype=torch.bfloat16).contiguous(memory_format=LAST)
    with torch.no_grad():
        assert float32_norm_pays(norm, x)
        assert not float32_norm_pays(norm, x.contiguous())  # NCHW: its kernel is fine
        assert not float32_norm_pays(norm, x.float().contiguous(memory_format=LAST))
        big = torch.zeros(1, 256, 32, 32, dtype=torch.bfloat16).contiguous(memory_format=LAST)
        assert not float32_norm_pays(norm, big)  # 1024 pixels: the other kernel
        assert not float32_norm_pays(torch.nn.GroupNorm(16, 256), x)  # 16 channels a group
    assert not float32_norm_pays(norm, x)  # autograd records: the module as it is


def test_group_norm_act_rounds_once_to_bfloat16() -> None:
    """The float32 route is one rounding of the float64 result to bfloat16: within its unit
    roundoff u = 2^-8 relative (plus float32's own error), in x's dtype and layout."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(32, 256, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    norm = norm.to(torch.bfloat16)
    x = (3 * torch.randn(2, 256, 8, 8) + 1).to(torch.bfloat16).contiguous(memory_format=LAST)
    with torch.no_grad():
        got = group_norm_act(norm, x, torch.nn.SiLU())
        w, b = norm.weight.double(), norm.bias.double()
        want = F.silu(F.group_norm(x.double(), 32, w, b, 1e-6))
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=LAST)
    assert ((got.double() - want).abs() <= 2.0**-8 * want.abs() + 1e-6).all()


def test_channels_last_weights_are_made_once_per_run() -> None:
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=LAST)
    make = lambda: conv.weight  # noqa: E731
    assert derived_like(conv, "weight", make, x.contiguous()) is conv.weight
    with weight_cache():
        first = derived_like(conv, "weight", make, x)
        assert first.is_contiguous(memory_format=LAST) and torch.equal(first, conv.weight)
        assert derived_like(conv, "weight", make, x) is first


def test_a_freed_module_does_not_lend_its_derived_weights() -> None:
    with weight_cache():
        for width in (3, 5, 7):  # freed at once: CPython would hand its id to the next one
            module = torch.nn.Linear(width, 2)
            assert derived(module, "t", lambda m=module: m.weight.t()).shape == (width, 2)


# --- images against float32 ---------------------------------------------------------------------


def images(pipe: PNDMPipeline, steps: int, n: int, **options) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(n, steps, seeds=list(range(n)), output_type="np", **options).images


@pytest.mark.parametrize("channels_last", [None, True])
def test_cifar10_architecture_in_bf16_is_within_the_issue_bound(channels_last) -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(**DDPM_CIFAR10_CONFIG).eval()
    half = UNet2DModel(**DDPM_CIFAR10_CONFIG).eval()
    half.load_state_dict(unet.state_dict())
    scheduler = PNDMScheduler(skip_prk_steps=True)
    ref = images(PNDMPipeline(unet, scheduler), 3, 2)
    got = images(
        PNDMPipeline(half.to(torch.bfloat16), scheduler), 3, 2, channels_last=channels_last
    )
    mean, _ = pixel_difference(got, ref)
    assert 0 < mean <= CIFAR_MEAN_PX  # > 0: the UNet did run in bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_unet_convolves_the_float32_sample_before_rounding(dtype) -> None:
    """The input convolution sees the solver's float32 state: a change below the half
    precision's resolution still moves the output (rounding the sample first would lose it), and
    the result is conv_in in float32 rounded once."""
    torch.manual_seed(0)
    unet = UNet2DModel(**SMALL_UNET).eval().to(dtype)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(dtype).float()
    tiny = x * (1 + 2.0**-12)  # under half a unit in the last place: the same half numbers
    assert torch.equal(tiny.to(dtype), x.to(dtype))
    with torch.no_grad():
        assert not torch.equal(unet.input_conv(tiny), unet.input_conv(x))
        conv = unet.conv_in
        want = F.conv2d(x, conv.weight.float(), conv.bias.float(), padding=1).to(dtype)
        assert torch.equal(unet.input_conv(x), want)
        assert torch.equal(unet.input_conv(x.to(dtype)), conv(x.to(dtype)))  # as before


def test_the_pipeline_hands_its_half_unet_the_float32_state() -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(**SMALL_UNET).eval().to(torch.bfloat16)
    seen: list[torch.dtype] = []
    unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    pipe = PNDMPipeline(unet, PNDMScheduler(skip_prk_steps=True))
    images(pipe, 3, 2)
    assert set(seen) == {torch.float32}


@pytest.fixture(scope="module")
def digits() -> tuple[PNDMPipeline, PNDMPipeline]:
    folder = shipped_model_path("digits")
    fp32 = PNDMPipeline.from_pretrained(folder)
    return fp32, PNDMPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)


def test_digits_unet_in_bf16_is_within_two_roundoffs(digits) -> None:
    fp32, bf16 = digits
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (900, 500, 100, 20):
            want = fp32.unet(x, t).sample
            got = bf16.unet(x.to(torch.bfloat16), t).sample.float()
            assert (got - want).norm() <= 2 * BF16_UNIT_ROUNDOFF * want.norm()


def test_digits_images_in_bf16_are_within_one_grey_level(digits) -> None:
    fp32, bf16 = digits
    mean, _ = pixel_difference(images(bf16, 50, 8), images(fp32, 50, 8))
    assert 0 < mean <= DIGITS_MEAN_PX
