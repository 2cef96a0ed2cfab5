"""PNDMScheduler on its own: API, config files, errors, state, and equality with the pure samplers.

Parity with diffusers lives in test_scheduler_compat.py.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import rel

from pndm import PNDMScheduler, SchedulerOutput
from pndm.config import FrozenConfig
from pndm.samplers import SAMPLERS, core
from pndm.wrapper import make_eps_fn

DEFAULT_JSON = (
    '{\n  "_class_name": "PNDMScheduler",\n  "_diffusers_version": "0.42.1",\n'
    '  "beta_end": 0.02,\n  "beta_schedule": "linear",\n  "beta_start": 0.0001,\n'
    '  "num_train_timesteps": 1000,\n  "prediction_type": "epsilon",\n'
    '  "set_alpha_to_one": false,\n  "skip_prk_steps": false,\n  "steps_offset": 0,\n'
    '  "timestep_spacing": "leading",\n  "trained_betas": null\n}\n'
)
# google/ddpm-cifar10-32's scheduler is a DDPMScheduler; these are DDPMScheduler's config keys.
DDPM_CONFIG = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}


def model(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """A deterministic nonlinear ε-model; t is a scalar or one time per sample."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)


def sample_tensor(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)


def run(scheduler: PNDMScheduler, x: torch.Tensor, n: int | None = None, eps=model, **kw):
    """The pipeline loop: one model call per entry of ``scheduler.timesteps``."""
    scheduler.set_timesteps(n, **kw)
    for t in scheduler.timesteps:
        x = scheduler.step(eps(x, t), t, x).prev_sample
    return x


def pure(scheduler: PNDMScheduler, x: torch.Tensor, n: int, eps=model) -> torch.Tensor:
    """The pure sampler on the scheduler's own grid t_0 > ... > t_N = -1."""
    method = "plms" if scheduler.config.skip_prk_steps else "f-pndm"
    return SAMPLERS[method](eps, x, scheduler.grid(n), scheduler.schedule)


# ------------------------------------------------------------------------------------------------
# The scheduler is the pure samplers' mathematics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("skip", [False, True], ids=["f-pndm", "plms"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 27, 50, 100, 333])
def test_trajectory_equals_pure_sampler_float32(spacing: str, skip: bool, n: int) -> None:
    s = PNDMScheduler(skip_prk_steps=skip, timestep_spacing=spacing)
    assert rel(run(s, sample_tensor(), n), pure(s, sample_tensor(), n)) < 1e-6


@pytest.mark.parametrize("skip", [False, True], ids=["f-pndm", "plms"])
@pytest.mark.parametrize("n", [500, 1000])
def test_trajectory_equals_pure_sampler_at_many_steps(skip: bool, n: int) -> None:
    """Exact in float64; in float32 the pure float32 sampler bit for bit (the state is float32, as
    diffusers' is). That sampler's own rounding, measured 1.3e-6 from the float64 run at n = 1000,
    is held to 1e-5: float32 rounding (6e-8 a step) summed over 1000 steps as a random walk."""
    s = PNDMScheduler(skip_prk_steps=skip, timestep_spacing="trailing")
    exact = pure(s, sample_tensor(torch.float64), n)
    assert rel(run(s, sample_tensor(torch.float64), n), exact) < 1e-12
    x32 = run(s, sample_tensor(), n)
    assert torch.equal(x32, pure(s, sample_tensor(), n))
    assert rel(x32, exact) < 1e-5


@pytest.mark.parametrize("n", [1, 2, 3])
def test_prk_mode_below_four_steps_runs_n_runge_kutta_steps(n: int) -> None:
    s = PNDMScheduler()
    x = run(s, sample_tensor(), n)
    assert len(s.timesteps) == 4 * n == len(s.prk_timesteps)
    assert len(s.plms_timesteps) == 0
    assert rel(x, pure(s, sample_tensor(), n)) < 1e-6


