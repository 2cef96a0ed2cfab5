"""The derivative-free optimiser of the tuner: Nelder-Mead with a fixed evaluation budget."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def default_budget(dim: int) -> int:
    """Objective evaluations for ``dim`` free times (Nelder-Mead settles in about this many)."""
    return 20 + 15 * dim


def nelder_mead(
    f: Callable[[np.ndarray], float], z0: np.ndarray, budget: int, step: float = 0.5
) -> tuple[np.ndarray, float, list[float]]:
    """Minimise f from z0 with about ``budget`` evaluations (the last round may add up to
    dim + 1 more); (best z, best f, best-so-far list).

    Standard coefficients (reflection 1, expansion 2, contraction 1/2, shrink 1/2); the initial
    simplex is z0 plus ``step`` along each axis.
    """
    dim = z0.size
    simplex = [z0.astype(np.float64)] + [z0 + step * axis for axis in np.eye(dim)]
    values = [f(p) for p in simplex]
    history = list(np.minimum.accumulate(values))
    while len(history) < budget:
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centroid = np.mean(simplex[:-1], axis=0)
        candidates = _nm_step(f, simplex, values, centroid, history)
        if candidates is None:  # shrink toward the best point
            simplex = [simplex[0] + (p - simplex[0]) / 2 for p in simplex]
            values = [values[0]] + [_tracked(f, p, history) for p in simplex[1:]]
        else:
            simplex[-1], values[-1] = candidates
    best = int(np.argmin(values))
    return simplex[best], values[best], history


def _tracked(f: Callable[[np.ndarray], float], z: np.ndarray, history: list[float]) -> float:
    value = f(z)
    history.append(min(value, history[-1]))
    return value


def _nm_step(
    f: Callable[[np.ndarray], float],
    simplex: list[np.ndarray],
    values: list[float],
    centroid: np.ndarray,
    history: list[float],
) -> tuple[np.ndarray, float] | None:
    """One reflection/expansion/contraction; the new worst point, or None to shrink."""
    worst = simplex[-1]
    reflected = centroid + (centroid - worst)
    fr = _tracked(f, reflected, history)
    if fr < values[0]:
        expanded = centroid + 2 * (centroid - worst)
        fe = _tracked(f, expanded, history)
        return (expanded, fe) if fe < fr else (reflected, fr)
    if fr < values[-2]:
        return reflected, fr
    inside = fr >= values[-1]
    contracted = centroid + (0.5 if not inside else -0.5) * (centroid - worst)
    fc = _tracked(f, contracted, history)
    return (contracted, fc) if fc < min(fr, values[-1]) else None
