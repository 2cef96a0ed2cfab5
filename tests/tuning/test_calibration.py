"""Calibrated model calls: the lookup, the wrapper, the tuner's search, the pipeline and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GRID, Counter, assert_one_line_error, tuned
from PIL import Image

from pndm import PNDMPipeline
from pndm.analytic import PointMass, gaussian_flow
from pndm.assets import shipped_model_path
from pndm.calibration import Calibration
from pndm.cli import main
from pndm.compat.folders import model_hash
from pndm.images import postprocess, to_uint8
from pndm.noise import initial_noise
from pndm.samplers import SAMPLERS
from pndm.schedule import NoiseSchedule, VPSchedule
from pndm.tuning.api import tune
from pndm.tuning.grid_file import load_grid, save_grid
from pndm.tuning.objective import rms
from pndm.tuning.search import called_times
from pndm.tuning.spaces import CalibrationSpace

DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
VP = VPSchedule()
C = Calibration((999.0, 500.0, 100.0), (1.0, -2.0, 3.0), (1.1, 0.9, 1.0))


def _noise(n: int, seed: int, shape=(3, 4, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- the lookup


def test_exact_at_the_calibrated_times_linear_between_constant_beyond() -> None:
    t = torch.tensor([999.0, 500.0, 100.0, 750.0, 300.0, 1200.0, 0.0], dtype=torch.float64)
    shift, scale = C.at(t)
    w = (999.0 - 750.0) / 499.0  # 750 lies this far from 999 towards 500
    expected_shift = [1.0, -2.0, 3.0, 1.0 + w * -3.0, 0.5, 1.0, 3.0]
    expected_scale = [1.1, 0.9, 1.0, 1.1 - w * 0.2, 0.95, 1.1, 1.0]
    np.testing.assert_allclose(shift.numpy(), expected_shift, rtol=0, atol=1e-12)
    np.testing.assert_allclose(scale.numpy(), expected_scale, rtol=0, atol=1e-12)


def test_apply_shifts_the_model_time_and_scales_eps() -> None:
    seen = []

    def eps_fn(x, t):
        seen.append(t.clone())
        return torch.ones_like(x)

    x = torch.zeros(2, 3, dtype=torch.float32)
    out = C.apply(eps_fn)(x, torch.full((2,), 500.0, dtype=torch.float64))
    assert out.dtype == torch.float32 and torch.equal(out, torch.full_like(x, 0.9))
    assert seen[0].dtype == torch.float64 and seen[0].tolist() == [498.0, 498.0]


def test_exact_values_at_knots_and_a_shared_time_stays_shared() -> None:
    c = Calibration((900.0, 500.0, 100.0), (0.3, 0.1, 0.7), (1.1, 0.9, 1.3))
    shift, scale = c.at(torch.tensor([900.0, 500.0, 100.0], dtype=torch.float64))
    assert shift.tolist() == [0.3, 0.1, 0.7] and scale.tolist() == [1.1, 0.9, 1.3]  # no rounding
    seen = []

    def eps_fn(x, t):
        seen.append(t)
        return torch.ones_like(x)

    shared = torch.tensor(500.0, dtype=torch.float64).expand(4)  # as the samplers pass it
    c.apply(eps_fn)(torch.zeros(4, 2, dtype=torch.float64), shared)
    assert seen[0].stride() == (0,) and seen[0].tolist() == [500.1] * 4
    own = torch.tensor([900.0, 500.0, 100.0, 300.0], dtype=torch.float64)  # one time per sample
    out = c.apply(eps_fn)(torch.zeros(4, 2, dtype=torch.float64), own)
    assert seen[1].tolist() == pytest.approx([900.3, 500.1, 100.7, 300.4], abs=1e-12)
    assert out[:, 0].tolist() == pytest.approx([1.1, 0.9, 1.3, 1.1], abs=1e-12)


def test_a_single_time_calibration_is_constant() -> None:
    c = Calibration((400.0,), (2.0,), (0.5,))
    shift, scale = c.at(torch.tensor([999.0, 400.0, 3.0], dtype=torch.float64))
    assert shift.tolist() == [2.0] * 3 and scale.tolist() == [0.5] * 3


def test_identity_changes_no_bit_of_a_sample() -> None:
    eps_fn = PointMass(torch.full((3, 4, 4), 0.2, dtype=torch.float64)).eps_fn(DDPM)
    x, grid = _noise(2, 0), torch.tensor(GRID, dtype=torch.float64)
    plain = SAMPLERS["ipndm"](eps_fn, x, grid, DDPM)
    ident = Calibration.identity(GRID[:-1]).apply(eps_fn)
    assert torch.equal(SAMPLERS["ipndm"](ident, x, grid, DDPM), plain)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((1.0, 2.0), (0.0, 0.0), (1.0, 1.0)), "strictly decreasing"),
        (((2.0, 1.0), (0.0,), (1.0, 1.0)), "one time shift and one ε scale"),
        (((), (), ()), "one time shift and one ε scale"),
        (((2.0, 1.0), (0.0, 0.0), (1.0, 0.0)), "eps_scales must be positive"),
        (((2.0, 1.0), (0.0, float("nan")), (1.0, 1.0)), "finite numbers"),
        (((2.0, True), (0.0, 0.0), (1.0, 1.0)), "finite numbers"),
        (("21", (0.0, 0.0), (1.0, 1.0)), "must be a list of numbers"),
    ],
)
def test_bad_calibrations_are_one_line_errors(args, message) -> None:
    with pytest.raises(ValueError) as err:
        Calibration(*args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_json_round_trip_and_a_calibrated_file_is_version_2(tmp_path: Path) -> None:
    assert Calibration.from_json(json.loads(json.dumps(C.to_json()))) == C
    with pytest.raises(ValueError, match='exactly "times"'):
        Calibration.from_json({**C.to_json(), "extra": 1})
    result = tuned()
    calibrated = type(result)(**{**result.__dict__, "calibration": C, "grid_error": 0.2})
    save_grid(tmp_path / "c.json", calibrated, "sha256:abc")
    save_grid(tmp_path / "p.json", result, "sha256:abc")
    assert json.loads((tmp_path / "c.json").read_text())["version"] == 2
    assert json.loads((tmp_path / "p.json").read_text())["version"] == 1
    assert load_grid(tmp_path / "c.json").calibration == C
    assert load_grid(tmp_path / "p.json").calibration is None


# ----------------------------------------------------------------------------- the search


def test_called_times_are_the_grid_times_and_midpoints() -> None:
    grid = torch.tensor([999.0, 600.0, 200.0, -1.0], dtype=torch.float64)
    assert called_times("ipndm", grid, DDPM, {}) == (999.0, 600.0, 200.0)
    s_pndm = called_times("s-pndm", grid, DDPM, {})
    assert s_pndm == (999.0, 600.0, 200.0)  # improved Euler's second call is at t_1
    f_pndm = called_times("f-pndm", grid, DDPM, {})
    assert f_pndm == (999.0, 799.5, 600.0, 400.0, 200.0, 99.5, -1.0)  # RK4's stages too


def test_calibration_space_keeps_model_times_in_range() -> None:
    space = CalibrationSpace(DDPM, (999.0, 500.0, 3.0))
    c = space.calibration(np.array([1.0, 1.0, -1.0, 0.0, 100.0, -100.0]))
    assert c.time_shifts == pytest.approx((0.0, 19.98, -3.0))  # 999 + 19.98 and 3 - 19.98 clipped
    assert c.eps_scales == pytest.approx((1.0, np.exp(5.0), np.exp(-5.0)))


def test_a_miscalibrated_point_mass_model_is_corrected_exactly() -> None:
    """A known optimum: the network answers 1.25 ε(x, t - 30) for the point mass's exact ε, so
    κ = 0.8 and δ = +30 at every call after the first give the exact answer (error 0; the call at
    t_max = 999 cannot be shifted up, and need not be). On a point mass every state
    is s x_T + r μ, so the end point has 2 coefficients to get right: 2-call DDIM's one free
    time cannot, its 2 calls' calibration (4 parameters) can. The tuner must get within 1e-4
    of the uncalibrated error."""
    exact = PointMass(torch.full((3, 4, 4), 0.3, dtype=torch.float64)).eps_fn(DDPM)

    def wrong(x, t):
        return 1.25 * exact(x, t - 30.0)

    x = _noise(8, 0)
    reference = torch.full_like(x, 0.3)
    result = tune(wrong, DDPM, x, method="ddim", nfe=2, reference=reference, calibrate=True,
                  budget=400)  # fmt: skip
    assert result.grid_error > 1e-3
    assert result.calibration is not None and result.error < 1e-4 * result.grid_error


def test_calibration_helps_on_fresh_noise() -> None:
    """A Gaussian whose network overshoots ε by 10 %: the calibrated 4-call ipndm beats the
    uncalibrated tuned grid by at least 2x on other noise (the flow and the solver are affine
    in x_T, so the gain generalises)."""
    mean, std = 0.4, 0.3

    def eps(x, t):
        a = VP.alpha_bar(t).reshape(-1, *([1] * (x.ndim - 1)))
        return 1.1 * (x - a.sqrt() * mean) * (1 - a).sqrt() / (a * std**2 + 1 - a)

    train, test = _noise(32, 0), _noise(32, 1)
    t0, t1 = torch.tensor(VP.t_max), torch.tensor(VP.t_min)
    ref = {k: gaussian_flow(x, t0, t1, VP, mean, std) for k, x in (("a", train), ("b", test))}
    result = tune(eps, VP, train, method="ipndm", nfe=4, reference=ref["a"], calibrate=True)
    assert result.calibration is not None and result.error < result.grid_error
    plain = rms(SAMPLERS["ipndm"](eps, test, result.timesteps, VP), ref["b"])
    fixed = rms(SAMPLERS["ipndm"](result.calibration.apply(eps), test, result.timesteps, VP),
                ref["b"])  # fmt: skip
    assert fixed < plain / 2


def test_progress_total_bounds_the_calls_of_a_calibrated_tuning() -> None:
    """`progress_total` (the CLI's bar) is an upper estimate of the calls, calibration included."""
    from pndm.analytic import GaussianMixture
    from pndm.tuning import progress_total

    means = 0.5 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5),
                              dtype=torch.float64)  # fmt: skip
    counter = Counter(GaussianMixture([0.6, 0.4], means, [0.3, 0.2]).eps_fn(DDPM))
    result = tune(counter, DDPM, _noise(2, 0), method="ipndm", nfe=4, search_options=True,
                  calibrate=True)  # fmt: skip
    assert counter.calls == result.model_calls
    total = progress_total("ipndm", 4, True, None, calibrate=True)
    assert result.model_calls <= total <= 2 * result.model_calls