@pytest.mark.parametrize("skip", [False, True])
def test_model_calls_per_step_count(skip: bool) -> None:
    s = PNDMScheduler(skip_prk_steps=skip)
    for n in (4, 10, 50):
        s.set_timesteps(n)
        assert len(s.timesteps) == (n + 1 if skip else n + 9)
        assert s.num_inference_steps == n


def test_odd_stride_mid_time_is_one_half_integer_value() -> None:
    s = PNDMScheduler()
    s.set_timesteps(27)  # stride 37: the mid time 943.5 is both stepped to and evaluated at
    assert s.timesteps.dtype == torch.float32
    assert s.timesteps[:5].tolist() == [962.0, 943.5, 943.5, 925.0, 925.0]
    assert rel(run(s, sample_tensor(), 27), pure(s, sample_tensor(), 27)) < 1e-6


def test_explicit_timesteps_extension() -> None:
    s = PNDMScheduler(skip_prk_steps=True)
    times = [999, 700, 420, 200, 80, 10]
    x = run(s, sample_tensor(), timesteps=times)
    grid = torch.tensor([*times, -1], dtype=torch.float64)
    assert s.timesteps.tolist() == [999, 700, 700, 420, 200, 80, 10]
    assert rel(x, SAMPLERS["plms"](model, sample_tensor(), grid, s.schedule)) < 1e-6
    with pytest.raises(ValueError, match="strictly decreasing"):
        s.set_timesteps(timesteps=[10, 20])


@pytest.mark.parametrize("skip", [False, True], ids=["f-pndm", "plms"])
def test_scheduler_plan_follows_the_samplers_tables(monkeypatch, skip: bool) -> None:
    """One edit of the samplers' data (the warm-up tableau and the AB4 row) changes the pure sampler
    and the scheduler alike: they still agree with each other, and both differ from before."""
    s = PNDMScheduler(skip_prk_steps=skip)
    x = sample_tensor(torch.float64)
    before = pure(s, x, 10)
    ab = (*core.AB_WEIGHTS[:3], (2.0, -1.5, 0.75, -0.25))  # rows still sum to 1
    monkeypatch.setattr(core, "AB_WEIGHTS", ab)
    name = "PLMS" if skip else "F_PNDM"
    three_eighths = core.Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((1.0,), (0.0, 1.0), (0.0, 0.0, 1.0)),
        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    )
    heun_biased = core.Tableau(c=(0.0, 1.0), a=((1.0,),), b=(1 / 4, 3 / 4))
    warmup = heun_biased if skip else three_eighths
    monkeypatch.setattr(core, name, core.Multistep(4, warmup, getattr(core, name).warmup_steps))
    after_pure, after_scheduler = pure(s, x, 10), run(s, x, 10)
    assert rel(after_scheduler, after_pure) < 1e-12
    assert rel(after_pure, before) > 1e-4
    monkeypatch.undo()
    assert rel(run(s, x, 10), before) < 1e-12


# ------------------------------------------------------------------------------------------------
# Prediction types
# ------------------------------------------------------------------------------------------------


