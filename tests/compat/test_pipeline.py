"""PNDMPipeline: parity with diffusers' PNDMPipeline, folders, noise, precision, options, errors.

The UNet is diffusers' fast-test UNet (diffusers-compat.md §7), built by *diffusers* after
``torch.manual_seed(0)`` and saved with diffusers' ``PNDMPipeline.save_pretrained``: our
UNet2DModel creates its submodules in another order than diffusers', so the same seed gives
other weights in ours (checked: the same 208 keys, 92 tensors differ, the first in state-dict
order being ``down_blocks.1.attentions.0.to_q``). Loading diffusers' weights gives equal ones.

With the default schedule a random UNet saturates 99% of the pixels, which makes image parity
nearly vacuous; the parity cases therefore also use ``beta_end=1e-3`` (ᾱ_T ≈ 0.6), where ~60% of
the pixels lie strictly inside (0, 1) and the UNet's ε still moves every pixel by
sqrt(1 - ᾱ)·ε. Non-parity tests run the same weights at sample_size 16 to save time.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import GREY, PLAIN, assert_rounding_close, tiny_unet

from pndm import ImagePipelineOutput, PNDMPipeline, PNDMScheduler, UNet2DModel
from pndm.noise import randn_tensor
from pndm.samplers import nfe
from pndm.wrapper import NonFiniteOutput, Observed

diffusers = pytest.importorskip("diffusers")

FAST_UNET = {  # diffusers tests/pipelines/pndm/test_pndm.py
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
}
UPSTREAM_SLICE = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
PARITY_ATOL = 1e-4  # float32, CPU; measured max |ours - diffusers|: 5e-7 .. 7e-7, 20 steps 9e-6
LOW_NOISE = {"beta_end": 1e-3}  # unsaturated images (see the module docstring)
# Half precision vs float32, images in [0, 1], LOW_NOISE, plms with 4 steps. The only change is
# the UNet's rounding (noise and solver stay float32), so the error scales with the unit roundoff
# u (fp16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3): measured max 0.6-0.9u, mean 0.1u for both. Bound:
# max 4u, mean u/2.
HALF_TOLERANCE = {torch.float16: (2e-3, 2.5e-4), torch.bfloat16: (1.6e-2, 2e-3)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def diffusers_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(**FAST_UNET).eval()


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory, diffusers_unet) -> Path:
    """A folder written by diffusers' PNDMPipeline.save_pretrained (default PNDMScheduler)."""
    folder = tmp_path_factory.mktemp("diffusers-pipeline")
    diffusers.PNDMPipeline(
        unet=diffusers_unet, scheduler=diffusers.PNDMScheduler()
    ).save_pretrained(folder)
    return folder


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_images(unet, scheduler_kwargs: dict, steps: int, seed: int = 0) -> np.ndarray:
    pipe = quiet(
        diffusers.PNDMPipeline(unet=unet, scheduler=diffusers.PNDMScheduler(**scheduler_kwargs))
    )
    return pipe(
        num_inference_steps=steps, generator=torch.manual_seed(seed), output_type="np"
    ).images


@pytest.fixture
def small_pipe(diffusers_folder) -> PNDMPipeline:
    """The same weights at 16x16, LOW_NOISE schedule, PLMS: cheap runs for non-parity tests."""
    unet = UNet2DModel.from_pretrained(diffusers_folder, subfolder="unet", sample_size=16)
    scheduler = PNDMScheduler(**LOW_NOISE, skip_prk_steps=True)
    return quiet(PNDMPipeline(unet, scheduler))


def exact_pipe(pipe: PNDMPipeline) -> PNDMPipeline:
    """The same pipeline in float64 (UNet and solver): the reference for float32 rounding."""
    return quiet(PNDMPipeline(copy.deepcopy(pipe.unet).double(), pipe.scheduler))


def record_calls(log: list):
    def callback(i, t, x):
        log.append((i, t.clone(), x.clone()))

    return callback


# ------------------------------------------------------------------------------------------------
# Parity with diffusers
# ------------------------------------------------------------------------------------------------