def test_calibrate_must_be_a_bool_and_fails_before_any_call() -> None:
    counter = Counter(PointMass(torch.zeros(3, 4, 4, dtype=torch.float64)).eps_fn(DDPM))
    with pytest.raises(ValueError, match="calibrate must be True or False"):
        tune(counter, DDPM, _noise(2, 0), method="ddim", nfe=3, calibrate="yes")
    assert counter.calls == 0


# ----------------------------------------------------------------------------- pipeline and CLI


@pytest.fixture(scope="module")
def pipe() -> PNDMPipeline:
    p = PNDMPipeline.from_pretrained(shipped_model_path())
    p.set_progress_bar_config(disable=True)
    return p


def test_pipeline_applies_the_calibration(pipe: PNDMPipeline) -> None:
    run = {"seeds": [0, 1], "batch_size": 2, "output_type": "pt", "method": "ipndm",
           "timesteps": GRID}  # fmt: skip
    plain = pipe(**run).images
    assert torch.equal(pipe(calibration=Calibration.identity(GRID[:-1]), **run).images, plain)
    fitting = Calibration(C.times, (-1.0, *C.time_shifts[1:]), C.eps_scales)  # C's 999 + 1: no
    calibrated = pipe(calibration=fitting, **run).images
    x = initial_noise((2, 1, 16, 16), "cpu", torch.float32, seeds=[0, 1])
    eps_fn = fitting.apply(pipe.eps_fn())
    grid = torch.tensor(GRID, dtype=torch.float64)
    by_hand = SAMPLERS["ipndm"](eps_fn, x, grid, pipe.scheduler.schedule)
    assert torch.equal(calibrated, postprocess(by_hand, "pt"))
    assert (calibrated - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="calibration must be a pndm.calibration.Calibration"):
        pipe(calibration=C.to_json(), **run)
    with pytest.raises(ValueError, match=r"shifted time t \+ δ in the schedule's range"):
        pipe(calibration=C, **run)  # 999 + 1 lies above the schedule