def _alpha_bar(s: PNDMScheduler, t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    return s.schedule.alpha_bar(t).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_output_forms_of_one_denoiser_sample_alike(skip: bool, prediction_type: str) -> None:
    """Each output is converted to ε at its own (x, t), so every form gives the ε-form's samples."""
    ref = PNDMScheduler(skip_prk_steps=skip, set_alpha_to_one=True)
    s = PNDMScheduler(skip_prk_steps=skip, set_alpha_to_one=True, prediction_type=prediction_type)

    def other_form(x, t):
        a, eps = _alpha_bar(s, t, x), model(x, t)
        if prediction_type == "v_prediction":  # ε = √ᾱ v + √(1-ᾱ) x
            return (eps - (1 - a).sqrt() * x) / a.sqrt()
        return (x - (1 - a).sqrt() * eps) / a.sqrt()  # x̂₀

    for n in (4, 10, 50):
        assert rel(run(s, sample_tensor(), n, eps=other_form), run(ref, sample_tensor(), n)) < 1e-5


@pytest.mark.parametrize("skip", [False, True])
def test_v_prediction_equals_pure_sampler_behind_the_wrapper(skip: bool) -> None:
    s = PNDMScheduler(skip_prk_steps=skip, prediction_type="v_prediction")
    eps_fn = make_eps_fn(model, s.schedule, "v_prediction")
    assert rel(run(s, sample_tensor(), 10), pure(s, sample_tensor(), 10, eps=eps_fn)) < 1e-6


def test_v_prediction_compat_reproduces_diffusers_combination_bug() -> None:
    """diffusers #14816: the combined v converted at the base point; only with the compat flag."""
    kwargs = {"prediction_type": "v_prediction"}
    right, compat = (
        PNDMScheduler(**kwargs),
        PNDMScheduler(**kwargs, v_prediction_compat="diffusers"),
    )
    assert rel(run(right, sample_tensor(), 10), run(compat, sample_tensor(), 10)) > 1e-2
    assert compat.config["v_prediction_compat"] == "diffusers"
    assert "v_prediction_compat" not in right.config


def test_half_precision_stays_in_its_dtype() -> None:
    s = PNDMScheduler(skip_prk_steps=True)
    x16 = run(s, sample_tensor(torch.bfloat16), 10)
    assert x16.dtype == torch.bfloat16
    assert rel(x16, run(s, sample_tensor(), 10)) < 3e-2


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [False, True])
def test_set_timesteps_resets_all_state(skip: bool) -> None:
    """diffusers PR #2376: an interrupted run must not leak into the next one."""
    fresh = run(PNDMScheduler(skip_prk_steps=skip), sample_tensor(), 10)
    s = PNDMScheduler(skip_prk_steps=skip)
    s.set_timesteps(20)
    x = sample_tensor()
    for t in s.timesteps[:7]:  # stop inside the warm-up, with stages and history half full
        x = s.step(model(x, t), t, x).prev_sample
    assert torch.equal(run(s, sample_tensor(), 10), fresh)


def test_diffusers_running_values_are_readable() -> None:
    s = PNDMScheduler()
    assert (s.ets, s.counter, s.cur_model_output, s.cur_sample) == ([], 0, 0, None)
    s.set_timesteps(10)
    x = sample_tensor()
    outputs = []
    for t in s.timesteps[:3]:
        outputs.append(model(x, t))
        x = s.step(outputs[-1], t, x).prev_sample
    assert s.counter == 3 and len(s.ets) == 1 and torch.equal(s.ets[0], outputs[0])
    expected = outputs[0] / 6 + outputs[1] / 3 + outputs[2] / 3
    # |outputs| < 0.7 (seeded sample, deterministic model): two float32 sums of three products in
    # other orders differ by a few ulp of 1 (2^-24) on any CPU, also where they cancel to ~0;
    # a wrong Runge-Kutta weight moves the sum by > 0.01.
    torch.testing.assert_close(s.cur_model_output, expected, rtol=0, atol=2**-20)
    assert torch.equal(s.cur_sample, sample_tensor())


def test_preset_ets_survive_save_and_load(tmp_path) -> None:
    """Upstream's round-trip check: equal outputs after presetting ``ets`` on both schedulers."""
    x, residual = sample_tensor(), 0.1 * sample_tensor()
    s = PNDMScheduler(skip_prk_steps=True)
    s.save_pretrained(tmp_path)
    loaded = PNDMScheduler.from_pretrained(tmp_path)
    outs = []
    for sch in (s, loaded):
        sch.set_timesteps(50)
        sch.ets = [residual + 0.2, residual + 0.15, residual + 0.1, residual + 0.05]
        outs.append(sch.step(residual, sch.timesteps[0], x).prev_sample)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert len(s.ets) == 4  # trimmed to AB4's four estimates, newest appended


