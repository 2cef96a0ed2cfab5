"""The transfer φ (paper eq. 9) and the Adams weights, against closed forms.

Golden values: the deterministic DDIM step written out here, exact rational arithmetic (fractions,
decimal), the closed-form AB2/AB3/AM3 weights of reference/algorithms.md §3, the equal-step tables
from any numerical-analysis text, and ∫ s^d ds = 1/(d+1).
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import pytest
import torch

from pndm.samplers.adams import adams_bashforth_table, adams_moulton_table, lagrange_integrals
from pndm.samplers.core import (
    AB_WEIGHTS,
    EULER,
    IMPROVED_EULER,
    RK4,
    Tableau,
    equal_step_table,
    linear_combination,
    transfer,
    transfer_coefficients,
)
from pndm.samplers.steps import Grid
from pndm.schedule import VPSchedule


def _pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, dtype=torch.float64, generator=g) * 0.999 + 5e-4
    b = torch.rand(n, dtype=torch.float64, generator=g) * 0.999 + 5e-4
    return a, b


# --- transfer φ ---------------------------------------------------------------------------------


def test_transfer_equals_deterministic_ddim_step():
    """φ(x, ε, a->b) = sqrt(b) x̂0 + sqrt(1-b) ε with x̂0 = (x - sqrt(1-a) ε)/sqrt(a).

    Tolerance 1e-12: both sides are O(10) float64 expressions of a handful of roundings each
    (|x̂0| <= |x|/sqrt(a) ~ 50 for a >= 5e-4), so they agree to ~1e-14.
    """
    a, b = _pairs(64, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 4, dtype=torch.float64, generator=g)
    eps = torch.randn(64, 3, 4, dtype=torch.float64, generator=g)
    ra, rb = a.sqrt()[:, None, None], b.sqrt()[:, None, None]
    x0 = (x - (1 - ra**2).sqrt() * eps) / ra
    ddim = rb * x0 + (1 - rb**2).sqrt() * eps
    torch.testing.assert_close(transfer(x, eps, a, b), ddim, rtol=0, atol=1e-12)


def test_transfer_scalar_alpha_and_euler_form():
    """With scalar a, b: φ/sqrt(b) = x/sqrt(a) + (σ̃_b - σ̃_a) ε, the Euler step in (x̄, σ̃)."""
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    a, b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    sigma = lambda v: ((1 - v) / v).sqrt()  # noqa: E731
    euler = b.sqrt() * (x / a.sqrt() + (sigma(b) - sigma(a)) * eps)
    torch.testing.assert_close(transfer(x, eps, a, b), euler, rtol=0, atol=1e-14)


def test_transfer_stays_on_the_manifold():
    """x = sqrt(a) x0 + sqrt(1-a) ε with the true ε goes to exactly sqrt(b) x0 + sqrt(1-b) ε.

    Tolerance 1e-12 absolute on O(1) values: float64 rounding of a few operations.
    """
    a, b = _pairs(32, seed=3)
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(2, 32, 6, dtype=torch.float64, generator=g)
    x = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * eps
    expected = b.sqrt()[:, None] * x0 + (1 - b).sqrt()[:, None] * eps
    torch.testing.assert_close(transfer(x, eps, a, b), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gap", [1e-3, 1e-8, 1e-13])
def test_transfer_noise_coefficient_is_stable_for_close_alphas(gap):
    """c_ε = sqrt(1-b) - sqrt(b/a) sqrt(1-a) in 50-digit decimal: relative error < 1e-13.

    The textbook form loses ~log10(1/gap) digits to cancellation; the stable form loses none, so
    1e-13 (a few hundred ulps) holds even at gap = 1e-13, where the naive form has no digit left.
    """
    getcontext().prec = 50
    a = 0.37
    b = a * (1 + gap)
    _, c_eps = transfer_coefficients(*torch.tensor([a, b], dtype=torch.float64))
    da, db = Decimal(a), Decimal(b)
    exact = (1 - db).sqrt() - (db / da).sqrt() * (1 - da).sqrt()
    assert abs((Decimal(float(c_eps)) - exact) / exact) < Decimal("1e-13")


def test_transfer_keeps_float32():
    x = torch.randn(4, 3)
    out = transfer(x, torch.randn(4, 3), torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.5))
    assert out.dtype == torch.float32


def test_grid_transfer_equals_core_transfer():
    """The samplers' precomputed-coefficient φ is the same function as core.transfer."""
    vp = VPSchedule()
    times = torch.tensor([0.9, 0.5, 0.2, 0.01], dtype=torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64)
    grid = Grid.build(x, times, vp)
    eps = torch.randn(3, 2, dtype=torch.float64)
    for n in range(3):
        expected = transfer(x, eps, vp.alpha_bar(times[n]), vp.alpha_bar(times[n + 1]))
        torch.testing.assert_close(grid.transfer(x, eps, n), expected, rtol=0, atol=1e-15)