def test_sample_with_a_calibrated_grid_file(pipe: PNDMPipeline, tmp_path: Path, capsys) -> None:
    result = tuned()
    fitting = Calibration(C.times, (-1.0, *C.time_shifts[1:]), C.eps_scales)  # C's 999 + 1: no
    calibrated = type(result)(**{**result.__dict__, "calibration": fitting, "grid_error": 0.2})
    model = shipped_model_path()
    path = tmp_path / "c.json"
    save_grid(path, calibrated, model_hash(model), model_path=model)
    out = f"{tmp_path / 'folder'}/"
    base = ["sample", "--no-progress", "--out", out, "--seeds", "0-1"]
    assert main([*base, "--timesteps", str(path)]) == 0
    recorded = json.loads((tmp_path / "folder" / "pndm.json").read_text())["settings"]
    assert recorded["calibration"] == fitting.to_json()
    expected = pipe(seeds=[0, 1], batch_size=2, output_type="np", timesteps=GRID,
                    calibration=fitting, method="ipndm", **result.options).images  # fmt: skip
    first = np.asarray(Image.open(tmp_path / "folder" / "seed000000.png"))
    np.testing.assert_array_equal(first, to_uint8(expected)[0, ..., 0])
    plain = tmp_path / "p.json"
    save_grid(plain, result, model_hash(model), model_path=model)
    capsys.readouterr()
    assert_one_line_error(capsys, main([*base, "--timesteps", str(plain)]), "calibration")
    other = ["sample", "--no-progress", "--timesteps", str(path), "--method", "ddim"]
    assert main([*other, "--out", str(tmp_path / "d.png"), "--num-images", "1"]) == 0
    assert "its options and calibration are not applied" in capsys.readouterr().err


