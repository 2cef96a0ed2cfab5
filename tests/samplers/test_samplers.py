"""The samplers' contract: exactness on a point mass, NFE counts, purity, dtypes, errors, parity.

Golden values: the point mass's straight-line solution (pndm.analytic.PointMass.solution, itself a
closed form), the NFE formulas of reference/algorithms.md §3 counted by a wrapper around eps_fn,
and literal transcriptions, written here, of the original code (luping-liu/PNDM ``gen_order_4`` and
``gen_fon``, diffusers' ``PNDMScheduler.step_plms``) run on the raw ``alphas_cumprod`` table.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from conftest import Counter

from pndm import grids
from pndm.analytic import GaussianMixture, PointMass, reference_flow
from pndm.samplers import SAMPLERS, Method, get_sampler, nfe
from pndm.samplers.drift import log_alpha_bar_slope
from pndm.samplers.options import Kind
from pndm.schedule import NoiseSchedule, VPSchedule

VP = VPSchedule()
DDPM = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
MU = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
# φ-based methods whose ε' weights sum to 1: exact on a point mass on any grid (algorithms.md §6).
EXACT = [
    ("ddim", {}),
    ("s-pndm", {}),
    ("f-pndm", {}),
    ("plms", {}),
    ("ipndm", {}),
    ("dpmpp-2m", {}),
    *[("vab", {"order": k}) for k in (1, 2, 3, 4)],
    *[("pec", {"order": k}) for k in (1, 2, 3, 4)],
    ("pec-adaptive", {}),  # only the grid's two ends, its own steps between them
    *[("pec-data", {"order": k}) for k in (1, 2, 3)],  # x̂_0 = μ: exact whatever the weights
]
ADAPTIVE = ("pf", "pec-adaptive")  # NFE by the tolerance: tests/samplers/test_pec_adaptive.py
FIXED_STEP = [name for name in SAMPLERS if name not in ADAPTIVE]


def _x(batch: int = 4, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, generator=g, dtype=torch.float64).to(dtype)


def _random_grid(n: int, seed: int, lo: float, hi: float) -> torch.Tensor:
    """n + 1 random strictly decreasing times in (lo, hi)."""
    g = torch.Generator().manual_seed(seed)
    times = lo + (hi - lo) * torch.rand(n + 1, generator=g, dtype=torch.float64)
    return times.sort(descending=True).values


# --- exactness on a point mass --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), EXACT, ids=lambda v: str(v))
@pytest.mark.parametrize("seed", range(4))
def test_point_mass_is_exact_on_random_grids(name, options, seed):
    """ε* = (x - sqrt(ᾱ)μ)/sqrt(1-ᾱ) is constant along the flow, so every ε' (weights summing to 1)
    equals it and each φ step is exact: x_N = sqrt(ᾱ_N) μ + sqrt(1-ᾱ_N) ε*.

    Tolerance 1e-10 on O(1) values: a float64 rounding per operation, amplified at most by
    sqrt(ᾱ_N/ᾱ_0) <= ~150 over the whole grid.
    """
    n = [1, 2, 5, 11][seed]
    point_mass = PointMass(MU)
    x = _x(seed=seed)
    for schedule, times in (
        (VP, _random_grid(n, seed, 1e-3, 1.0)),
        (DDPM, _random_grid(n, seed, -1.0, 999.0)),  # fractional times: log-linear ᾱ
    ):
        out = SAMPLERS[name](point_mass.eps_fn(schedule), x, times, schedule, **options)
        expected = point_mass.solution(x, times[0], times[-1], schedule)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_point_mass_integer_grid_to_alpha_one():
    """Leading grid to t = -1 with ᾱ_final = 1: every exact method returns μ (to 1e-10)."""
    schedule = NoiseSchedule.from_config({"set_alpha_to_one": True})
    times = grids.leading(schedule, 10)
    point_mass = PointMass(MU)
    for name, options in EXACT:  # PointMass.eps raises if called at ᾱ = 1, i.e. at the target
        out = SAMPLERS[name](point_mass.eps_fn(schedule), _x(), times, schedule, **options)
        torch.testing.assert_close(out, MU.expand(4, 3), rtol=0, atol=1e-10, msg=name)


def test_ipndm_denoise_to_zero_returns_the_data_estimate():
    """On a point mass the data estimate x̂0 is μ itself; tolerance 1e-10 as above."""
    point_mass = PointMass(MU)
    out = SAMPLERS["ipndm"](point_mass.eps_fn(VP), _x(), grids.edm(VP, 8), VP, denoise_to_zero=True)
    torch.testing.assert_close(out, MU.expand(4, 3), rtol=0, atol=1e-10)


# --- NFE counts -----------------------------------------------------------------------------------

# algorithms.md §3; f-pndm/fon: the pseudo/classical RK4 warm-up costs 4 calls for each of its
# min(N, 3) steps.
EXPECTED_NFE = {
    "ddim": lambda n: n,
    "s-pndm": lambda n: n + 1,
    "f-pndm": lambda n: n + 9 if n >= 3 else 4 * n,
    "fon": lambda n: n + 9 if n >= 3 else 4 * n,
    "fon-orig": lambda n: n + 9 if n >= 3 else 4 * n,
    "plms": lambda n: n + 1,
    "ipndm": lambda n: n,
    "vab": lambda n: n,
    "pec": lambda n: n,
    "dpmpp-2m": lambda n: n,
    "pec-data": lambda n: n,
}


@pytest.mark.parametrize("name", FIXED_STEP)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_nfe_counts(name, n):
    gmm = GaussianMixture([0.6, 0.4], [[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], [0.3, 0.5])
    counter = Counter(gmm.eps_fn(VP))
    options = {"index_size": 1e-3} if name == "fon-orig" else {}
    times = grids.time_uniform(VP, n)
    SAMPLERS[name](counter, _x(), times, VP, **options)
    assert len(counter.times) == EXPECTED_NFE[name](n) == nfe(name, n)
    warmup_reaches_target = (name in ("f-pndm", "fon", "fon-orig") and n <= 3) or (
        name in ("s-pndm", "plms") and n == 1
    )
    if not warmup_reaches_target:  # the model is never called at the target t_N
        assert min(counter.times) > float(times[-1])


@pytest.mark.parametrize(("afs", "denoise", "expected"), [(True, False, 7), (False, True, 9)])
def test_ipndm_option_nfe(afs, denoise, expected):
    counter = Counter(PointMass(MU).eps_fn(VP))
    times = grids.edm(VP, 8)
    SAMPLERS["ipndm"](counter, _x(), times, VP, afs=afs, denoise_to_zero=denoise)
    assert len(counter.times) == expected == nfe("ipndm", 8, afs=afs, denoise_to_zero=denoise)
    if afs:  # the analytic first step replaces the call at t_0
        assert counter.times[0] == float(times[1])


def test_pf_reports_its_nfe():
    counter = Counter(GaussianMixture([1.0], [[0.5, 0.0, -0.5]], [0.4]).eps_fn(VP))
    stats: dict = {}
    SAMPLERS["pf"](counter, _x(), grids.edm(VP, 4), VP, stats=stats)
    assert stats["nfe"] == len(counter.times) == 2 + 6 * (stats["steps"] + stats["rejected"])
    assert nfe("pf", 10) is None


# --- the registry ---------------------------------------------------------------------------------

# Each method, the module and name it is defined under (what a direct call uses).
DEFINED_IN = {
    "ddim": ("ddim", "ddim"),
    "s-pndm": ("pndm", "s_pndm"),
    "f-pndm": ("pndm", "f_pndm"),
    "fon": ("pndm", "fon"),
    "fon-orig": ("pndm", "fon_orig"),
    "plms": ("plms", "plms"),
    "ipndm": ("ipndm", "ipndm"),
    "pf": ("pf", "pf"),
    "vab": ("vab", "vab"),
    "pec": ("pec", "pec"),
    "dpmpp-2m": ("dpmpp", "dpmpp_2m"),
    "pec-adaptive": ("pec_adaptive", "pec_adaptive"),
    "pec-data": ("pec_data", "pec_data"),
}


def test_registry_is_the_module_methods_with_their_data():
    assert list(SAMPLERS) == list(DEFINED_IN)  # names and order: the CLI lists them so
    for name, (module, attr) in DEFINED_IN.items():
        method = SAMPLERS[name]
        assert method is getattr(importlib.import_module(f"pndm.samplers.{module}"), attr)
        assert isinstance(method, Method) and method.name == name
        assert "NFE" in method.__doc__  # the contract: each docstring states its NFE
    clip = ("clip_sample", "clip_sample_range")
    assert tuple(SAMPLERS["ipndm"].options) == (
        "afs",
        "denoise_to_zero",
        "lower_order_final",
        *clip,
    )
    assert tuple(SAMPLERS["ddim"].options) == clip
    assert tuple(SAMPLERS["fon"].options) == ()


def _keyword_only(fn) -> dict[str, object]:
    """fn's keyword-only parameters and their defaults."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_declared_options_are_the_functions_keyword_parameters(name):
    """Options are declared once, on the Method, each with its kind; every default passes it."""
    method = SAMPLERS[name]
    assert set(method.options) == set(_keyword_only(method.fn))
    assert all(isinstance(kind, Kind) for kind in method.options.values())
    for option, default in _keyword_only(method.fn).items():
        assert method.options[option].check(name, option, default) == default