def test_step_before_set_timesteps_is_a_clear_error() -> None:
    s = PNDMScheduler()
    for step in (s.step, s.step_prk, s.step_plms):
        with pytest.raises(ValueError, match="set_timesteps"):
            step(sample_tensor(), 0, sample_tensor())


def test_step_past_the_plan_and_wrong_step_method_are_errors() -> None:
    s = PNDMScheduler()
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="step_prk"):
        s.step_plms(sample_tensor(), 0, sample_tensor())
    run(s, sample_tensor(), 4)
    with pytest.raises(ValueError, match="set_timesteps again"):
        s.step(sample_tensor(), 0, sample_tensor())


def test_step_output_forms() -> None:
    s = PNDMScheduler()
    s.set_timesteps(10)
    out = s.step(sample_tensor(), 900, sample_tensor())
    assert isinstance(out, SchedulerOutput)
    assert out.prev_sample is out["prev_sample"] is out[0] is out.to_tuple()[0]
    assert list(out.keys()) == ["prev_sample"] and len(out) == 1
    (prev,) = s.step(sample_tensor(), 850, sample_tensor(), return_dict=False)
    assert isinstance(prev, torch.Tensor)


def test_step_reads_no_tensor_values_on_the_host(monkeypatch) -> None:
    """No .item(), bool(), float(), .tolist(), .cpu(): the reads that sync a GPU (#9475)."""
    s = PNDMScheduler(prediction_type="v_prediction")
    s.set_timesteps(10)
    x = sample_tensor()

    def host_read(*args, **kwargs):
        raise AssertionError("step read a tensor value on the host")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    for t in s.timesteps:
        x = s.step(torch.tanh(x), t, x).prev_sample
    monkeypatch.undo()
    assert bool(torch.isfinite(x).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_step_does_not_synchronise_on_cuda() -> None:
    s = PNDMScheduler(prediction_type="v_prediction")
    s.set_timesteps(20, device="cuda")
    x = sample_tensor().cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in s.timesteps:
            x = s.step(torch.tanh(x), t, x).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert s.timesteps.device.type == "cuda"


# ------------------------------------------------------------------------------------------------
# Construction, config and files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta_schedule": "cosine"}, "beta_schedule"),
        ({"timestep_spacing": "uniform"}, "timestep_spacing"),
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"v_prediction_compat": "yes"}, "v_prediction_compat"),
        ({"steps_offset": -1}, "steps_offset"),
    ],
)
def test_invalid_choices_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PNDMScheduler(**kwargs)


@pytest.mark.parametrize("n", [0, -3, 1001, 2.5, True, None])
def test_invalid_num_inference_steps(n) -> None:
    with pytest.raises(ValueError, match="num_inference_steps"):
        PNDMScheduler().set_timesteps(n)


def test_schedule_mismatches_fail_at_set_timesteps() -> None:
    with pytest.raises(ValueError, match="trained_betas"):
        PNDMScheduler(trained_betas=[0.1, 0.3]).set_timesteps(2)
    with pytest.raises(ValueError, match="steps_offset"):
        PNDMScheduler(steps_offset=1).set_timesteps(1000)
    s = PNDMScheduler(prediction_type="sample", set_alpha_to_one=True)
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        s.set_timesteps(2)  # F-PNDM's last stage calls the model at the final time, ᾱ = 1


def test_config_is_a_frozen_mapping_with_attribute_access() -> None:
    s = PNDMScheduler(beta_schedule="scaled_linear")
    assert isinstance(s.config, FrozenConfig)
    assert s.config.beta_schedule == s.config["beta_schedule"] == "scaled_linear"
    assert list(s.config) == [
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "skip_prk_steps", "set_alpha_to_one", "prediction_type", "timestep_spacing", "steps_offset",
    ]  # fmt: skip
    with pytest.raises(AttributeError):
        s.config.beta_schedule = "linear"
    with pytest.raises(TypeError):
        s.config["beta_schedule"] = "linear"  # type: ignore[index]
    assert PNDMScheduler.from_config(dict(s.config)).config == s.config