def test_upstream_fast_test_slice_and_diffusers_parity(diffusers_folder, diffusers_unet) -> None:
    pipe = quiet(PNDMPipeline.from_pretrained(diffusers_folder))
    assert isinstance(pipe.scheduler, PNDMScheduler) and not pipe.scheduler.config.skip_prk_steps
    out = pipe(num_inference_steps=20, generator=torch.manual_seed(0), output_type="np")
    assert isinstance(out, ImagePipelineOutput)
    image = out.images
    assert image.shape == (1, 32, 32, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, -3:, -3:, -1].ravel(), UPSTREAM_SLICE, atol=1e-2)
    reference = diffusers_images(diffusers_unet, {}, 20)
    assert np.abs(image - reference).max() <= PARITY_ATOL


@pytest.mark.parametrize(
    ("scheduler_kwargs", "steps"),
    [
        ({"skip_prk_steps": False}, 5),
        ({"skip_prk_steps": True}, 10),
        ({"skip_prk_steps": False, "timestep_spacing": "trailing"}, 5),  # T % n == 0: agrees
        ({"skip_prk_steps": True, "timestep_spacing": "trailing"}, 10),
        ({"skip_prk_steps": True, "steps_offset": 1}, 10),  # Stable Diffusion's grid
    ],
    ids=["prk", "skip-prk", "trailing-prk", "trailing-skip-prk", "offset-1-skip-prk"],
)
def test_matches_diffusers_pipeline(diffusers_folder, diffusers_unet, scheduler_kwargs, steps):
    kwargs = {**LOW_NOISE, **scheduler_kwargs}
    # a diffusers scheduler object, converted as diffusers' __init__ converts it
    pipe = PNDMPipeline.from_pretrained(
        diffusers_folder, scheduler=diffusers.PNDMScheduler(**kwargs)
    )
    images = quiet(pipe)(
        num_inference_steps=steps, generator=torch.manual_seed(0), output_type="np"
    )
    reference = diffusers_images(diffusers_unet, kwargs, steps)
    inside = ((reference > 0) & (reference < 1)).mean()
    assert inside > 0.5  # the comparison is not decided by clamping
    assert np.abs(images.images - reference).max() <= PARITY_ATOL


def test_linspace_follows_the_grid_not_diffusers_stride(diffusers_folder, diffusers_unet) -> None:
    """diffusers steps linspace grids by the stride T // n (diffusers-compat.md §8): we do not."""
    kwargs = {**LOW_NOISE, "skip_prk_steps": True, "timestep_spacing": "linspace"}
    pipe = quiet(PNDMPipeline.from_pretrained(diffusers_folder, scheduler=PNDMScheduler(**kwargs)))
    log: list = []
    images = pipe(
        1, 4, generator=torch.manual_seed(0), output_type="np", callback=record_calls(log)
    )
    assert [float(t[0]) for _, t, _ in log] == [999.0, 666.0, 666.0, 333.0, 0.0]
    reference = diffusers_images(diffusers_unet, kwargs, 4)
    assert np.abs(images.images - reference).max() > 1e-3