# A value of the wrong kind, for each kind's name, and the words its error must contain.
BAD_VALUES = {
    "flag": ("yes", "must be True or False, got 'yes'"),
    "positive finite number": (-1.0, "must be a positive finite number, got -1.0"),
    "tolerance: a positive finite number": (0.0, "must be a positive finite number, got 0.0"),
    "dict to fill in with counts, or None": ([], "must be a dict to fill in or None, got list"),
}


def _bad_value(kind: Kind) -> tuple[object, str]:
    if kind.name.startswith("order in"):
        return 0, "for method .* must be one of .*, got 0"
    return BAD_VALUES[kind.name]


@pytest.mark.parametrize(
    ("name", "option"), [(name, o) for name, m in SAMPLERS.items() for o in m.options]
)
def test_a_bad_option_value_fails_before_any_model_or_schedule_call(name, option):
    class Watched:  # a schedule that records its calls
        calls = 0

        def alpha_bar(self, t):
            Watched.calls += 1
            return VP.alpha_bar(t)

    counter = Counter(PointMass(MU).eps_fn(VP))
    value, message = _bad_value(SAMPLERS[name].options[option])
    with pytest.raises(ValueError, match=f"^{option} {message}$"):
        SAMPLERS[name](counter, _x(), grids.edm(VP, 4), Watched(), **{option: value})
    assert counter.calls == 0 and Watched.calls == 0
    with pytest.raises(ValueError, match=f"^{option} {message}$"):
        nfe(name, 4, **{option: value})