# --- equal-step Adams-Bashforth ------------------------------------------------------------------


def test_ab_weights_are_the_textbook_tables():
    textbook = [
        [Fraction(1)],
        [Fraction(3, 2), Fraction(-1, 2)],
        [Fraction(23, 12), Fraction(-16, 12), Fraction(5, 12)],
        [Fraction(55, 24), Fraction(-59, 24), Fraction(37, 24), Fraction(-9, 24)],
    ]
    for weights, exact in zip(AB_WEIGHTS, textbook, strict=True):
        assert weights == pytest.approx([float(w) for w in exact], abs=1e-16)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_ab_weights_integrate_polynomials_exactly(k):
    """AB_k on unit steps: Σ_j w_j p(-j) = ∫_0^1 p for every degree d < k (exact in Fractions)."""
    weights = AB_WEIGHTS[k - 1]
    for d in range(k):
        quad = sum(
            Fraction(w).limit_denominator(100) * Fraction(-j) ** d for j, w in enumerate(weights)
        )
        assert quad == Fraction(1, d + 1)


def test_linear_combination():
    history = [torch.full((2,), 1.0), torch.full((2,), 10.0), torch.full((2,), 100.0)]
    assert linear_combination((1.0, 2.0, 3.0), history).tolist() == [321.0, 321.0]
    assert linear_combination((0.5, 0.5), history[:1]).tolist() == [0.5, 0.5]  # shorter history


def test_equal_step_table_rows():
    table = equal_step_table([1, 2, 4])
    assert table.shape == (3, 4)
    assert table[2].tolist() == list(AB_WEIGHTS[3])
    assert table[1].tolist() == [*AB_WEIGHTS[1], 0.0, 0.0]


# --- variable-step Adams weights in σ̃ ------------------------------------------------------------


def _random_sigma(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, dtype=torch.float64, generator=g).mul(80).sort(descending=True).values


def test_variable_ab_on_equal_steps_is_the_textbook_table():
    """Uniform σ̃ (any step) gives AB_WEIGHTS after the AB1, AB2, AB3 warm start; 1e-12 relative."""
    sigma = torch.linspace(10.0, 0.5, 12, dtype=torch.float64)
    table = adams_bashforth_table(sigma, 4)
    for n in range(11):
        k = min(n + 1, 4)
        np.testing.assert_allclose(table[n, :k], AB_WEIGHTS[k - 1], rtol=1e-12, atol=1e-13)
        assert (table[n, k:] == 0).all()


def test_variable_ab2_ab3_match_closed_forms():
    """algorithms.md §3 closed forms with h = σ̃_{n+1}-σ̃_n, h1 = σ̃_n-σ̃_{n-1}, h2 = σ̃_{n-1}-σ̃_{n-2}.

    Tolerance 1e-11 relative: Gauss-Legendre is exact for these degrees; only rounding remains.
    """
    sigma = _random_sigma(20, seed=5)
    s = sigma.tolist()
    ab2, ab3 = adams_bashforth_table(sigma, 2), adams_bashforth_table(sigma, 3)
    for n in range(2, 19):
        h, h1, h2 = s[n + 1] - s[n], s[n] - s[n - 1], s[n - 1] - s[n - 2]
        w2 = [h * (h + 2 * h1) / (2 * h1), -(h**2) / (2 * h1)]
        w3 = [
            h
            * (2 * h * h + 6 * h * h1 + 3 * h * h2 + 6 * h1 * h1 + 6 * h1 * h2)
            / (6 * h1 * (h1 + h2)),
            -(h**2) * (2 * h + 3 * h1 + 3 * h2) / (6 * h1 * h2),
            h**2 * (2 * h + 3 * h1) / (6 * h2 * (h1 + h2)),
        ]
        np.testing.assert_allclose(ab2[n] * h, w2, rtol=1e-11)
        np.testing.assert_allclose(ab3[n] * h, w3, rtol=1e-11)