def test_folder_saved_by_pndm_loads_in_diffusers(diffusers_folder, tmp_path) -> None:
    scheduler = PNDMScheduler(**LOW_NOISE, skip_prk_steps=True)
    pipe = quiet(PNDMPipeline.from_pretrained(diffusers_folder, scheduler=scheduler))
    pipe.save_pretrained(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "PNDMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]

    theirs = quiet(diffusers.PNDMPipeline.from_pretrained(tmp_path))
    assert theirs.scheduler.config.skip_prk_steps and theirs.scheduler.config.beta_end == 1e-3
    reference = theirs(num_inference_steps=5, generator=torch.manual_seed(3), output_type="np")
    ours = pipe(num_inference_steps=5, generator=torch.manual_seed(3), output_type="np")
    assert np.abs(ours.images - reference.images).max() <= PARITY_ATOL
    again = quiet(PNDMPipeline.from_pretrained(tmp_path))
    reloaded = again(num_inference_steps=5, generator=torch.manual_seed(3), output_type="np")
    np.testing.assert_array_equal(reloaded.images, ours.images)


def test_flat_layout_with_a_ddpm_scheduler_config(diffusers_unet, tmp_path) -> None:
    """google/ddpm-cifar10-32's layout: UNet and a DDPMScheduler config at the folder's root."""
    diffusers_unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(beta_end=1e-3, clip_sample=False).save_pretrained(tmp_path)
    index = {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]}
    (tmp_path / "model_index.json").write_text(
        json.dumps({**index, "unet": ["diffusers", "UNet2DModel"]})
    )
    assert (
        json.loads((tmp_path / "scheduler_config.json").read_text())["_class_name"]
        == "DDPMScheduler"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # diffusers drops the DDPM-only keys silently: so do we
        pipe = quiet(PNDMPipeline.from_pretrained(tmp_path))
    assert type(pipe.scheduler) is PNDMScheduler
    assert pipe.scheduler.config.beta_end == 1e-3 and not pipe.scheduler.config.skip_prk_steps
    assert "variance_type" not in pipe.scheduler.config
    image = pipe(1, generator=torch.manual_seed(0), output_type="np", method="ddim").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_scheduler_objects_of_other_classes_convert(small_pipe) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe = PNDMPipeline(small_pipe.unet, diffusers.DDPMScheduler(beta_end=2e-3))
    assert type(pipe.scheduler) is PNDMScheduler and pipe.scheduler.config.beta_end == 2e-3
    with pytest.raises(ValueError, match=r"scheduler must be a scheduler with a \.config"):
        PNDMPipeline(small_pipe.unet, object())
    with pytest.raises(ValueError, match="unet must be a UNet2DModel"):
        PNDMPipeline(object(), PNDMScheduler())


# ------------------------------------------------------------------------------------------------
# Noise: diffusers' randn_tensor, seeds, generator lists
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (2, 1, 4, 6)])
@pytest.mark.parametrize("kind", ["one", "list", "one-element-list", "global"])
def test_noise_is_drawn_as_diffusers_draws_it(shape, kind) -> None:
    from diffusers.utils.torch_utils import randn_tensor as diffusers_randn

    def generators():
        if kind == "one":
            return torch.Generator().manual_seed(5)
        if kind == "list":
            return [torch.Generator().manual_seed(s) for s in range(shape[0])]
        if kind == "one-element-list":
            return [torch.Generator().manual_seed(5)]
        torch.manual_seed(5)
        return None

    ours = randn_tensor(shape, generator=generators(), device=torch.device("cpu"))
    theirs = diffusers_randn(shape, generator=generators(), device=torch.device("cpu"))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_noise_device_rules() -> None:
    """CPU generators draw on the CPU for any device; others only for their own device type."""
    from types import SimpleNamespace

    from pndm.noise import _draw_device

    def gen(kind):
        return SimpleNamespace(device=torch.device(kind))

    cuda0 = torch.device("cuda:0")
    assert _draw_device([gen("cpu")], cuda0) == torch.device("cpu")
    assert _draw_device([gen("cuda")], cuda0) == cuda0
    with pytest.raises(
        ValueError, match="cannot draw noise for device cpu from a generator on cuda"
    ):
        _draw_device([gen("cuda")], torch.device("cpu"))
    with pytest.raises(ValueError, match="generators are on different device types"):
        _draw_device([gen("cpu"), gen("cuda")], cuda0)


def test_seeds_make_images_independent_of_the_batch(small_pipe) -> None:
    log: list = []
    one = small_pipe(1, 2, seeds=[7], output_type="pt", method="ddim", callback=record_calls(log))
    expected_noise = torch.randn((1, 3, 16, 16), generator=torch.Generator("cpu").manual_seed(7))
    torch.testing.assert_close(log[0][2], expected_noise, rtol=0, atol=0)
    three = small_pipe(3, 2, seeds=np.array([3, 7, 11]), output_type="pt", method="ddim")
    exact = exact_pipe(small_pipe)(1, 2, seeds=[7], output_type="pt", method="ddim").images
    assert_rounding_close(three.images[1:2], one.images, exact)  # other kernels per batch size
    assert (three.images[0] - three.images[2]).abs().max() > 0.1


