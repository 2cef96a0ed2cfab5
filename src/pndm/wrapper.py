"""The one model-output wrapper: any parameterisation in, the noise prediction ε out.

Samplers only ever see ``eps_fn(x, t) -> ε``. This module turns a network's output (ε, v or x₀) into
ε, per evaluation, using ᾱ at the batch's times (algorithms.md §1):
    epsilon:       ε = output
    v_prediction:  ε = sqrt(ᾱ) v + sqrt(1 - ᾱ) x        (v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x₀)
    sample:        ε = (x - sqrt(ᾱ) x₀) / sqrt(1 - ᾱ)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pndm.checks import check_choice

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``eps_fn(x, t) -> ε``: the noise prediction, t a float64 (batch,) tensor on x's device."""

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _check_prediction_type(prediction_type: str) -> None:
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)


def eps_from_output(
    output: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor | float, prediction_type: str
) -> torch.Tensor:
    """ε from a model output of the given type, in x's dtype.

    ``alpha_bar`` is ᾱ at the times of the batch: a scalar or one value per sample. The square roots
    are taken in float64 and cast to x's dtype.
    """
    _check_prediction_type(prediction_type)
    output = output.to(x.dtype)
    if prediction_type == "epsilon":
        return output
    a = torch.as_tensor(alpha_bar, dtype=torch.float64).to(x.device)
    a = a.reshape(-1, *([1] * (x.ndim - 1))) if a.ndim == 1 else a
    root_a, root_1ma = a.sqrt().to(x.dtype), (1 - a).sqrt().to(x.dtype)
    if prediction_type == "v_prediction":
        return root_a * output + root_1ma * x
    return (x - root_a * output) / root_1ma  # "sample": undefined at ᾱ = 1


def model_output(result: Any) -> torch.Tensor:
    """The tensor of a model's return value: itself, its ``.sample``, or the first of a tuple."""
    if isinstance(result, torch.Tensor):
        return result
    if hasattr(result, "sample"):
        return result.sample
    if isinstance(result, tuple | list) and result and isinstance(result[0], torch.Tensor):
        return result[0]
    raise ValueError(
        f"the model returned {type(result).__name__}; expected a tensor, an object with .sample, "
        "or a tuple whose first entry is a tensor"
    )


def make_eps_fn(
    model: Callable[..., Any],
    schedule: Any,
    prediction_type: str = "epsilon",
    time_shift: float = 0.0,
    model_dtype: torch.dtype | None = None,
) -> EpsFn:
    """``eps_fn(x, t)``: calls ``model(x in model_dtype, t + time_shift)``, returns ε in x's dtype.

    ``time_shift`` is added to the time the network sees, not to the time ᾱ is read at (e.g. -1
    calls the network at τ - 1, the exact bridge to the original PNDM code, algorithms.md §4).
    ``model`` may return a tensor, an object with ``.sample`` (diffusers), or a tuple.
    """
    _check_prediction_type(prediction_type)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_in = x if model_dtype is None else x.to(model_dtype)
        # no shift, no add: keeps the samplers' stride-0 time, which the UNet embeds once
        output = model_output(model(x_in, t + time_shift if time_shift else t))
        alpha_bar = 1.0 if prediction_type == "epsilon" else schedule.alpha_bar(t)
        return eps_from_output(output, x, alpha_bar, prediction_type)

    return eps_fn


class NonFiniteOutput(ValueError):
    """The model returned NaN or inf: the images would be garbage, so none are returned."""


class Observed:
    """``eps_fn`` with ``callback(i, t, x)`` before model call i (from 0) and ``tick(1)`` after.

    Every call also records, on the device, whether its ε was finite (no host sync in the loop);
    `check_finite` reads all the records once, after the run, and names the first bad call.
    """

    def __init__(
        self,
        eps_fn: EpsFn,
        callback: Callable[[int, torch.Tensor, torch.Tensor], Any] | None = None,
        tick: Callable[[int], Any] | None = None,
    ) -> None:
        self.eps_fn, self.callback, self.tick = eps_fn, callback, tick
        self.finite: list[torch.Tensor] = []
        self.times: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.callback is not None:
            self.callback(len(self.finite), t, x)
        eps = self.eps_fn(x, t)
        self.finite.append(torch.isfinite(eps).all())
        self.times.append(t[:1])
        if self.tick is not None:
            self.tick(1)
        return eps

    def check_finite(self, x: torch.Tensor) -> None:
        """Raise `NonFiniteOutput` naming the first model call whose ε had NaN or inf (one sync)."""
        if self.finite:
            finite = torch.stack(self.finite).cpu()
            if not bool(finite.all()):
                i = int((~finite).nonzero()[0])
                t = float(self.times[i].item())
                raise NonFiniteOutput(
                    f"the model returned NaN or inf at model call {i + 1} of {len(self.finite)} "
                    f"(t = {t:g}); no images were produced. Check the weights and the dtype "
                    "(float16 can overflow; try float32 or bfloat16)"
                )
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteOutput("the sampler produced NaN or inf; no images were produced")
