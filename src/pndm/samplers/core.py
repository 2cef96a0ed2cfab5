"""The PNDM decomposition: one transfer part φ (paper eq. 9) and gradient estimates around it.

Notation map (paper -> code):
    ᾱ_t (alphas_cumprod at time t)  -> ``alpha_bar``, ``a`` (current) and ``b`` (target)
    σ̃ = sqrt((1-ᾱ)/ᾱ)               -> ``sigma_tilde``
    ε_θ(x, t)                        -> ``eps_fn(x, t)``; e_n = ε_θ(x_n, t_n)
    φ(x_t, ε_t, t, t-δ)              -> ``transfer(x, eps, a, b)``
    ε' (the method's noise estimate) -> ``eps_prime``
Every PNDM-family step is x_{n+1} = φ(x_n, ε', t_n -> t_{n+1}); methods differ only in ε'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Equal-step Adams-Bashforth weights for orders 1..4, newest first (e_n, e_{n-1}, ...).
AB_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def transfer_coefficients(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_x, c_ε) with φ(x, ε, a->b) = c_x x + c_ε ε, in float64 (paper eq. 9).

    c_ε is written as -(b-a)/(sqrt(a)(sqrt((1-b)a) + sqrt((1-a)b))): the textbook form
    sqrt(1-b) - sqrt(b/a)sqrt(1-a) cancels catastrophically when b is close to a.
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64, device=a.device)
    c_x = (b / a).sqrt()
    c_eps = -(b - a) / (a.sqrt() * (((1 - b) * a).sqrt() + ((1 - a) * b).sqrt()))
    return c_x, c_eps


def _per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    c = c.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64)
    return c.reshape(-1, *([1] * (x.ndim - 1))) if c.ndim == 1 else c


def transfer(x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """φ(x, ε, ᾱ=a -> ᾱ=b): the deterministic DDIM step, exact on the data manifold (eq. 9).

    ``a`` and ``b`` are ᾱ at the current and target time, scalars or one value per sample. The
    coefficients are formed in float64 and applied in x's dtype.
    """
    c_x, c_eps = transfer_coefficients(a, b)
    return _per_sample(c_x, x) * x + _per_sample(c_eps, x) * eps


def linear_combination(
    weights: Sequence[float] | torch.Tensor, history: list[torch.Tensor]
) -> torch.Tensor:
    """Σ_j w_j e_{n-j} for the newest-first history (stops at the shorter of the two).

    ``weights`` may be a row of a device tensor: its entries stay 0-d tensors, no host sync.
    """
    out = weights[0] * history[0]
    for w, e in zip(weights[1:], history[1:], strict=False):
        out = out + w * e
    return out