def test_generator_list_gives_each_image_its_own_stream(small_pipe) -> None:
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batch = small_pipe(2, 1, generator=gens, output_type="pt", method="ddim").images
    single = small_pipe(
        1, 1, generator=torch.Generator().manual_seed(2), output_type="pt", method="ddim"
    )
    exact = exact_pipe(small_pipe)(1, 1, seeds=[2], output_type="pt", method="ddim").images
    assert_rounding_close(batch[1:], single.images, exact)  # other kernels per batch size
    seeded = small_pipe(2, 1, seeds=[1, 2], output_type="pt", method="ddim").images
    torch.testing.assert_close(seeded, batch, rtol=0, atol=0)
    with pytest.raises(ValueError, match="list of 3 generators for a batch of 2"):
        small_pipe(2, 1, generator=[torch.Generator() for _ in range(3)])


def test_latents_are_used_as_given(small_pipe) -> None:
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    log: list = []
    out = small_pipe(2, 2, latents=noise, output_type="pt", callback=record_calls(log))
    torch.testing.assert_close(log[0][2], noise, rtol=0, atol=0)
    from_seed = small_pipe(2, 2, generator=torch.Generator().manual_seed(4), output_type="pt")
    torch.testing.assert_close(out.images, from_seed.images, rtol=0, atol=0)


def test_latents_set_the_size_when_the_unet_has_none(small_pipe) -> None:
    unet = UNet2DModel.from_config(small_pipe.unet.config, sample_size=None)
    pipe = quiet(PNDMPipeline(unet, small_pipe.scheduler))
    out = pipe(1, 1, latents=torch.zeros(1, 3, 8, 12), output_type="np", method="ddim")
    assert out.images.shape == (1, 8, 12, 3)
    with pytest.raises(ValueError, match="sample_size is None; pass latents"):
        pipe(1, 1, seeds=[0])


# ------------------------------------------------------------------------------------------------
# Precision
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_runs_and_agrees_with_float32(diffusers_folder, dtype) -> None:
    def run(torch_dtype):
        unet = UNet2DModel.from_pretrained(
            diffusers_folder, subfolder="unet", sample_size=16, torch_dtype=torch_dtype
        )
        pipe = quiet(PNDMPipeline(unet, PNDMScheduler(**LOW_NOISE, skip_prk_steps=True)))
        log: list = []
        out = pipe(
            1, 4, generator=torch.manual_seed(0), output_type="np", callback=record_calls(log)
        )
        return pipe, out.images, log

    pipe, half, log = run(dtype)
    _, full, full_log = run(None)
    assert pipe.dtype == dtype
    assert half.dtype == np.float32 and np.isfinite(half).all()
    # the same float32 noise, and float32 solver state at every call
    torch.testing.assert_close(log[0][2], full_log[0][2], rtol=0, atol=0)
    assert all(x.dtype == torch.float32 for _, _, x in log)
    max_tol, mean_tol = HALF_TOLERANCE[dtype]
    diff = np.abs(half - full)
    assert diff.max() <= max_tol and diff.mean() <= mean_tol


def test_from_pretrained_casts_the_unet(diffusers_folder) -> None:
    pipe = PNDMPipeline.from_pretrained(diffusers_folder, torch_dtype="bfloat16")
    assert pipe.dtype == torch.bfloat16 and pipe.unet.dtype == torch.bfloat16


def test_to_moves_and_casts_the_unet(small_pipe) -> None:
    assert small_pipe.device == torch.device("cpu") and small_pipe.dtype == torch.float32
    assert small_pipe.to(torch.bfloat16) is small_pipe
    assert small_pipe.dtype == torch.bfloat16 == small_pipe.unet.dtype
    small_pipe.to("cpu", torch.float32)
    assert small_pipe.dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# Outputs, components, progress bar, methods
