"""The Fréchet distance against closed forms and pytorch-fid; statistics files; the digits metric.

Float64 linear algebra on well-conditioned matrices: agreement with a closed form to 1e-9
relative is about 10^5 times the eigensolver's rounding (1e-14 of the traces here), and a wrong
coefficient (a missing factor 2, a trace instead of a root) is off by O(1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pndm.metrics import (
    Statistics,
    frechet_distance,
    load_statistics,
    save_statistics,
    statistics_of,
)
from pndm.metrics.digits import load_network, to_input

REL = 1e-9


def _spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d + 3))
    return a @ a.T / a.shape[1]


def _stats(mu: np.ndarray, sigma: np.ndarray) -> Statistics:
    return Statistics(np.asarray(mu, float), np.asarray(sigma, float))


def test_identical_gaussians_are_at_distance_zero() -> None:
    rng = np.random.default_rng(0)
    a = _stats(rng.standard_normal(32), _spd(rng, 32))
    assert abs(frechet_distance(a, a)) < REL * np.trace(a.sigma)


def test_one_dimension_is_mean_gap_plus_std_gap_squared() -> None:
    a, b = _stats([0.3], [[4.0]]), _stats([-1.2], [[0.25]])
    assert frechet_distance(a, b) == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=REL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_commuting_covariances_match_the_eigenvalue_formula(seed: int) -> None:
    """Same eigenvectors: d² = |Δμ|² + Σ (√λ_a − √λ_b)²."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    la, lb = rng.uniform(0.01, 5, 20), rng.uniform(0.01, 5, 20)
    mu_a, mu_b = rng.standard_normal(20), rng.standard_normal(20)
    a, b = _stats(mu_a, (q * la) @ q.T), _stats(mu_b, (q * lb) @ q.T)
    exact = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(la) - np.sqrt(lb)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=REL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_by_two_non_commuting_closed_form(seed: int) -> None:
    """For 2x2, tr √(Σ_a Σ_b) = √(tr(Σ_a Σ_b) + 2 √(det Σ_a det Σ_b))."""
    rng = np.random.default_rng(seed)
    sa, sb = _spd(rng, 2), _spd(rng, 2)
    mu = rng.standard_normal(2)
    dets = np.linalg.det(sa) * np.linalg.det(sb)
    trace_sqrt = math.sqrt(np.trace(sa @ sb) + 2 * math.sqrt(dets))
    exact = mu @ mu + np.trace(sa) + np.trace(sb) - 2 * trace_sqrt
    got = frechet_distance(_stats(mu, sa), _stats(np.zeros(2), sb))
    assert got == pytest.approx(exact, rel=REL)


def test_rank_deficient_covariances_stay_real_and_exact() -> None:
    """Fewer samples than dimensions: Σ = c² Σ_0 of rank 3 in 10-d gives d² = (1 − c)² tr Σ_0."""
    rng = np.random.default_rng(3)
    s0 = _spd(rng, 10, rank=3)
    d = frechet_distance(_stats(np.zeros(10), s0), _stats(np.zeros(10), 9.0 * s0))
    # The 7 zero eigenvalues carry eps·|Σ| ≈ 1e-16 of rounding; their square roots add about
    # 1e-8 of tr Σ (measured 0.9-1.4e-8, seeds 0-5): 1e-6 bounds that, a wrong term is O(1).
    assert d == pytest.approx(4.0 * np.trace(s0), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytorch_fid_on_random_covariances(seed: int) -> None:
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(seed)
    mu_a, mu_b = rng.standard_normal(64), rng.standard_normal(64)
    sa, sb = _spd(rng, 64), _spd(rng, 64)
    theirs = fid_score.calculate_frechet_distance(mu_a, sa, mu_b, sb)
    assert frechet_distance(_stats(mu_a, sa), _stats(mu_b, sb)) == pytest.approx(theirs, rel=1e-8)


def test_different_dimensions_are_refused() -> None:
    a, b = _stats(np.zeros(3), np.eye(3)), _stats(np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="different dimension"):
        frechet_distance(a, b)


def test_statistics_are_mean_and_unbiased_covariance() -> None:
    x = np.random.default_rng(4).standard_normal((50, 6))
    stats = statistics_of(x, "digits")
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-13)
    centred = x - x.mean(0)
    np.testing.assert_allclose(stats.sigma, centred.T @ centred / 49, rtol=1e-12)
    assert (stats.count, stats.features) == (50, "digits")
    with pytest.raises(ValueError, match="at least 2"):
        statistics_of(x[:1])


def test_statistics_round_trip_and_pytorch_fid_reads_them(tmp_path) -> None:
    rng = np.random.default_rng(5)
    stats = Statistics(rng.standard_normal(8), _spd(rng, 8), "digits", 123)
    path = tmp_path / "s.npz"
    save_statistics(path, stats)
    back = load_statistics(path)
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma)
    assert (back.features, back.count) == ("digits", 123)
    with pytest.raises(FileExistsError):
        save_statistics(path, stats)
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    mu, sigma = fid_score.compute_statistics_of_path(str(path), None, 1, 8, "cpu")
    assert np.array_equal(mu, stats.mu) and np.array_equal(sigma, stats.sigma)


def test_plain_pytorch_fid_statistics_load_without_pndm_keys(tmp_path) -> None:
    path = tmp_path / "published.npz"
    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048))
    stats = load_statistics(path)
    assert stats.dims == 2048 and stats.features is None and stats.count is None


# ----------------------------------------------------------------------------- digits metric


def test_shipped_statistics_are_the_digits_under_the_shipped_network() -> None:
    """Weights and statistics belong together: the data scored against its own statistics is at
    distance ~0 (float32 features: 1e-4 of the 100+ that the digits' own halves are apart)."""
    pytest.importorskip("sklearn")
    from pndm.metrics.core import SHIPPED
    from pndm.metrics.digits_train import digits_images

    images, labels = digits_images()
    net = load_network()
    with torch.no_grad():
        feats = net(to_input(images))
        accuracy = (net.classifier(feats).argmax(1).numpy() == labels).mean()
    assert accuracy > 0.98
    ours = statistics_of(feats.double().numpy())
    shipped = load_statistics(SHIPPED["digits"])
    assert shipped.count == 1797 and shipped.features == "digits"
    assert abs(frechet_distance(ours, shipped)) < 1e-2
