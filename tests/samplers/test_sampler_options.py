"""The sampler options ``lower_order_final`` and ``clip_sample`` / ``clip_sample_range``.

Oracles: hand-built samplers written here from `core.transfer`, `core.AB_WEIGHTS` and Lagrange
weights from numpy's polynomial fit (not `samplers.adams`), with the order of every step written
out literally; diffusers' DDIMScheduler(clip_sample=True) run on our float64 ᾱ table; the exact
flow of a Gaussian (pndm.analytic.gaussian_flow) for convergence; a point mass, whose data
estimate x̂_0 is the constant μ along exact trajectories, for "clipping inside the range is a no-op".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import Counter

from pndm import grids
from pndm.analytic import GaussianMixture, PointMass, gaussian_flow
from pndm.samplers import SAMPLERS, nfe
from pndm.samplers.core import AB_WEIGHTS, transfer
from pndm.samplers.steps import Grid, final_order_caps
from pndm.schedule import NoiseSchedule, VPSchedule

VP = VPSchedule()
MIXTURE = GaussianMixture(
    [0.4, 0.6], torch.tensor([[1.5, -0.4, 0.2], [-0.8, 1.1, -1.3]], dtype=torch.float64), [0.3, 0.6]
)
EPS = MIXTURE.eps_fn(VP)  # x̂_0 goes well past [-1, 1] at high noise: clipping bites
LOWER_ORDER_FINAL = ["plms", "ipndm", "vab", "pec", "dpmpp-2m"]
CLIPPING = ["ddim", "s-pndm", "f-pndm", "plms", "ipndm", "vab", "pec", "dpmpp-2m"]


def _x(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _call(eps_fn: Callable, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return eps_fn(x, t.expand(x.shape[0]))


def _phi(x, eps, a, b, clip: float | None) -> torch.Tensor:
    """φ, and with ``clip`` diffusers' DDIM step sqrt(b) clamp(x̂_0) + sqrt(1-b) ε, from scratch."""
    if clip is None:
        return transfer(x, eps, a, b)
    x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-clip, clip)
    return b.sqrt() * x0 + (1 - b).sqrt() * eps


def _lagrange(nodes: list[float], lo: float, hi: float) -> list[float]:
    """∫_lo^hi ℓ_j(s) ds / (hi - lo) for the Lagrange basis ℓ_j on ``nodes`` (numpy polyfit)."""
    k, shifted = len(nodes), np.asarray(nodes) - lo  # shift: a well-conditioned fit
    weights = []
    for j in range(k):
        antiderivative = np.polyint(np.polyfit(shifted, np.eye(k)[j], k - 1))
        weights.append(np.polyval(antiderivative, hi - lo) / (hi - lo))
    return weights


def _ab_weights(sigma: torch.Tensor, n: int, k: int, variable: bool, newest: int = 0) -> list:
    """Order-k weights of step n on e_{n+newest}, e_{n+newest-1}, ...: equal-step or in σ̃."""
    if not variable or k == 1:  # AB1 is ε' = e_n on any grid (and on a zero-length step)
        return list(AB_WEIGHTS[k - 1])
    nodes = [float(sigma[n + newest - j]) for j in range(k)]
    return _lagrange(nodes, float(sigma[n]), float(sigma[n + 1]))


def reference_multistep(
    x, times, orders, variable=False, improved_euler=False, clip=None, schedule=VP
):
    """x_{n+1} = φ(x_n, Σ_j w_j e_{n-j}), AB order ``orders[n]`` (step 0 pseudo improved Euler
    with ``improved_euler``, as PLMS), on the mixture's ε."""
    eps_fn, a = MIXTURE.eps_fn(schedule), schedule.alpha_bar(times)
    sigma, history = ((1 - a) / a).sqrt(), []
    for n, k in enumerate(orders):
        history = [_call(eps_fn, x, times[n]), *history]
        if n == 0 and improved_euler:
            x_tilde = _phi(x, history[0], a[0], a[1], clip)
            eps_prime = (history[0] + _call(eps_fn, x_tilde, times[1])) / 2
        else:
            w = _ab_weights(sigma, n, k, variable)
            eps_prime = sum(wj * e for wj, e in zip(w, history, strict=False))
        x = _phi(x, eps_prime, a[n], a[n + 1], clip)
    return x


