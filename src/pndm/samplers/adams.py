"""Variable-step Adams weight tables in σ̃ (algorithms.md §3); the equal-step ones are in core.

A table has one row per step n; row n holds ε' weights on (e_n, e_{n-1}, ...) (Adams-Bashforth) or
on (e_{n+1}, e_n, ...) (Adams-Moulton), divided by the step h_n = σ̃_{n+1} - σ̃_n so that each row
sums to 1 and the update is the transfer x_{n+1} = φ(x_n, ε'). Unused trailing entries are zero.
Tables are built once, in float64 on the host, before the sampling loop.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike


@functools.lru_cache(maxsize=8)
def _gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(m)


def lagrange_integrals(
    nodes: ArrayLike, lo: ArrayLike, hi: ArrayLike, exponential: bool = False
) -> np.ndarray:
    """∫_lo^hi ℓ_j(s) ds for the Lagrange basis ℓ_j on distinct ``nodes``; rows are independent.

    ``nodes`` (k,) or (R, k), ``lo``/``hi`` scalars or (R,). Gauss-Legendre with m = ceil(k/2)
    points integrates the degree k-1 basis exactly (2m - 1 >= k - 1).
    ``exponential``: the integrals of ℓ_j(s) e^(-s) instead, scaled by (hi - lo)/∫_lo^hi e^(-s) ds
    so that they still sum to hi - lo (the exponential integrator in s = log σ̃ = -λ); 12 points:
    relative error below 1e-15 for |hi - lo| <= 10 and 1e-11 for 15 (measured on e^s alone).
    """
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    lo, hi = (np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None] for v in (lo, hi))
    k = nodes.shape[1]
    points, gl_weights = _gauss_legendre(12 if exponential else max(1, (k + 1) // 2))
    s = (lo + hi) / 2 + (hi - lo) / 2 * points  # (R, m) quadrature points in [lo, hi]
    basis = np.ones((*s.shape, k))
    for j in range(k):
        for i in range(k):
            if i != j:
                basis[..., j] *= (s - nodes[:, i : i + 1]) / (
                    nodes[:, j : j + 1] - nodes[:, i : i + 1]
                )
    if exponential:  # e^(-(s - lo)), normalised: its integral over [lo, hi] is -expm1(lo - hi)
        basis *= (np.exp(lo - s) * (hi - lo) / -np.expm1(lo - hi))[..., None]
    integrals = (hi - lo) / 2 * np.einsum("m,rmk->rk", gl_weights, basis)
    return integrals[0] if integrals.shape[0] == 1 else integrals


def _distinct_run(s: np.ndarray) -> np.ndarray:
    """run[n]: how many nodes σ̃_n, σ̃_{n-1}, ... are strictly increasing going back (distinct)."""
    run = np.ones(s.size, dtype=np.int64)
    for n in range(1, s.size):
        run[n] = run[n - 1] + 1 if s[n - 1] > s[n] else 1
    return run


def _adams_table(
    sigma: torch.Tensor,
    order: int,
    newest_offset: int,
    caps: Sequence[int] | None = None,
    exponential: bool = False,
) -> torch.Tensor:
    """Rows w_j/h_n on the nodes σ̃_{n+o}, σ̃_{n+o-1}, ... (o = newest_offset), at most ``order``
    nodes, and at most ``caps[n]`` in row n when given (``lower_order_final``).

    A zero-length step (equal σ̃, e.g. t = 0 -> -1 when the final ᾱ is ᾱ_0) is the identity whatever
    ε', so its row is (1, 0, ...); later rows use only nodes after it (they must be distinct).
    """
    s = sigma.detach().to("cpu", torch.float64).numpy()
    if (s[1:] > s[:-1]).any():
        raise ValueError("σ̃ must not increase along the grid (ᾱ must not decrease toward t_N)")
    steps = s.size - 1
    newest = np.arange(steps) + newest_offset
    h = s[1:] - s[:-1]
    widths = np.minimum(_distinct_run(s)[newest], order)
    if caps is not None:
        widths = np.minimum(widths, np.asarray(caps, dtype=np.int64))
    widths = np.where(h == 0, 0, widths)
    table = np.zeros((steps, order))
    table[(h == 0) | (widths == 1), 0] = 1.0  # one node: ε' = e_n whatever the step
    for width in range(2, order + 1):
        rows = np.nonzero(widths == width)[0]
        if rows.size:
            nodes = s[newest[rows, None] - np.arange(width)]
            w = lagrange_integrals(nodes, s[rows], s[rows + 1], exponential)
            w = w.reshape(rows.size, width)
            table[rows, :width] = w / h[rows, None]
    return torch.from_numpy(table)


def adams_bashforth_table(
    sigma: torch.Tensor, order: int, caps: Sequence[int] | None = None
) -> torch.Tensor:
    """Variable-step AB_k in σ̃, row n: w_j/h_n on (e_n, ..., e_{n-k+1}), k = min(n+1, order).

    w_j = ∫_{σ̃_n}^{σ̃_{n+1}} Π_{m≠j} (s - σ̃_{n-m})/(σ̃_{n-j} - σ̃_{n-m}) ds; the warm start is
    AB1, AB2, ... (the first step is the DDIM step). ``caps[n]``, if given, also bounds k.
    """
    return _adams_table(sigma, order, newest_offset=0, caps=caps)


def adams_moulton_table(
    sigma: torch.Tensor, order: int, caps: Sequence[int] | None = None
) -> torch.Tensor:
    """Variable-step AM_k in σ̃, row n: w_j/h_n on (e_{n+1}, e_n, ...), k = min(n+2, order),
    and k <= ``caps[n]`` if given."""
    return _adams_table(sigma, order, newest_offset=1, caps=caps)


def data_adams_tables(
    log_sigma: torch.Tensor, order: int, caps: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(AB_k, AM_{k+1}) rows for the data estimate x̂_0 in λ = -log σ̃ (exponential integrator).

    y = x/sqrt(1-ᾱ) obeys dy/de^λ = x̂_0, so y_{n+1} - y_n = ∫ e^λ x̂_0 dλ; row n holds the weights
    of the Lagrange interpolant of x̂_0 in λ under e^λ, divided by ∫ e^λ dλ (rows sum to 1).
    ``caps[n]`` bounds the predictor order of row n, the corrector's is one higher (its last row,
    unused: the last step keeps the predictor, is one node).
    """
    predictor = _adams_table(log_sigma, order, 0, caps, exponential=True)
    corrector_caps = [k + 1 for k in caps[:-1]] + [1]
    corrector = _adams_table(log_sigma, order + 1, 1, corrector_caps, exponential=True)
    return predictor, corrector