# ------------------------------------------------------------------------------------------------


def test_output_types(small_pipe) -> None:
    kwargs = {"num_inference_steps": 1, "method": "ddim", "batch_size": 2}
    pt = small_pipe(seeds=[0, 1], output_type="pt", **kwargs).images
    array = small_pipe(seeds=[0, 1], output_type="np", **kwargs).images
    pil = small_pipe(seeds=[0, 1], **kwargs).images  # "pil" is the default
    assert pt.shape == (2, 3, 16, 16) and pt.dtype == torch.float32
    assert array.shape == (2, 16, 16, 3) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() <= 1
    np.testing.assert_array_equal(pt.permute(0, 2, 3, 1).numpy(), array)
    assert len(pil) == 2 and all(isinstance(im, PIL.Image.Image) for im in pil)
    assert pil[0].mode == "RGB" and pil[0].size == (16, 16)
    np.testing.assert_array_equal(np.asarray(pil[1]), (array[1] * 255).round().astype(np.uint8))
    (images,) = small_pipe(seeds=[0, 1], output_type="np", return_dict=False, **kwargs)
    np.testing.assert_array_equal(images, array)


def test_one_channel_images_are_mode_l() -> None:
    unet = tiny_unet(sample_size=(8, 12), norm_num_groups=4, **GREY, **PLAIN)  # (H, W)
    pipe = quiet(PNDMPipeline(unet, PNDMScheduler()))
    (image,) = pipe(1, 1, seeds=[0], method="ddim").images
    assert image.mode == "L" and image.size == (12, 8)


def test_components_round_trip_and_scheduler_from_config(small_pipe) -> None:
    again = PNDMPipeline(**small_pipe.components)
    assert again.unet is small_pipe.unet
    assert dict(again.scheduler.config) == dict(small_pipe.scheduler.config)
    prk = PNDMScheduler.from_config(small_pipe.scheduler.config, skip_prk_steps=False)
    assert not prk.config.skip_prk_steps and prk.config.beta_end == 1e-3
    skip = PNDMScheduler.from_config(prk.config, skip_prk_steps=True)
    assert skip.config.skip_prk_steps


@pytest.mark.parametrize("skip_prk_steps", [False, True])
def test_default_method_calls_the_model_where_the_scheduler_plans(small_pipe, skip_prk_steps):
    """The pipeline's model calls (times and count) are the scheduler's ``timesteps``."""
    scheduler = PNDMScheduler(**LOW_NOISE, skip_prk_steps=skip_prk_steps)
    pipe = quiet(PNDMPipeline(small_pipe.unet, scheduler))
    log: list = []
    pipe(1, 5, seeds=[0], output_type="pt", callback=record_calls(log))
    scheduler.set_timesteps(5)
    assert [i for i, _, _ in log] == list(range(len(scheduler.timesteps)))
    assert [float(t[0]) for _, t, _ in log] == scheduler.timesteps.tolist()
    assert len(log) == (5 + 1 if skip_prk_steps else 5 + 9)


def test_progress_bar_counts_model_calls_and_can_be_disabled(small_pipe, capfd) -> None:
    buffer = io.StringIO()
    small_pipe.set_progress_bar_config(file=buffer, ascii=True)
    small_pipe(1, 3, seeds=[0], output_type="pt")
    assert "4/4" in buffer.getvalue()  # plms: 3 steps, 4 model calls
    small_pipe.set_progress_bar_config(disable=True)
    small_pipe(1, 3, seeds=[0], output_type="pt")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("ddim", {}),
        ("s-pndm", {}),
        ("f-pndm", {}),
        ("ipndm", {}),
        ("vab", {"order": 2}),
        ("fon", {}),
    ],
)
def test_methods_run_with_their_nfe(small_pipe, method, options) -> None:
    log: list = []
    out = small_pipe(
        1, 3, seeds=[0], output_type="pt", method=method, callback=record_calls(log), **options
    )
    assert len(log) == nfe(method, 3, **options)
    assert bool(torch.isfinite(out.images).all())