def reference_pec(x, times, orders):
    """Variable-step AB_{orders[n]} predictor, AM_{orders[n]+1} corrector (no extra call)."""
    a = VP.alpha_bar(times)
    sigma, history, e = ((1 - a) / a).sqrt(), [], _call(EPS, x, times[0])
    for n, k in enumerate(orders):
        history = [e, *history]
        w = _ab_weights(sigma, n, k, variable=True)
        x_pred = transfer(x, sum(wj * h for wj, h in zip(w, history, strict=False)), a[n], a[n + 1])
        if n == len(orders) - 1:
            return x_pred
        e = _call(EPS, x_pred, times[n + 1])
        w = _ab_weights(sigma, n, k + 1, variable=True, newest=1)
        eps_am = sum(wj * h for wj, h in zip(w, [e, *history], strict=False))
        x = transfer(x, eps_am, a[n], a[n + 1])
    return x


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float64 round-off (numpy's fit of the order-5 Adams-Moulton basis: ~1e-12)."""
    torch.testing.assert_close(actual, expected, rtol=1e-11, atol=1e-12)


# --- lower_order_final ----------------------------------------------------------------------------

# (method, options, N, kwargs of the reference, the literal order of each step)
LOF_CASES = [
    ("ipndm", {}, 4, {}, [1, 2, 2, 1]),
    ("ipndm", {}, 6, {}, [1, 2, 3, 3, 2, 1]),
    ("ipndm", {}, 8, {}, [1, 2, 3, 4, 4, 3, 2, 1]),
    ("ipndm", {}, 1, {}, [1]),
    ("plms", {}, 5, {"improved_euler": True}, [2, 2, 3, 2, 1]),  # step 0: improved Euler kept
    ("plms", {}, 2, {"improved_euler": True}, [2, 1]),
    ("vab", {"order": 4}, 6, {"variable": True}, [1, 2, 3, 3, 2, 1]),
    ("vab", {"order": 2}, 4, {"variable": True}, [1, 2, 2, 1]),
    ("vab", {"order": 3}, 3, {"variable": True}, [1, 2, 1]),
]


@pytest.mark.parametrize(("name", "options", "n", "ref", "orders"), LOF_CASES)
def test_lower_order_final_is_the_literal_lower_order_steps(name, options, n, ref, orders):
    x, times = _x(), grids.edm(VP, n)
    out = SAMPLERS[name](EPS, x, times, VP, lower_order_final=True, **options)
    _close(out, reference_multistep(x, times, orders, **ref))


@pytest.mark.parametrize(
    ("order", "n", "orders"),
    [(3, 6, [1, 2, 3, 3, 2, 1]), (2, 5, [1, 2, 2, 2, 1]), (4, 7, [1, 2, 3, 4, 3, 2, 1])],
)
def test_pec_lower_order_final_caps_the_predictor_and_keeps_the_corrector_one_higher(
    order, n, orders
):
    x, times = _x(), grids.logsnr(VP, n)
    out = SAMPLERS["pec"](EPS, x, times, VP, order=order, lower_order_final=True)
    _close(out, reference_pec(x, times, orders))


@pytest.mark.parametrize(
    ("name", "options", "ref", "orders"),
    [
        ("ipndm", {}, {}, [1, 2, 3, 4, 4, 4]),
        ("plms", {}, {"improved_euler": True}, [2, 2, 3, 4, 4, 4]),
        ("vab", {"order": 3}, {"variable": True}, [1, 2, 3, 3, 3, 3]),
    ],
)
def test_the_references_reproduce_the_default_methods(name, options, ref, orders):
    """The hand-built references are right: with the usual orders they give the default method."""
    x, times = _x(), grids.edm(VP, 6)
    _close(
        SAMPLERS[name](EPS, x, times, VP, **options), reference_multistep(x, times, orders, **ref)
    )
    _close(SAMPLERS["pec"](EPS, x, times, VP), reference_pec(x, times, [1, 2, 3, 3, 3, 3]))


@pytest.mark.parametrize("name", LOWER_ORDER_FINAL)
def test_lower_order_final_off_is_the_default_bit_for_bit(name):
    x, times = _x(), grids.edm(VP, 7)
    default = SAMPLERS[name](EPS, x, times, VP)
    assert torch.equal(SAMPLERS[name](EPS, x, times, VP, lower_order_final=False), default)
    assert not torch.equal(SAMPLERS[name](EPS, x, times, VP, lower_order_final=True), default)


@pytest.mark.parametrize(("name", "options", "n"), [("vab", {"order": 1}, 5), ("ipndm", {}, 1)])
def test_lower_order_final_changes_nothing_where_no_cap_binds(name, options, n):
    """AB1 throughout, or a single step: min(usual order, N - n) is the usual order."""
    x, times = _x(), grids.edm(VP, n)
    on = SAMPLERS[name](EPS, x, times, VP, lower_order_final=True, **options)
    assert torch.equal(on, SAMPLERS[name](EPS, x, times, VP, **options))


def test_a_zero_length_final_step_does_not_count():
    """Leading grids end 0 -> -1 with ᾱ(-1) = ᾱ_0, the identity: the step before it is the last."""
    ddpm = NoiseSchedule.from_config({"num_train_timesteps": 1000})
    times = grids.leading(ddpm, 6)  # 1000 // 6 = 166: 830, 664, ..., 0, then -1
    assert final_order_caps(ddpm.alpha_bar(times)) == [5, 4, 3, 2, 1, 1]
    assert final_order_caps(VP.alpha_bar(grids.edm(VP, 4))) == [4, 3, 2, 1]
    x, orders = _x(), [1, 2, 3, 2, 1, 1]  # the last row (0 -> -1) is the identity anyway
    out = SAMPLERS["vab"](MIXTURE.eps_fn(ddpm), x, times, ddpm, lower_order_final=True)
    _close(out, reference_multistep(x, times, orders, variable=True, schedule=ddpm))


@pytest.mark.parametrize("name", CLIPPING)
@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_the_options_keep_the_nfe(name, n):
    options = {"clip_sample": True, "clip_sample_range": 2.0}
    if name in LOWER_ORDER_FINAL:
        options["lower_order_final"] = True
    counter = Counter(EPS)
    SAMPLERS[name](counter, _x(), grids.edm(VP, n), VP, **options)
    assert counter.calls == nfe(name, n) == nfe(name, n, **options)


@pytest.mark.parametrize(("name", "minimum_order"), [("ipndm", 1.9), ("vab", 3.3), ("pec", 3.5)])
def test_lower_order_final_keeps_convergence_on_the_exact_flow(name, minimum_order):
    """Steps doubled on a single Gaussian's exact flow: the option's error stays as small and
    falls as fast (an order-1 last step costs little where the grid's last steps are tiny)."""
    mean, std = torch.tensor([0.5, -0.3], dtype=torch.float64), 0.5
    component = GaussianMixture([1.0], mean[None], [std]).eps_fn(VP)
    x, steps, errors = _x(8)[:, :2], [80, 160, 320], {False: [], True: []}
    for n in steps:
        times = grids.edm(VP, n)
        exact = gaussian_flow(x, times[0], times[-1], VP, mean, std)
        for flag in errors:
            out = SAMPLERS[name](component, x, times, VP, lower_order_final=flag)
            errors[flag].append(float((out - exact).square().sum(1).mean().sqrt()))
    order = -np.polyfit(np.log(steps), np.log(errors[True]), 1)[0]
    assert order > minimum_order, errors
    assert errors[True][-1] < min(2 * errors[False][-1], 2e-4), errors


# --- clip_sample ----------------------------------------------------------------------------------


def _dummy_model(x: torch.Tensor, t) -> torch.Tensor:
    """A nonlinear model output whose x̂_0 leaves [-1, 1] at high noise."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(t / 100)


@pytest.mark.parametrize(
    ("n", "steps_offset", "alpha_to_one", "clip_range"),
    [(10, 0, False, 1.0), (10, 1, False, 1.0), (50, 0, False, 0.5), (20, 0, True, 1.0)],
)
def test_ddim_clip_sample_is_diffusers_ddim(n, steps_offset, alpha_to_one, clip_range):
    from diffusers import DDIMScheduler

    config = {"num_train_timesteps": 1000, "set_alpha_to_one": alpha_to_one}
    ours = NoiseSchedule.from_config(config)
    theirs = DDIMScheduler(
        **config, clip_sample=True, clip_sample_range=clip_range, steps_offset=steps_offset
    )
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()  # float64 ᾱ on both sides
    theirs.final_alpha_cumprod = torch.tensor(ours.final_alpha_cumprod, dtype=torch.float64)
    theirs.set_timesteps(n)
    times = grids.leading(ours, n, steps_offset=steps_offset)
    assert times[:-1].tolist() == theirs.timesteps.tolist()
    x = 1.5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).double()
    expected = x
    for t in theirs.timesteps:
        expected = theirs.step(_dummy_model(expected, t), t, expected).prev_sample
    options = {"clip_sample": True, "clip_sample_range": clip_range}
    out = SAMPLERS["ddim"](_dummy_model, x, times, ours, **options)
    _close(out, expected)
    unclipped = SAMPLERS["ddim"](_dummy_model, x, times, ours)
    assert float((out - unclipped).abs().max()) > 1e-2  # the clipping did happen


@pytest.mark.parametrize("name", CLIPPING)
def test_clipping_changes_nothing_while_x0_stays_inside_the_range(name):
    """On a point mass x̂_0 = μ at every step (ε is constant along the exact flow): bit-identical."""
    point = PointMass(torch.tensor([0.3, -0.8, 0.95], dtype=torch.float64))
    x, times = _x(), grids.edm(VP, 7)
    off = SAMPLERS[name](point.eps_fn(VP), x, times, VP)
    assert torch.equal(SAMPLERS[name](point.eps_fn(VP), x, times, VP, clip_sample=True), off)


@pytest.mark.parametrize("name", CLIPPING)
def test_a_large_range_changes_nothing_and_a_small_one_does(name):
    x, times = _x(), grids.edm(VP, 6)
    off = SAMPLERS[name](EPS, x, times, VP)
    wide = SAMPLERS[name](EPS, x, times, VP, clip_sample=True, clip_sample_range=1e6)
    assert torch.equal(wide, off)
    assert torch.equal(SAMPLERS[name](EPS, x, times, VP, clip_sample_range=0.1), off)  # flag off
    assert not torch.equal(SAMPLERS[name](EPS, x, times, VP, clip_sample=True), off)


@pytest.mark.parametrize(("n", "orders"), [(6, [1, 2, 3, 3, 2, 1]), (4, [1, 2, 3, 4])])
def test_ipndm_with_clipping_is_the_reference_with_clipped_steps(n, orders):
    x, times = _x(), grids.edm(VP, n)
    lof = n == 6
    out = SAMPLERS["ipndm"](EPS, x, times, VP, lower_order_final=lof, clip_sample=True)
    _close(out, reference_multistep(x, times, orders, clip=1.0))
    out = SAMPLERS["plms"](EPS, x, times, VP, clip_sample=True, clip_sample_range=0.7)
    expected = reference_multistep(x, times, [2, 2, 3, 4, 4, 4][:n], improved_euler=True, clip=0.7)
    _close(out, expected)


def test_grid_transfer_clips_x0_to_and_from_every_node():
    """Grid.transfer / transfer_mid = sqrt(b) clamp(x̂_0) + sqrt(1-b) ε; a step to ᾱ = 1 returns
    clamp(x̂_0), as does iPNDM's denoise_to_zero."""
    x, eps = 3 * _x(), _x(seed=1)
    times = torch.tensor([0.9, 0.4, 0.0], dtype=torch.float64)

    class ToOne:  # ᾱ(0) = 1: the last step lands on the data
        def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
            return torch.exp(-5 * t**2)

    grid = Grid.build(x, times, ToOne(), midpoints=True, clip=0.5)
    a, a_mid = ToOne().alpha_bar(times), ToOne().alpha_bar(grid.mid_times)
    for n in range(2):
        _close(grid.transfer(x, eps, n), _phi(x, eps, a[n], a[n + 1], 0.5))
        _close(grid.transfer_mid(x, eps, n), _phi(x, eps, a[n], a_mid[n], 0.5))
    x0 = (x - (1 - a[1]).sqrt() * eps) / a[1].sqrt()
    _close(grid.transfer(x, eps, 1), x0.clamp(-0.5, 0.5))
    out = SAMPLERS["ipndm"](EPS, _x(), grids.edm(VP, 3), VP, denoise_to_zero=True, clip_sample=True)
    assert float(out.abs().max()) <= 1.0


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"clip_sample": True, "clip_sample_range": 0}, "clip_sample_range"),
        ({"clip_sample": True, "clip_sample_range": -1.0}, "clip_sample_range"),
        ({"clip_sample": True, "clip_sample_range": float("inf")}, "clip_sample_range"),
        ({"clip_sample": True, "clip_sample_range": float("nan")}, "clip_sample_range"),
        ({"clip_sample": True, "clip_sample_range": "1"}, "clip_sample_range"),
        ({"clip_sample": True, "clip_sample_range": True}, "clip_sample_range"),
        ({"clip_sample_range": -2.0}, "clip_sample_range"),  # checked even with the flag off
        ({"clip_sample": "yes"}, "clip_sample"),
        ({"clip_sample": 1}, "clip_sample"),
        ({"lower_order_final": 1}, "lower_order_final"),
        ({"lower_order_final": "no"}, "lower_order_final"),
    ],
)
@pytest.mark.parametrize("name", ["plms", "ipndm", "vab", "pec", "dpmpp-2m", "ddim"])
def test_bad_options_are_one_line_errors(name, options, needle):
    if name == "ddim" and "lower_order_final" in options:
        needle = "unknown option"  # DDIM is one-step: nothing to lower
    with pytest.raises(ValueError, match=needle) as error:
        SAMPLERS[name](EPS, _x(), grids.edm(VP, 3), VP, **options)
    assert "\n" not in str(error.value)


def test_option_values_reach_the_sampler_as_checked_values():
    """A numpy scalar range is a float to the sampler: the same samples as the Python float."""
    times = grids.edm(VP, 3)
    want = SAMPLERS["ddim"](EPS, _x(), times, VP, clip_sample=True, clip_sample_range=0.5)
    got = SAMPLERS["ddim"](
        EPS, _x(), times, VP, clip_sample=True, clip_sample_range=np.float32(0.5)
    )
    assert torch.equal(got, want)
    assert nfe("ipndm", 5, afs=True, denoise_to_zero=True) == 5


def test_fon_and_pf_take_no_clipping():
    with pytest.raises(ValueError, match="valid options"):
        SAMPLERS["fon"](EPS, _x(), grids.edm(VP, 3), VP, clip_sample=True)