def test_scheduler_copies_and_pickles() -> None:
    s = PNDMScheduler(skip_prk_steps=True)
    s.set_timesteps(10)
    for other in (copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert other.config == s.config and other.config.skip_prk_steps
        assert torch.equal(run(other, sample_tensor(), 10), run(s, sample_tensor(), 10))


def test_attributes() -> None:
    s = PNDMScheduler()
    assert (s.order, s.pndm_order, s.init_noise_sigma, len(s)) == (1, 4, 1.0, 1000)
    assert "DDPMScheduler" in s._compatibles and len(s._compatibles) == 15
    assert s.alphas_cumprod.dtype == torch.float32
    assert float(s.final_alpha_cumprod) == float(s.alphas_cumprod[0])
    assert float(PNDMScheduler(set_alpha_to_one=True).final_alpha_cumprod) == 1.0
    assert s.timesteps is None and s.num_inference_steps is None
    x = sample_tensor()
    assert s.scale_model_input(x, 5) is x


def test_save_pretrained_writes_diffusers_json(tmp_path) -> None:
    PNDMScheduler().save_pretrained(tmp_path)
    text = (tmp_path / "scheduler_config.json").read_text()
    assert text == DEFAULT_JSON and len(text.encode()) == 342


@pytest.mark.parametrize(
    "kwargs",
    [
        {"trained_betas": np.linspace(1e-4, 0.02, 1000)},
        {"skip_prk_steps": True, "steps_offset": 1, "beta_schedule": "scaled_linear"},
        {"prediction_type": "v_prediction", "v_prediction_compat": "diffusers"},
    ],
)
def test_save_and_load_round_trip(tmp_path, kwargs: dict) -> None:
    s = PNDMScheduler(**kwargs)
    s.save_pretrained(tmp_path / "scheduler")
    loaded = PNDMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert loaded.config == s.config
    assert torch.equal(loaded.betas, s.betas)
    assert torch.equal(run(loaded, sample_tensor(), 10), run(s, sample_tensor(), 10))


def test_ddpm_config_loads_with_one_warning(tmp_path) -> None:
    """google/ddpm-cifar10-32 is flat: scheduler_config.json of a DDPMScheduler at the root."""
    (tmp_path / "scheduler_config.json").write_text(json.dumps(DDPM_CONFIG))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = PNDMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert len(caught) == 1
    assert "clip_sample" in str(caught[0].message) and "variance_type" in str(caught[0].message)
    assert s.config == PNDMScheduler().config


def test_from_config_rules() -> None:
    config = {"beta_end": 0.03, "_class_name": "X", "_use_default_values": ["beta_end"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # private keys and defaulted keys pass silently
        assert PNDMScheduler.from_config(config).config.beta_end == 0.02
        assert PNDMScheduler.from_config({"beta_end": 0.03}).config.beta_end == 0.03
        assert PNDMScheduler.from_config(None, skip_prk_steps=True).config.skip_prk_steps
        assert PNDMScheduler.from_config(PNDMScheduler(steps_offset=1)).config.steps_offset == 1
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        PNDMScheduler.from_pretrained(".", subfolder="nowhere")


# ------------------------------------------------------------------------------------------------
# add_noise
# ------------------------------------------------------------------------------------------------


def test_add_noise() -> None:
    s = PNDMScheduler()
    x0, noise, t = sample_tensor(), 0.5 * sample_tensor(), torch.tensor([10, 900])
    a = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    expected = a.sqrt() * x0 + (1 - a).sqrt() * noise
    assert torch.equal(s.add_noise(x0, noise, t), expected)
    half = s.add_noise(x0, noise, torch.tensor([10.5, 900.0]))  # float times: interpolated ᾱ
    assert rel(half, expected) < 1e-3
    assert s.alphas_cumprod.device.type == "cpu"