def test_variable_ab3_counterexample_to_diff_sampler():
    """Steps (h, h1, h2) = (1, 2, 2): exact AB3 weights [17/12, -7/12, 1/6] (algorithms.md §3)."""
    weights = lagrange_integrals([4.0, 2.0, 0.0], 4.0, 5.0)
    np.testing.assert_allclose(weights, [17 / 12, -7 / 12, 1 / 6], rtol=1e-14)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_lagrange_weights_integrate_polynomials_exactly(k):
    """Σ_j w_j p(node_j) = ∫ p over [lo, hi] for degree < k on random nodes; 1e-10 relative."""
    g = torch.Generator().manual_seed(k)
    nodes = torch.rand(k, dtype=torch.float64, generator=g).mul(3).sort(descending=True).values
    lo, hi = float(nodes[0]), float(nodes[0]) - 0.7
    w = lagrange_integrals(nodes.tolist(), lo, hi)
    assert w.sum() == pytest.approx(hi - lo, rel=1e-12)
    for d in range(k):
        exact = (hi ** (d + 1) - lo ** (d + 1)) / (d + 1)
        assert float(w @ nodes.numpy() ** d) == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_variable_am_weights():
    """AM rows: equal steps give (1,1)/2, (5,8,-1)/12, (9,19,-5,1)/24; variable AM3 closed form."""
    uniform = adams_moulton_table(torch.linspace(10.0, 1.0, 8, dtype=torch.float64), 4)
    np.testing.assert_allclose(uniform[0, :2], [1 / 2, 1 / 2], rtol=1e-12)
    np.testing.assert_allclose(uniform[1, :3], [5 / 12, 8 / 12, -1 / 12], rtol=1e-12)
    np.testing.assert_allclose(uniform[5], [9 / 24, 19 / 24, -5 / 24, 1 / 24], rtol=1e-12)
    sigma = _random_sigma(10, seed=6)
    s, am3 = sigma.tolist(), adams_moulton_table(sigma, 3)
    for n in range(1, 9):
        h, h1 = s[n + 1] - s[n], s[n] - s[n - 1]
        exact = [
            h * (2 * h + 3 * h1) / (6 * (h + h1)),
            h * (h + 3 * h1) / (6 * h1),
            -(h**3) / (6 * h1 * (h + h1)),
        ]
        np.testing.assert_allclose(am3[n] * h, exact, rtol=1e-11)


def test_adams_rows_sum_to_one():
    """Each row of w_j/h sums to 1, so a constant ε is integrated exactly (point-mass exactness)."""
    sigma = _random_sigma(30, seed=7)
    for table in (adams_bashforth_table(sigma, 4), adams_moulton_table(sigma, 5)):
        np.testing.assert_allclose(table.sum(1), np.ones(29), rtol=1e-12)
    assert math.isclose(float(equal_step_table([4]).sum()), 1.0, rel_tol=1e-15)


def test_adams_table_rejects_increasing_sigma():
    with pytest.raises(ValueError, match="must not increase"):
        adams_bashforth_table(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), 2)


def test_adams_table_zero_length_step():
    """A repeated σ̃ (diffusers' leading grid ends 0 -> -1 with ᾱ(-1) = ᾱ_0) is an identity step:
    its row is (1, 0, ...), and rows after it use only the nodes after the repeat (AB1 restart)."""
    sigma = torch.tensor([4.0, 3.0, 2.0, 2.0, 1.0], dtype=torch.float64)
    ab = adams_bashforth_table(sigma, 3)
    assert ab[2].tolist() == [1.0, 0.0, 0.0] and ab[3].tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(ab[1], [1.5, -0.5, 0.0], rtol=1e-14)
    am = adams_moulton_table(sigma, 3)
    assert am[2].tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(am[3], [0.5, 0.5, 0.0], rtol=1e-14)


# --- warm-up tableaux --------------------------------------------------------------------------


def test_warmup_tableaux_are_the_textbook_ones():
    """Classical RK4 (b = 1/6, 1/3, 1/3, 1/6 at c = 0, 1/2, 1/2, 1), Heun and Euler; every row of a
    and b sums to 1 (consistency: a constant ε or slope is reproduced)."""
    exact = [Fraction(1, 6), Fraction(1, 3), Fraction(1, 3), Fraction(1, 6)]
    assert [Fraction(w).limit_denominator(100) for w in RK4.b] == exact
    assert (
        RK4.c == (0, 0.5, 0.5, 1) and IMPROVED_EULER.c == (0, 1) and IMPROVED_EULER.b == (0.5, 0.5)
    )
    assert EULER.b == (1.0,)
    for tableau in (RK4, IMPROVED_EULER, EULER):
        for row in (*tableau.a, tableau.b):
            assert math.isclose(sum(row), 1.0, rel_tol=1e-15)


def test_tableau_rejects_nodes_a_grid_does_not_have():
    with pytest.raises(ValueError, match="nodes c_i in"):
        Tableau(c=(0.0, 0.25), a=((1.0,),), b=(0.5, 0.5))
    with pytest.raises(ValueError, match="one b per stage"):
        Tableau(c=(0.0, 1.0), a=((1.0,),), b=(1.0,))