class TinyEps(torch.nn.Module):
    """A point mass's exact ε plus a small learned term whose parameters require grad."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3, dtype=torch.float64)
        self.exact = PointMass(MU).eps_fn(VP)
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.exact(x, t) + 0.01 * torch.tanh(self.linear(x))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_without_autograd(name):
    """Called through SAMPLERS or straight from its module, with an nn.Module whose parameters
    require grad: no graph is built (fon and pf still take dᾱ/dt by autograd inside)."""
    module, attr = DEFINED_IN[name]
    direct = getattr(importlib.import_module(f"pndm.samplers.{module}"), attr)
    options = {"index_size": 1e-3} if name == "fon-orig" else {}
    for fn in (SAMPLERS[name], direct):
        eps = TinyEps()
        out = fn(eps, _x(), grids.edm(VP, 4), VP, **options)
        assert not out.requires_grad and out.grad_fn is None
        assert eps.grad_enabled and not any(eps.grad_enabled)


# --- purity, dtype, device ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_inputs_are_not_mutated_and_dtype_is_kept(name):
    gmm = GaussianMixture([0.5, 0.5], [[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], [0.3, 0.5])
    for dtype, schedule, times in (
        (torch.float64, VP, grids.edm(VP, 6)),
        (torch.float32, VP, grids.edm(VP, 6)),
        (torch.float32, DDPM, grids.leading(DDPM, 10)),  # integer times, ends 0 -> -1
    ):
        options = {"index_size": 1e-3} if name == "fon-orig" and schedule is VP else {}
        x = _x(dtype=dtype)
        x_copy, times_copy = x.clone(), times.clone()
        out = SAMPLERS[name](gmm.eps_fn(schedule), x, times, schedule, **options)
        assert torch.equal(x, x_copy) and torch.equal(times, times_copy)
        assert out.dtype == dtype and out.shape == x.shape
        assert bool(torch.isfinite(out).all())


def test_float32_tracks_float64():
    """x in float32 stays within float32 rounding (1e-4 on O(1) values over 20 steps) of float64."""
    gmm = GaussianMixture([0.5, 0.5], [[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], [0.3, 0.5])
    times = grids.edm(VP, 20)
    for name in ("f-pndm", "vab", "pec"):
        out64 = SAMPLERS[name](gmm.eps_fn(VP), _x(), times, VP)
        out32 = SAMPLERS[name](gmm.eps_fn(VP), _x(dtype=torch.float32), times, VP)
        torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-4)


def test_samplers_run_under_inference_mode():
    """fon and pf take dᾱ/dt by autograd; that must work inside torch.inference_mode too."""
    eps_fn = PointMass(MU).eps_fn(VP)
    with torch.inference_mode():
        for name in ("fon", "pf"):
            assert torch.isfinite(SAMPLERS[name](eps_fn, _x(), grids.edm(VP, 5), VP)).all()


def test_no_host_sync_inside_the_loop(monkeypatch):
    """Host syncs (item, bool, float, int, tolist, numpy) happen in the set-up only: their count
    does not grow with N. (A sync-free eps_fn; on a GPU each of these would stall the stream.)"""
    counts = {"n": 0}
    for attr in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
        original = getattr(torch.Tensor, attr)

        def counted(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, attr, counted)
    for name in FIXED_STEP:
        options = {"index_size": 1e-3} if name == "fon-orig" else {}
        syncs = []
        for n in (6, 24):
            counts["n"] = 0
            SAMPLERS[name](lambda x, t: 0.5 * x, _x(), grids.edm(VP, n), VP, **options)
            syncs.append(counts["n"])
        assert syncs[0] == syncs[1], (name, syncs)


def test_batch_independence_and_list_timesteps():
    """A sample's result does not depend on the rest of the batch; a list of Python floats is read
    as float64 (not via float32). Exact equality: the same operations on the same numbers."""
    gmm = GaussianMixture([0.5, 0.5], [[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], [0.3, 0.5])
    times = [0.9, 0.6, 0.31, 0.1, 0.02, 1e-3]
    for name in ("f-pndm", "vab", "pec", "dpmpp-2m"):
        batch = SAMPLERS[name](gmm.eps_fn(VP), _x(), times, VP)
        single = SAMPLERS[name](
            gmm.eps_fn(VP), _x()[1:2], torch.tensor(times, dtype=torch.float64), VP
        )
        torch.testing.assert_close(batch[1:2], single, rtol=0, atol=1e-15)


def test_drift_slope_is_the_schedule_derivative():
    """fon and pf take d log ᾱ/dt by autograd of the schedule. Closed forms: VP -β0 - (β1-β0)t;
    discrete log ᾱ is linear on [k, k+1], slope log(ᾱ[k+1]/ᾱ[k]) (right-hand at integers).
    Tolerances: 1e-12 relative, float64 rounding of a few operations."""
    t = torch.tensor([1e-3, 0.25, 1.0], dtype=torch.float64)
    torch.testing.assert_close(log_alpha_bar_slope(VP, t), -0.1 - 19.9 * t, rtol=1e-12, atol=0)
    log_ac = DDPM.alphas_cumprod.log()
    k = torch.tensor([0, 10, 500, 998])
    for offset in (0.0, 0.5):
        slope = log_alpha_bar_slope(DDPM, k.double() + offset)
        torch.testing.assert_close(slope, log_ac[k + 1] - log_ac[k], rtol=1e-12, atol=0)


# --- original-code parity -------------------------------------------------------------------------


def _original_transfer(x, t, t_next, et, alphas_cump):
    """luping-liu/PNDM runner/method.py ``transfer``: model time t pairs with alphas_cump[t + 1]."""
    at, at_next = alphas_cump[int(t) + 1], alphas_cump[int(t_next) + 1]
    x_delta = (at_next - at) * (
        (1 / (at.sqrt() * (at.sqrt() + at_next.sqrt()))) * x
        - 1 / (at.sqrt() * (((1 - at_next) * at).sqrt() + ((1 - at) * at_next).sqrt())) * et
    )
    return x + x_delta


def _original_gen_order_4(x, t, t_next, model, alphas_cump, ets):
    t_list = [t, (t + t_next) / 2, t_next]
    if len(ets) > 2:
        ets.append(model(x, t))
        noise = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
    else:
        e_1 = model(x, t_list[0])
        ets.append(e_1)
        x_2 = _original_transfer(x, t_list[0], t_list[1], e_1, alphas_cump)
        e_2 = model(x_2, t_list[1])
        x_3 = _original_transfer(x, t_list[0], t_list[1], e_2, alphas_cump)
        e_3 = model(x_3, t_list[1])
        x_4 = _original_transfer(x, t_list[0], t_list[2], e_3, alphas_cump)
        e_4 = model(x_4, t_list[2])
        noise = (1 / 6) * (e_1 + 2 * e_2 + 2 * e_3 + e_4)
    return _original_transfer(x, t, t_next, noise, alphas_cump)


def _original_gen_fon(x, t, t_next, model, alphas_cump, ets):
    t_list = [t, (t + t_next) / 2.0, t_next]
    if len(ets) > 2:
        ets.append(_original_transfer(x, t, t - 1, model(x, t), alphas_cump) - x)
        delta = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
    else:
        delta_1 = _original_transfer(x, t, t - 1, model(x, t_list[0]), alphas_cump) - x
        ets.append(delta_1)
        x_2 = x + delta_1 * (t - t_next) / 2.0
        delta_2 = _original_transfer(x, t, t - 1, model(x_2, t_list[1]), alphas_cump) - x
        x_3 = x + delta_2 * (t - t_next) / 2.0
        delta_3 = _original_transfer(x, t, t - 1, model(x_3, t_list[1]), alphas_cump) - x
        x_4 = x + delta_3 * (t - t_next)
        delta_4 = _original_transfer(x, t, t - 1, model(x_4, t_list[2]), alphas_cump) - x
        delta = (1 / 6.0) * (delta_1 + 2 * delta_2 + 2 * delta_3 + delta_4)
    return x + delta * (t - t_next)


@pytest.mark.parametrize(
    ("name", "original"), [("f-pndm", _original_gen_order_4), ("fon-orig", _original_gen_fon)]
)
def test_matches_the_original_pndm_code(name, original):
    """S = 50 steps of 20 indices (integer mid times, so the original's floor indexing agrees with
    our interpolation), alpha_index_offset = 1, final target -1 -> alphas_cump[0].

    Tolerance 1e-12: the same float64 operations in a different order.
    """
    schedule = NoiseSchedule.from_config({"alpha_index_offset": 1})
    alphas_cump = schedule.alphas_cumprod
    times = grids.uniform(schedule, 50)  # 980, 960, ..., 0, -1
    gmm = GaussianMixture(
        [0.5, 0.3, 0.2], [[-1.0, 0.5, 0.0], [1.0, 1.0, 0.2], [0.3, -1.2, 0.1]], [0.3, 0.2, 0.4]
    )
    eps_fn = gmm.eps_fn(schedule)

    def model(x, t):
        return eps_fn(x, torch.full((x.shape[0],), float(t), dtype=torch.float64))

    x0 = _x()
    x, ets = x0.clone(), []
    for t, t_next in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        x = original(x, t, t_next, model, alphas_cump, ets)
    torch.testing.assert_close(SAMPLERS[name](eps_fn, x0, times, schedule), x, rtol=0, atol=1e-12)


def test_plms_matches_diffusers_step_plms():
    """diffusers PNDMScheduler(skip_prk_steps=True).step_plms, transcribed with its counter logic:
    timesteps [980, 960, 960, 940, ..., 0], the second call at 960 finishing the improved Euler
    step, prev_timestep = timestep - 20, and final_alpha_cumprod below 0. Tolerance 1e-12 as above.
    """
    ac, final = DDPM.alphas_cumprod, DDPM.final_alpha_cumprod
    stride, n = 20, 50
    gmm = GaussianMixture([0.5, 0.5], [[-1.0, 0.5, 0.0], [1.0, 1.0, 0.2]], [0.3, 0.4])
    eps_fn = gmm.eps_fn(DDPM)
    ts = list(range(0, 1000, stride))
    plms_timesteps = (ts[:-1] + ts[-2:-1] + ts[-1:])[::-1]
    x = x0 = _x()
    ets, cur_sample = [], None
    for counter, timestep in enumerate(plms_timesteps):
        model_output = eps_fn(x, torch.full((4,), float(timestep), dtype=torch.float64))
        prev_timestep = timestep - stride
        if counter != 1:
            ets = [*ets[-3:], model_output]
        else:
            prev_timestep, timestep = timestep, timestep + stride
        if len(ets) == 1 and counter == 0:
            cur_sample = x
        elif len(ets) == 1 and counter == 1:
            model_output, x, cur_sample = (model_output + ets[-1]) / 2, cur_sample, None
        elif len(ets) == 2:
            model_output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            model_output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            model_output = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        a_t = ac[timestep]
        a_prev = (
            ac[prev_timestep] if prev_timestep >= 0 else torch.tensor(final, dtype=torch.float64)
        )
        denom = a_t * (1 - a_prev).sqrt() + (a_t * (1 - a_t) * a_prev).sqrt()
        x = (a_prev / a_t).sqrt() * x - (a_prev - a_t) * model_output / denom
    out = SAMPLERS["plms"](eps_fn, x0, grids.leading(DDPM, n), DDPM)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_pf_agrees_with_the_reference_solution():
    """Adaptive DOPRI5 at rtol = atol = 1e-5 vs scipy DOP853 at 1e-13 (2-D GMM, t: 1 -> 1e-3).

    A local tolerance of 1e-5 gives a global error of the same order (the flow contracts in x̄ at
    low noise); we allow 10x, i.e. 1e-4 on O(1) samples. Tightening to 1e-8 must cut it ~1000x.
    """
    gmm = GaussianMixture([0.5, 0.3, 0.2], [[-1.0, 0.5], [1.0, 1.0], [0.3, -1.2]], [0.3, 0.2, 0.4])
    eps_fn = gmm.eps_fn(VP)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times = torch.tensor([1.0, 1e-3], dtype=torch.float64)
    ref = reference_flow(eps_fn, x, 1.0, 1e-3, VP)
    loose = (SAMPLERS["pf"](eps_fn, x, times, VP) - ref).abs().max()
    tight = (SAMPLERS["pf"](eps_fn, x, times, VP, rtol=1e-8, atol=1e-8) - ref).abs().max()
    assert loose < 1e-4
    assert tight < 1e-7


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize(
    ("times", "x", "options", "match"),
    [
        (torch.tensor([[0.9, 0.1]]), None, {}, "1-D"),
        (torch.tensor([0.5]), None, {}, "at least 2"),
        (torch.tensor([0.9, 0.5, 0.5, 0.1]), None, {}, "strictly decreasing"),
        (torch.tensor([0.1, 0.5]), None, {}, "strictly decreasing"),
        (torch.tensor([0.9, float("nan")]), None, {}, "NaN"),
        (None, torch.tensor([[0.0, float("nan"), 1.0]]), {}, "NaN or inf"),
        (None, torch.tensor([[0.0, float("inf"), 1.0]]), {}, "NaN or inf"),
        (None, torch.zeros(2, 3, dtype=torch.long), {}, "floating-point"),
        (None, None, {"bogus": 1}, "unknown option"),
    ],
)
def test_bad_input_raises_value_error(name, times, x, options, match):
    times = torch.tensor([0.9, 0.5, 0.1]) if times is None else times
    x = _x() if x is None else x
    with pytest.raises(ValueError, match=match):
        SAMPLERS[name](PointMass(MU).eps_fn(VP), x, times, VP, **options)


def test_error_messages_list_the_choices():
    with pytest.raises(
        ValueError, match=r"method must be one of ddim, s-pndm, f-pndm, .*, got 'pndmm'"
    ):
        get_sampler("pndmm")
    with pytest.raises(ValueError, match=r"valid options: afs, denoise_to_zero"):
        SAMPLERS["ipndm"](PointMass(MU).eps_fn(VP), _x(), grids.edm(VP, 3), VP, afz=True)
    with pytest.raises(ValueError, match=r"order for method 'vab' must be one of 1, 2, 3, 4"):
        SAMPLERS["vab"](PointMass(MU).eps_fn(VP), _x(), grids.edm(VP, 3), VP, order=5)
    with pytest.raises(ValueError, match="unknown option"):
        nfe("ddim", 10, order=2)
    with pytest.raises(ValueError, match="integer >= 1"):
        nfe("ddim", 0)


def test_eps_fn_of_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="x's shape"):
        SAMPLERS["ddim"](lambda x, t: x[:, :1], _x(), grids.edm(VP, 3), VP)


def test_drift_methods_refuse_alpha_one_and_non_differentiable_schedules():
    to_one = NoiseSchedule.from_config({"set_alpha_to_one": True})
    eps_fn = PointMass(MU).eps_fn(to_one)
    with pytest.raises(ValueError, match="singular"):
        SAMPLERS["pf"](eps_fn, _x(), grids.leading(to_one, 10), to_one)
    with pytest.raises(ValueError, match="singular"):
        SAMPLERS["fon"](eps_fn, _x(), grids.leading(to_one, 2), to_one)

    class Detached:
        def alpha_bar(self, t):
            return VP.alpha_bar(t.detach())

    with pytest.raises(ValueError, match="not differentiable"):
        SAMPLERS["fon"](PointMass(MU).eps_fn(VP), _x(), grids.edm(VP, 5), Detached())