def test_calibration_times_outside_the_grid_are_refused(tmp_path: Path) -> None:
    calibration = {"times": [2000.0, 100.0], "time_shifts": [0.0, 0.0], "eps_scales": [1.0, 1.0]}
    data = {"format": "pndm-timesteps", "version": 2, "timesteps": [999.0, 500.0, -1.0],
            "method": "ddim", "nfe": 2, "options": {}, "model": {"sha256": "sha256:a"},
            "calibration": calibration}  # fmt: skip
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"must lie within the grid \[-1.0, 999.0\]"):
        load_grid(path)


def test_tune_calibrate_then_sample_end_to_end(tmp_path: Path, capsys) -> None:
    """`pndm tune --calibrate` on the shipped model with a tiny budget, then sampling with it."""
    path = tmp_path / "grid.json"
    argv = ["tune", "--method", "ddim", "--nfe", "3", "--out", str(path), "--samples", "2",
            "--iterations", "20", "--no-search-options", "--calibrate",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().err
    grid = load_grid(path)
    assert grid.calibration is not None, summary  # 20 evaluations of 6 parameters find a gain
    assert grid.tuning["calibrate"] is True and "calibrated, from" in summary
    assert grid.tuning["error"] < grid.tuning["grid_error"]
    assert json.loads(path.read_text())["version"] == 2
    assert grid.calibration.times == grid.timesteps[:-1]  # ddim calls every model time
    out = tmp_path / "s.png"
    argv = ["sample", "--timesteps", str(path), "--out", str(out), "--num-images", "1"]
    assert main([*argv, "--no-progress"]) == 0
    assert Image.open(out).size[0] >= 16  # one 16x16 image, in a contact sheet with a border


def test_calibrate_tunes_on_256_noises_unless_told(tmp_path: Path, monkeypatch, capsys) -> None:
    seen = []

    def fake_tune(pipe, **kwargs):
        seen.append((kwargs["samples"], kwargs["calibrate"]))
        return tuned()

    monkeypatch.setattr("pndm.tuning.tune_pipeline", fake_tune)
    base = ["tune", "--method", "ipndm", "--nfe", "4", "--no-progress", "--out"]
    assert main([*base, str(tmp_path / "a.json"), "--calibrate"]) == 0
    assert main([*base, str(tmp_path / "b.json")]) == 0
    assert main([*base, str(tmp_path / "c.json"), "--calibrate", "--samples", "8"]) == 0
    assert seen == [(256, True), (64, False), (8, True)]
    assert load_grid(tmp_path / "a.json").tuning["samples"] == 256
