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
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

# Equal-step Adams-Bashforth weights for orders 1..4, newest first (e_n, e_{n-1}, ...).
AB_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def equal_step_table(orders: Sequence[int]) -> torch.Tensor:
    """Fixed equal-step AB weights (AB_WEIGHTS), row n of order ``orders[n]``, whatever the grid."""
    table = torch.zeros(len(orders), max(orders, default=1), dtype=torch.float64)
    for n, k in enumerate(orders):
        table[n, :k] = torch.tensor(AB_WEIGHTS[k - 1], dtype=torch.float64)
    return table


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta warm-up step: nodes c, stage rows a, weights b (Butcher tableau).

    Pseudo (paper eq. 13): stage i calls e_i = ε(x_i, t_n + c_i h) at x_i = φ(x_n, Σ_j a_ij e_j,
    t_n -> t_n + c_i h) and ε' = Σ_i b_i e_i. Classical (FON): x_i = x_n + c_i h Σ_j a_ij k_j and
    D = Σ_i b_i k_i. So each row sums to 1 (Butcher's a_ij is c_i times ours). ``a[i - 1]`` is the
    row of stage i >= 1 (stage 0 is e_n at t_n). Nodes are 0, 1/2 or 1, the times `Grid` has.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        shape_ok = len(self.a) == len(self.c) - 1 and len(self.b) == len(self.c)
        if not shape_ok or self.c[0] != 0 or not set(self.c) <= {0.0, 0.5, 1.0}:
            raise ValueError(
                "a Tableau needs c_0 = 0, nodes c_i in {0, 1/2, 1}, one a-row per stage after the "
                f"first and one b per stage; got c={self.c}, a={self.a}, b={self.b}"
            )


# Runge-Kutta order 4 (pseudo RK4 in F-PNDM, paper eq. 13; classical RK4 in FON).
RK4 = Tableau(
    c=(0.0, 0.5, 0.5, 1.0),
    a=((1.0,), (0.0, 1.0), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
# Euler, order 1: ε' = e_n, the DDIM step (AB1).
EULER = Tableau(c=(0.0,), a=(), b=(1.0,))
# Improved Euler (Heun), order 2: a predictor to t_{n+1}, then the mean of the two slopes.
IMPROVED_EULER = Tableau(c=(0.0, 1.0), a=((1.0,),), b=(1 / 2, 1 / 2))


Time = TypeVar("Time", float, torch.Tensor)


def stage_time(c: float, t: Time, t_next: Time) -> Time:
    """t_n + c h_n, written so that c = 0, 1/2, 1 give t_n, (t_n + t_{n+1})/2, t_{n+1} exactly."""
    return (1 - c) * t + c * t_next


@dataclass(frozen=True)
class Multistep:
    """A pseudo linear multistep method's gradient part as data (paper §3.3, eq. 12).

    The first ``warmup_steps`` steps take ε' from the ``warmup`` tableau; step n after them takes
    the equal-step AB row of order min(n + 1, ``order``, caps[n]) on (e_n, e_{n-1}, ...).
    """

    order: int
    warmup: Tableau = EULER
    warmup_steps: int = 0

    def orders(self, steps: int, caps: Sequence[int] | None = None) -> list[int]:
        """The AB order of each of ``steps`` steps (warm-up steps included, their rows unused).

        ``caps[n]`` bounds the order of step n (``lower_order_final``); none by default.
        """
        caps = [self.order] * steps if caps is None else caps
        return [min(n + 1, self.order, cap) for n, cap in zip(range(steps), caps, strict=True)]

    def without_warmup(self) -> Multistep:
        """The Adams part alone, from a first step of order 1: a run started mid-schedule."""
        return replace(self, warmup=EULER, warmup_steps=0)


S_PNDM = Multistep(order=2, warmup=IMPROVED_EULER, warmup_steps=1)
F_PNDM = Multistep(order=4, warmup=RK4, warmup_steps=3)  # also FON's, on the ODE in t
PLMS = Multistep(order=4, warmup=IMPROVED_EULER, warmup_steps=1)
IPNDM = Multistep(order=4)


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

    ``weights`` may be a row of a device tensor: its entries stay 0-d tensors, no host sync. The
    sum accumulates in place (the same roundings as out + w e, without a new tensor per term).
    """
    out = weights[0] * history[0]
    term = torch.empty_like(out) if len(history) > 1 and len(weights) > 1 else out
    for w, e in zip(weights[1:], history[1:], strict=False):
        out.add_(torch.mul(w, e, out=term))
    return out
