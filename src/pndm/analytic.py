"""Weight-free oracles: exact ε for Gaussian mixtures and point masses, exact and reference flows.

All of these work with any schedule object that has ``alpha_bar(t) -> float64 tensor`` (and, for
`reference_flow`, ``sigma_tilde`` and ``timestep_from_sigma``), so they plug into every sampler as
``eps_fn``. Notation as in the paper (reference/algorithms.md §1, §6): a = sqrt(ᾱ), s = sqrt(1 - ᾱ),
x̄ = x / sqrt(ᾱ), σ̃ = sqrt((1 - ᾱ)/ᾱ); the probability-flow ODE is dx̄/dσ̃ = ε(sqrt(ᾱ) x̄, t(σ̃)).

Computations run in float64 and the result is cast back to the dtype of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pndm.schedule import require_schedule
from pndm.wrapper import EpsFn

ArrayLike = torch.Tensor | Sequence[Any] | float

__all__ = ["GaussianMixture", "PointMass", "gaussian_flow", "reference_flow"]


def _f64(value: Any, device: torch.device | None = None) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64, device=device)


def _per_sample(alpha_bar: ArrayLike, x: torch.Tensor) -> torch.Tensor:
    """ᾱ as a float64 (B, 1, ..., 1) tensor broadcasting against x of shape (B, *event)."""
    ab = _f64(alpha_bar, x.device)
    if ab.ndim > 1 or (ab.ndim == 1 and ab.numel() not in (1, x.shape[0])):
        raise ValueError(
            f"alpha_bar must be a scalar or have one value per sample ({x.shape[0]}), "
            f"got shape {tuple(ab.shape)}"
        )
    if not bool(((ab > 0) & (ab <= 1)).all()):
        raise ValueError("alpha_bar must lie in (0, 1]")
    return ab.reshape(-1, *([1] * (x.ndim - 1))).expand(x.shape[0], *([1] * (x.ndim - 1)))


def _times(t: ArrayLike, batch: int, device: torch.device) -> torch.Tensor:
    """Times as a float64 (B,) tensor (scalars are broadcast to the batch)."""
    t = _f64(t, device)
    return t.expand(batch) if t.ndim == 0 or t.numel() == 1 else t.reshape(batch)


class GaussianMixture:
    """p₀ = Σ_k π_k N(μ_k, τ_k² I): isotropic components, exact ε*(x, t) (algorithms.md §6).

    ``weights`` (K,) positive (normalised to sum 1), ``means`` (K, *event_shape), ``stds`` (K,)
    positive. With K = 1 the exact flow is `gaussian_flow`.
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike, stds: ArrayLike) -> None:
        w, mu, tau = _f64(weights), _f64(means), _f64(stds)
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(
                f"weights must be a non-empty 1-D sequence, got shape {tuple(w.shape)}"
            )
        k = w.numel()
        if mu.ndim < 2 or mu.shape[0] != k:
            raise ValueError(
                f"means must have shape (K, *event_shape) with K={k} (one row per weight), "
                f"got {tuple(mu.shape)}"
            )
        if tau.shape != (k,):
            raise ValueError(
                f"stds must have shape ({k},) (one per component), got {tuple(tau.shape)}"
            )
        if not bool(torch.isfinite(w).all() & (w > 0).all()):
            raise ValueError("weights must be finite and positive")
        if not bool(torch.isfinite(tau).all() & (tau > 0).all()):
            raise ValueError("stds must be finite and positive")
        if not bool(torch.isfinite(mu).all()):
            raise ValueError("means must be finite")
        self.weights = w / w.sum()
        self.means = mu
        self.stds = tau

    @property
    def event_shape(self) -> torch.Size:
        return self.means.shape[1:]

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim < 1 or tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def _components(self, x: torch.Tensor, alpha_bar: ArrayLike):
        """Per-component (x - aμ_k) (B, K, D), variances a²τ_k² + s² (B, K), log π_k N_k (B, K)."""
        self._check_x(x)
        ab = _per_sample(alpha_bar, x).reshape(-1, 1)  # (B, 1)
        a, s2 = ab.sqrt(), 1 - ab
        xf = x.to(torch.float64).reshape(x.shape[0], 1, -1)
        mu = self.means.to(x.device).reshape(1, self.means.shape[0], -1)
        diff = xf - a.unsqueeze(-1) * mu
        var = a**2 * self.stds.to(x.device) ** 2 + s2
        d = diff.shape[-1]
        log_n = -0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)
        return diff, var, self.weights.to(x.device).log() + log_n, s2.sqrt()

    def eps(self, x: torch.Tensor, alpha_bar: ArrayLike) -> torch.Tensor:
        """ε*(x) = s Σ_k r_k(x)(x − aμ_k)/(a²τ_k² + s²) = −s ∇log p_t(x); r_k by log-sum-exp.

        ``alpha_bar`` is a scalar or one value per sample; x has shape (B, *event_shape).
        """
        diff, var, logits, s = self._components(x, alpha_bar)
        r = (logits - logits.logsumexp(-1, keepdim=True)).exp()  # responsibilities r_k(x)
        eps = s * ((r / var).unsqueeze(-1) * diff).sum(1)
        return eps.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: torch.Tensor, alpha_bar: ArrayLike) -> torch.Tensor:
        """log p_t(x) of the noised mixture Σ_k π_k N(aμ_k, (a²τ_k² + s²) I); (B,), float64."""
        _, _, logits, _ = self._components(x, alpha_bar)
        return torch.logsumexp(logits, dim=-1)

    def eps_fn(self, schedule: Any) -> EpsFn:
        """``eps_fn(x, t)`` for the samplers: ε* at ᾱ = schedule.alpha_bar(t), t of shape (B,)."""

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.eps(x, schedule.alpha_bar(_times(t, x.shape[0], x.device)))

        return eps_fn

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n float64 draws from p₀ (component by multinomial, then μ_k + τ_k z)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.event_shape), dtype=torch.float64, generator=generator)
        return self.means[k] + self.stds[k].reshape(-1, *([1] * len(self.event_shape))) * z