# ------------------------------------------------------------------------------------------------
# Fast paths
# ------------------------------------------------------------------------------------------------


def _unet_state(unet) -> list:
    """Everything a call could change about a UNet: values, layout, dtype, device, grad, mode."""
    return [unet.training] + [
        (name, t.detach().clone(), t.stride(), t.dtype, t.device, t.requires_grad)
        for name, t in [*unet.named_parameters(), *unet.named_buffers()]
    ]


def _assert_same_state(before: list, after: list) -> None:
    assert before[0] == after[0]
    for (name, *a), (_, *b) in zip(before[1:], after[1:], strict=True):
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:], name


def test_channels_last_gives_the_same_images(small_pipe) -> None:
    kwargs = {"batch_size": 2, "num_inference_steps": 3, "seeds": [0, 1], "output_type": "pt"}
    plain = small_pipe(channels_last=False, **kwargs).images
    fast = small_pipe(channels_last=True, **kwargs).images
    exact = exact_pipe(small_pipe)(**kwargs).images
    assert_rounding_close(fast, plain, exact)  # oneDNN's channels-last kernels sum in other orders


@pytest.mark.parametrize(
    "options",
    [{"channels_last": True}, {"channels_last": None}, {"compile": True}, {"method": "pf"}],
)
def test_call_arguments_leave_the_unet_as_it_was(small_pipe, monkeypatch, options) -> None:
    monkeypatch.setattr(torch, "compile", lambda module, **_: module)  # no minutes-long compile
    before = _unet_state(small_pipe.unet)
    small_pipe(num_inference_steps=3, seeds=[0], output_type="pt", **options)
    _assert_same_state(before, _unet_state(small_pipe.unet))


def test_compile_is_cached_on_the_pipeline(small_pipe, monkeypatch) -> None:
    compiled: list = []
    calls: list = []

    def fake_compile(module):
        compiled.append(module)

        def run(*args, **kwargs):  # stands in for dynamo's wrapper, and proves it is used
            calls.append(1)
            return module(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    kwargs = {"num_inference_steps": 2, "seeds": [0], "output_type": "pt", "method": "ddim"}
    small_pipe(**kwargs)
    assert compiled == [] and calls == []
    small_pipe(compile=True, **kwargs)
    small_pipe(compile=True, **kwargs)
    assert compiled == [small_pipe.unet]  # compiled once, reused
    assert len(calls) == 4  # every model call of both runs went through the compiled UNet
    small_pipe.unet = UNet2DModel.from_config(small_pipe.unet.config)
    small_pipe(compile=True, **kwargs)
    assert len(compiled) == 2 and compiled[1] is small_pipe.unet  # a new UNet is recompiled


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("method", ["f-pndm", "plms", "ipndm", "ddim"])
def test_sampling_loop_reads_no_tensor_on_the_host(small_pipe, monkeypatch, method, batch) -> None:
    """From the first model call to the end of the sampler nothing reads a tensor value on the
    host (no device sync); the one finiteness check after the loop may.

    Batch 2 as well: the UNet must learn that the batch shares one time from the stride alone.
    """
    loop = pytest.MonkeyPatch()
    real_check = Observed.check_finite

    def host_read(*args, **kwargs):
        raise AssertionError("the sampling loop read a tensor value on the host")

    def forbid_after_first_call(i, t, x):
        if i == 0:
            for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
                loop.setattr(torch.Tensor, name, host_read)

    def check_after_the_loop(self, x):
        assert len(loop._setattr) == 7, "the loop was not watched"
        loop.undo()
        return real_check(self, x)

    monkeypatch.setattr(Observed, "check_finite", check_after_the_loop)
    seeds = list(range(batch))
    try:
        out = small_pipe(
            batch, 6, seeds=seeds, output_type="pt", method=method, callback=forbid_after_first_call
        )
    finally:
        loop.undo()
    assert bool(torch.isfinite(out.images).all())


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 1.5}, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer"),
        ({"num_inference_steps": 1001}, "num_inference_steps must be an integer in"),
        ({"output_type": "jpeg"}, "output_type must be one of pil, np, pt, got 'jpeg'"),
        ({"output_type": None}, "output_type must be one of pil, np, pt, got None"),
        ({"method": "pndmm"}, "method must be one of ddim, s-pndm, f-pndm"),
        ({"seeds": [1, 2]}, "seeds has 2 entries for batch_size=1"),
        ({"seeds": [-1]}, r"seeds must be integers in \[0, 2\*\*64\)"),
        ({"seeds": [2**64]}, r"seeds must be integers in \[0, 2\*\*64\)"),
        ({"seeds": 3}, "seeds must be a list of integers"),
        (
            {"seeds": [1], "generator": torch.Generator()},
            "only one of generator, seeds and latents",
        ),
        ({"latents": torch.full((1, 3, 16, 16), float("nan"))}, "latents .* contains NaN"),
        ({"latents": torch.zeros(1, 3, 8, 8)}, r"latents has shape \(1, 3, 8, 8\)"),
        ({"generator": 0}, "generator must be a torch.Generator"),
        ({"method": "ddim", "order": 2}, "unknown option.*'order' for method 'ddim'"),
        ({"timesteps": [10, 20]}, "timesteps must be strictly decreasing"),
    ],
)
def test_bad_input_fails_clearly(small_pipe, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        small_pipe(**kwargs)


def test_v_prediction_compat_is_refused(small_pipe) -> None:
    scheduler = PNDMScheduler(prediction_type="v_prediction", v_prediction_compat="diffusers")
    with pytest.raises(ValueError, match="v_prediction_compat"):
        PNDMPipeline(small_pipe.unet, scheduler)(1, 2)


def test_missing_folders_and_foreign_unets(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="pipeline folder not found"):
        PNDMPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "model_index.json").write_text(
        json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ValueError, match="needs a UNet2DModel"):
        PNDMPipeline.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------
