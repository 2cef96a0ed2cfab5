"""SamplerScheduler on its own: every fixed-step method driven both ways (the pure loop and one
``step`` per model call) gives the same samples; the diffusers protocol (timesteps, sigmas, begin
index, calibration, prediction types), config round trips and errors. Pipelines: in
test_diffusers_pipelines.py."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from conftest import rel

from pndm import SamplerScheduler, SchedulerOutput
from pndm.calibration import Calibration
from pndm.compat.stepper import restart_grid
from pndm.samplers import SAMPLERS
from pndm.samplers.calls import drive
from pndm.wrapper import make_eps_fn

FIXED = [name for name, method in SAMPLERS.items() if not method.adaptive]
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
OPTIONS = {
    "ddim": {"clip_sample": True, "clip_sample_range": 1.5},
    "s-pndm": {},
    "f-pndm": {},
    "fon": {},
    "fon-orig": {"index_size": 2.0},
    "plms": {"lower_order_final": True},
    "ipndm": {},  # afs, denoise_to_zero: their own tests below
    "vab": {"order": 3},
    "pec": {"order": 2, "lower_order_final": True},
    "dpmpp-2m": {"lower_order_final": True},
    "pec-data": {"order": 3},
}


class Model:
    """A deterministic nonlinear ε-model that counts its calls and records their times."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        self.times.append(float(t.reshape(-1)[0]))
        t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)


def sample(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)


def loop(s: SamplerScheduler, x: torch.Tensor, model, begin: int = 0) -> torch.Tensor:
    """A diffusers pipeline's loop over ``s.timesteps[begin:]``."""
    for t in s.timesteps[begin:]:
        x = s.step(model(s.scale_model_input(x, t), t), t, x, return_dict=False)[0]
    return x


# ------------------------------------------------------------------------------------------------
# One method, driven two ways
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize(
    "how", [{"num_inference_steps": 7}, {"timesteps": [999, 850, 736, 645, 545, 455, 343]}]
)
def test_every_method_steps_to_the_pure_sampler_bit_for_bit(name: str, how: dict) -> None:
    """float64 sample and model: the scheduler runs the pure sampler's arithmetic exactly."""
    s = SamplerScheduler(method=name, **SD, **OPTIONS[name])
    s.set_timesteps(**how)
    model = Model()
    out = loop(s, sample(), model)
    assert len(model.times) == len(s.timesteps) == SAMPLERS[name].nfe(7, **OPTIONS[name])
    assert model.times == pytest.approx(s.timesteps.tolist(), abs=1e-4)
    pure = SAMPLERS[name](Model(), sample(), s.grid(**how), s.schedule, **OPTIONS[name])
    assert torch.equal(out, pure)