class PointMass:
    """p₀ = δ_μ: ε*(x, t) = (x − aμ)/s, constant along exact trajectories (algorithms.md §6).

    Any φ-based method whose weights sum to the step (DDIM, S-/F-PNDM, PLMS, iPNDM) is exact on it,
    so it is a sharp test of the transfer φ and of index conventions. Needs ᾱ < 1 (s > 0).
    """

    def __init__(self, mean: ArrayLike) -> None:
        self.mean = _f64(mean)
        if self.mean.ndim < 1 or not bool(torch.isfinite(self.mean).all()):
            raise ValueError("mean must be a finite tensor of shape event_shape (at least 1-D)")

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim < 1 or tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.mean.shape))}), "
                f"got {tuple(x.shape)}"
            )

    def eps(self, x: torch.Tensor, alpha_bar: ArrayLike) -> torch.Tensor:
        """ε* = (x − sqrt(ᾱ) μ)/sqrt(1 − ᾱ)."""
        self._check_x(x)
        ab = _per_sample(alpha_bar, x)
        if bool((ab >= 1).any()):
            raise ValueError("PointMass.eps needs alpha_bar < 1 (ε is undefined without noise)")
        mu = self.mean.to(x.device)
        return ((x.to(torch.float64) - ab.sqrt() * mu) / (1 - ab).sqrt()).to(x.dtype)

    def eps_fn(self, schedule: Any) -> EpsFn:
        """``eps_fn(x, t)`` for the samplers: ε* at ᾱ = schedule.alpha_bar(t)."""

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.eps(x, schedule.alpha_bar(_times(t, x.shape[0], x.device)))

        return eps_fn

    def solution(
        self, x: torch.Tensor, t_from: ArrayLike, t_to: ArrayLike, schedule: Any
    ) -> torch.Tensor:
        """Exact flow: ε* is constant, so x(t_to) = sqrt(ᾱ₁) μ + sqrt(1 − ᾱ₁) ε*(x, t_from)."""
        e = self.eps(x, schedule.alpha_bar(_times(t_from, x.shape[0], x.device)))
        b = _per_sample(schedule.alpha_bar(_times(t_to, x.shape[0], x.device)), x)
        mu = self.mean.to(x.device)
        return (b.sqrt() * mu + (1 - b).sqrt() * e.to(torch.float64)).to(x.dtype)