# CUDA (skipped without it)
# ------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.gpu
def test_cuda_generator_for_a_cpu_pipeline_is_refused(small_pipe) -> None:
    with pytest.raises(ValueError, match="cannot draw noise for device cpu"):
        small_pipe(1, 1, generator=torch.Generator("cuda"))


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_loop_does_not_synchronise(small_pipe, dtype) -> None:
    """Same images as on the CPU from the same CPU generator, and no sync after the first call."""
    cpu = small_pipe(2, 6, seeds=[0, 1], output_type="pt").images
    small_pipe.to("cuda", dtype)

    def strict_after_first_call(i, t, x):
        if i == 0:
            torch.cuda.set_sync_debug_mode("error")

    try:
        out = small_pipe(2, 6, seeds=[0, 1], output_type="pt", callback=strict_after_first_call)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.images.device.type == "cuda"
    torch.testing.assert_close(
        out.images.cpu(), cpu, rtol=0, atol=2e-3 if dtype == torch.float16 else 1e-4
    )


@cuda
@pytest.mark.gpu
def test_cuda_channels_last_and_compile(small_pipe) -> None:
    small_pipe.to("cuda")
    plain = small_pipe(2, 4, seeds=[0, 1], output_type="pt").images
    fast = small_pipe(2, 4, seeds=[0, 1], output_type="pt", channels_last=True, compile=True).images
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-3)


@pytest.mark.parametrize(("bad_call", "value"), [(1, float("nan")), (3, float("inf"))])
def test_a_model_returning_nan_or_inf_stops_with_the_call_named(small_pipe, bad_call, value):
    calls = []

    def poison(module, args, output):
        calls.append(1)
        if len(calls) == bad_call:  # in place: the hook's return value would replace the output
            (output[0] if isinstance(output, tuple) else output.sample).fill_(value)

    handle = small_pipe.unet.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteOutput, match=rf"NaN or inf at model call {bad_call} of 6 "):
            small_pipe(1, 5, seeds=[0], output_type="np")  # PLMS: 6 calls
    finally:
        handle.remove()