def test_denoise_to_zero_below_the_trained_times_is_refused() -> None:
    """A diffusers grid ends at -1, below the UNet's trained times: the extra call is refused
    when the run is planned, as the pure sampler refuses it, before any UNet call."""
    s = SamplerScheduler(method="ipndm", denoise_to_zero=True, **SD)
    with pytest.raises(ValueError, match="denoise_to_zero must be False on a grid whose target -1"):
        s.set_timesteps(7)


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_and_half_latents_run_the_float32_sampler(name: str, dtype) -> None:
    """float32 latents: the pure float32 sampler, bit for bit. Half-precision latents keep a
    float32 state (the latents passed back are the state's rounding, not the state)."""
    s = SamplerScheduler(method=name, **SD)
    s.set_timesteps(6)
    model = Model()
    out = loop(s, sample(dtype), lambda x, t: model(x.float(), t).to(x.dtype))

    def as_in_the_loop(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the model's dtype
        return Model()(x.to(dtype).float(), t.float()).to(dtype).float()

    pure = SAMPLERS[name](as_in_the_loop, sample(dtype).float(), s.grid(6), s.schedule)
    assert out.dtype == dtype
    assert torch.equal(out, pure.to(dtype))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
@pytest.mark.parametrize("name", ["ipndm", "f-pndm", "pec-data"])
def test_prediction_types_are_converted_at_each_calls_own_point(name, prediction_type) -> None:
    s = SamplerScheduler(method=name, prediction_type=prediction_type, **SD)
    s.set_timesteps(5)

    def other_form(x, t):  # the same denoiser, written as v or x̂₀
        a = s.schedule.alpha_bar(torch.as_tensor(t, dtype=torch.float64).reshape(-1))
        a = a.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        eps = Model()(x, t)
        if prediction_type == "v_prediction":
            return (eps - (1 - a).sqrt() * x) / a.sqrt()
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    out = loop(s, sample(), other_form)
    eps_fn = make_eps_fn(other_form, s.schedule, prediction_type)
    assert rel(out, SAMPLERS[name](eps_fn, sample(), s.grid(5), s.schedule)) < 1e-12
    assert rel(out, SAMPLERS[name](Model(), sample(), s.grid(5), s.schedule)) < 1e-10


def test_sigmas_are_diffusers_karras_sigmas() -> None:
    """``sigmas`` σ_0 > ... > σ_N (σ = sqrt((1-ᾱ)/ᾱ), the last 0): model times t(σ_k), target -1;
    AYS's first σ lies a hair above the schedule's largest and is clamped, as diffusers does."""
    ays = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.0]
    s = SamplerScheduler(method="dpmpp-2m", **SD)
    s.set_timesteps(sigmas=ays)
    grid = s.grid(sigmas=ays)
    assert len(s.timesteps) == 10 and grid[0] == 999 and grid[-1] == -1
    assert s.schedule.sigma_tilde(grid[1:-1]).tolist() == pytest.approx(ays[1:-1], rel=1e-9)
    out = loop(s, sample(), Model())  # fractional times: listed in float32, as a UNet embeds them

    def float32_time(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return Model()(x, t.float())

    assert torch.equal(out, SAMPLERS["dpmpp-2m"](float32_time, sample(), grid, s.schedule))
    with pytest.raises(ValueError, match="strictly decreasing"):
        s.set_timesteps(sigmas=[3.0, 5.0, 0.0])
    with pytest.raises(ValueError, match="only one of"):
        s.set_timesteps(timesteps=[999, 500], sigmas=ays)


# ------------------------------------------------------------------------------------------------
# Mid-schedule starts, calibration, the analytic first step
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("begin", [1, 3, 6])
def test_a_mid_schedule_start_makes_the_listed_calls(name: str, begin: int) -> None:
    """img2img: the pipeline calls the model at timesteps[begin:], one call per entry; the run
    restarts there (no warm-up, one call per distinct time) and equals that restarted plan."""
    s = SamplerScheduler(method=name, **SD, **OPTIONS[name])
    s.set_timesteps(8)
    times = [float(t) for t in s.timesteps]
    s.set_begin_index(begin)
    assert s.begin_index == begin and s.step_index is None
    x = s.add_noise(sample(), 0.5 * sample(), s.timesteps[begin : begin + 1])
    model = Model()
    out = loop(s, x, model, begin)
    assert len(model.times) == len(times) - begin and s.step_index == len(times)
    grid = torch.tensor(restart_grid(times[begin:], -1.0), dtype=torch.float64)
    plan = SAMPLERS[name].plan(x, grid, s.schedule, restart=True, **OPTIONS[name])
    assert torch.equal(out, drive(Model(), x, plan))


def test_a_calibration_lists_shifted_times_and_scales_eps_in_step() -> None:
    s = SamplerScheduler(method="ipndm", **SD)
    grid = s.grid(5)
    calibration = Calibration(tuple(grid[:-1].tolist()), (3.0, -2.0, 1.5, 0.0, -4.0),
                              (1.01, 0.99, 1.0, 1.02, 0.97))  # fmt: skip
    s = SamplerScheduler(method="ipndm", calibration=calibration, prediction_type="v_prediction",
                         **SD)  # fmt: skip
    s.set_timesteps(timesteps=grid)
    expected = [t + d for t, d in zip(grid[:-1].tolist(), calibration.time_shifts, strict=True)]
    assert s.timesteps.tolist() == pytest.approx(expected, abs=1e-4)
    v_model = Model()
    out = loop(s, sample(), v_model)
    eps_fn = calibration.apply(make_eps_fn(Model(), s.schedule, "v_prediction"))
    assert rel(out, SAMPLERS["ipndm"](eps_fn, sample(), grid, s.schedule)) < 1e-12
    assert SamplerScheduler.from_config(s.config).calibration == calibration


def test_the_analytic_first_step_moves_the_first_model_input() -> None:
    """iPNDM with afs: the first call is at φ(x_0, x_0) = k x_0; scale_model_input gives it (for
    a guidance-doubled batch too), and the result is the pure sampler's."""
    s = SamplerScheduler(method="ipndm", afs=True, **SD)
    s.set_timesteps(6)
    assert len(s.timesteps) == 5
    doubled = torch.cat([sample()] * 2)
    scaled = s.scale_model_input(doubled, s.timesteps[0])
    assert not torch.equal(scaled, doubled) and torch.equal(scaled[:2], scaled[2:])
    out = loop(s, sample(), Model())
    pure = SAMPLERS["ipndm"](Model(), sample(), s.grid(6), s.schedule, afs=True)
    assert rel(out, pure) < 1e-14
    assert torch.equal(s.scale_model_input(doubled, 0), doubled)  # only the first call


def test_an_edited_sample_is_followed() -> None:
    """A pipeline that edits its latents between calls (inpainting) passes a new tensor: the run
    continues from it. An unedited copy (equal values) changes nothing."""
    s = SamplerScheduler(method="pec-data", **SD)
    s.set_timesteps(6)
    reference = loop(s, sample(), Model())
    s.set_timesteps(6)
    x = sample()
    for i, t in enumerate(s.timesteps):
        x = s.step(Model()(x, t), t, x).prev_sample
        x = x + 0.01 if i == 2 else x.clone()
    assert rel(x, reference) > 1e-4
    s.set_timesteps(6)
    copied = sample()
    for t in s.timesteps:
        copied = s.step(Model()(copied, t), t, copied).prev_sample.clone()
    assert torch.equal(copied, reference)


# ------------------------------------------------------------------------------------------------
# The step path, state, config and errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXED)
def test_step_reads_no_tensor_values_on_the_host(monkeypatch, name: str) -> None:
    """No .item(), bool(), float(), .tolist(), .cpu() in step: the reads that sync a GPU."""
    grid = SamplerScheduler(**SD).grid(6)
    calibration = Calibration.identity(grid[:-1].tolist())
    s = SamplerScheduler(method=name, prediction_type="v_prediction", calibration=calibration,
                         **SD, **OPTIONS[name])  # fmt: skip
    s.set_timesteps(6)
    s.set_begin_index(2)
    x = sample(torch.float32)  # planned for float32 at set_timesteps (float64 plans again)

    def host_read(*args, **kwargs):
        raise AssertionError("step read a tensor value on the host")

    for method in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, method, host_read)
    for t in s.timesteps[2:]:
        x = s.step(torch.tanh(x), t, x).prev_sample
    monkeypatch.undo()
    assert bool(torch.isfinite(x).all())