def gaussian_flow(
    x: torch.Tensor,
    t_from: ArrayLike,
    t_to: ArrayLike,
    schedule: Any,
    mean: ArrayLike,
    std: float | torch.Tensor,
) -> torch.Tensor:
    """Exact probability-flow map for data N(μ, τ² I) (algorithms.md §6).

    x̄(σ̃₁) = μ + sqrt((τ² + σ̃₁²)/(τ² + σ̃₀²)) (x̄(σ̃₀) − μ), with x = sqrt(ᾱ) x̄. ``mean``
    broadcasts against one sample; ``std`` is the scalar τ > 0.
    """
    tau = _f64(std, x.device)
    if tau.ndim != 0 or not bool(tau > 0):
        raise ValueError(f"std must be a positive scalar, got {std!r}")
    tau2 = tau**2
    a0 = _per_sample(schedule.alpha_bar(_times(t_from, x.shape[0], x.device)), x)
    a1 = _per_sample(schedule.alpha_bar(_times(t_to, x.shape[0], x.device)), x)
    mu = _f64(mean, x.device)
    s0_2, s1_2 = (1 - a0) / a0, (1 - a1) / a1  # σ̃² at both ends
    xbar = x.to(torch.float64) / a0.sqrt()
    xbar1 = mu + ((tau2 + s1_2) / (tau2 + s0_2)).sqrt() * (xbar - mu)
    return (a1.sqrt() * xbar1).to(x.dtype)


def _scalar_time(t: ArrayLike, name: str) -> float:
    t = _f64(t).flatten()
    if t.numel() == 0 or not bool((t == t[0]).all()):
        raise ValueError(f"{name} must be one time for the whole batch")
    return float(t[0])


def _solve_ivp() -> Any:
    try:
        from scipy.integrate import solve_ivp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reference_flow needs scipy: pip install scipy (or install pndm's `test` extra)"
        ) from exc
    return solve_ivp


def _check_sigma_schedule(schedule: Any) -> None:
    require_schedule(schedule, "reference_flow")


def reference_flow(
    eps_fn: EpsFn,
    x: torch.Tensor,
    t_from: ArrayLike,
    t_to: ArrayLike,
    schedule: Any,
    rtol: float = 1e-13,
    atol: float = 1e-13,
) -> torch.Tensor:
    """High-precision float64 solution of the probability-flow ODE from t_from to t_to.

    Integrates dx̄/dσ̃ = ε(sqrt(ᾱ) x̄, t(σ̃)) with scipy's DOP853 (whole batch as one state; one time
    for the whole batch). We use σ̃ rather than dx/dt = ᾱ'/(2ᾱ)[x − ε/sqrt(1−ᾱ)] because (i) it needs
    no ᾱ', (ii) ᾱ = 1/(1+σ̃²) is smooth in σ̃ even where a discrete schedule's ᾱ(t) has kinks at
    integers, and (iii) for Gaussian data the right-hand side has Lipschitz constant
    ≤ σ̃/(τ²+σ̃²) ≤ 1/(2τ) and x̄ is nearly linear in σ̃ at high noise, so DOP853 takes few, large
    steps there (in t the drift carries the factor β(t)/2 ≈ 10 at t = 1). Needs
    ``schedule.sigma_tilde`` and ``schedule.timestep_from_sigma``."""
    solve_ivp = _solve_ivp()
    _check_sigma_schedule(schedule)
    t0, t1 = _scalar_time(t_from, "t_from"), _scalar_time(t_to, "t_to")
    sig0, sig1 = (float(schedule.sigma_tilde(_f64(t))) for t in (t0, t1))
    shape, batch = x.shape, x.shape[0]
    xbar0 = x.detach().to(torch.float64).cpu() * math.sqrt(1 + sig0 * sig0)  # x̄ = x/sqrt(ᾱ)

    def rhs(sigma: float, y):
        xb = torch.from_numpy(y).reshape(shape).to(x.device)
        t = schedule.timestep_from_sigma(torch.tensor([sigma], dtype=torch.float64))
        ab = 1.0 / (1.0 + sigma * sigma)  # exactly consistent with x̄ = x/sqrt(ᾱ)
        eps = eps_fn(math.sqrt(ab) * xb, t.to(x.device).expand(batch))
        return eps.detach().to(torch.float64).cpu().reshape(-1).numpy()

    if sig0 == sig1:
        return x.clone()
    sol = solve_ivp(rhs, (sig0, sig1), xbar0.reshape(-1).numpy(), "DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference_flow: solve_ivp failed: {sol.message}")
    xbar1 = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    return (xbar1 / math.sqrt(1 + sig1 * sig1)).to(device=x.device, dtype=x.dtype)