def test_copies_and_pickles_plan_the_same_run_afresh() -> None:
    s = SamplerScheduler(method="plms", **SD)
    s.set_timesteps(9)
    s.set_begin_index(3)
    reference = loop(copy.deepcopy(s), sample(), Model(), 3)
    x = sample()
    x = s.step(Model()(x, s.timesteps[3]), s.timesteps[3], x).prev_sample  # mid-run
    for other in (copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert other.begin_index == 3 and other.step_index is None
        assert torch.equal(loop(other, sample(), Model(), 3), reference)


def test_step_errors() -> None:
    s = SamplerScheduler(**SD)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(sample(), 999, sample())
    with pytest.raises(ValueError, match="set_timesteps"):
        s.set_begin_index(1)
    s.set_timesteps(3)
    with pytest.raises(ValueError, match="shape"):
        s.step(sample()[:1], 999, sample())
    loop(s, sample(), Model())
    with pytest.raises(ValueError, match="set_timesteps again"):
        s.step(sample(), 0, sample())
    with pytest.raises(ValueError, match="past the 3 planned calls"):
        s.set_begin_index(4)


def test_attributes_and_output_forms() -> None:
    s = SamplerScheduler(method="ipndm", **SD)
    assert (s.order, s.init_noise_sigma, len(s), s.timesteps) == (1, 1.0, 1000, None)
    assert s.alphas_cumprod.dtype == torch.float32 and "EulerDiscreteScheduler" in s._compatibles
    s.set_timesteps(4, device="cpu")
    assert s.timesteps.dtype == torch.int64 and s.num_inference_steps == 4
    out = s.step(sample(), s.timesteps[0], sample())
    assert isinstance(out, SchedulerOutput) and s.step_index == 1
    assert isinstance(s.step(sample(), s.timesteps[1], sample(), return_dict=False), tuple)


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def test_adaptive_methods_are_refused_in_one_line() -> None:
    for name in ("pf", "pec-adaptive"):
        with pytest.raises(ValueError, match="adaptive") as caught:
            SamplerScheduler(method=name)
        assert "\n" not in str(caught.value) and "ipndm" in str(caught.value)
    with pytest.raises(ValueError, match="method must be one of"):
        SamplerScheduler(method="pndmm")
    with pytest.raises(ValueError, match="unknown option"):
        SamplerScheduler(method="ddim", afs=True)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        SamplerScheduler(rescale_betas_zero_snr=True)


def test_config_round_trips_through_files_and_from_config(tmp_path) -> None:
    s = SamplerScheduler(method="vab", order=3, lower_order_final=True, steps_offset=1, **SD)
    assert s.config.method == "vab" and s.config.options == {"order": 3, "lower_order_final": True}
    s.save_pretrained(tmp_path)
    loaded = SamplerScheduler.from_pretrained(tmp_path)
    assert loaded.config == s.config and loaded.options == s.options
    assert SamplerScheduler.from_config(s.config).config == s.config
    other = SamplerScheduler.from_config(s.config, method="pec", order=2)
    assert (other.config.method, other.options) == ("pec", {"order": 2, "lower_order_final": True})
    plain = SamplerScheduler(method="ddim")
    assert "options" not in plain.config and "calibration" not in plain.config


def test_config_round_trips_with_diffusers() -> None:
    """From any diffusers scheduler's config (its other keys ignored silently, as diffusers does)
    and back: the same schedule."""
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DPMSolverMultistepScheduler(**SD, timestep_spacing="trailing")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = SamplerScheduler.from_config(theirs.config, method="pec-data", order=2)
    assert ours.config.timestep_spacing == "trailing" and ours.options == {"order": 2}
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=2e-6, atol=0)
    back = diffusers.DPMSolverMultistepScheduler.from_config(ours.config)
    assert (
        back.config.beta_schedule == "scaled_linear" and back.config.timestep_spacing == "trailing"
    )
    pndm_config = diffusers.PNDMScheduler(**SD, skip_prk_steps=True, steps_offset=1).config
    assert SamplerScheduler.from_config(pndm_config).config.steps_offset == 1
