"""The model-output wrapper: every parameterisation gives back the true ε.

Golden values: x = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε built here from known x0 and ε, and the definitions
v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0 (algorithms.md §1); tolerance 1e-12 on O(1) float64 values (a few
roundings, amplified by at most 1/sqrt(1-ᾱ) <= 10 for ᾱ <= 0.99).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pndm.schedule import VPSchedule
from pndm.wrapper import eps_from_output, make_eps_fn

VP = VPSchedule()


def _noised(batch: int = 5):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, batch, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(batch, generator=g, dtype=torch.float64) * 0.9 + 0.05
    a = VP.alpha_bar(t)[:, None, None, None]
    return x0, eps, a.sqrt() * x0 + (1 - a).sqrt() * eps, t, a


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_eps_from_output_recovers_eps(prediction_type):
    x0, eps, x, t, a = _noised()
    output = {
        "epsilon": eps,
        "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0,
        "sample": x0,
    }[prediction_type]
    got = eps_from_output(output, x, VP.alpha_bar(t), prediction_type)
    torch.testing.assert_close(got, eps, rtol=0, atol=1e-12)


def test_unknown_prediction_type_lists_choices():
    x = torch.zeros(1, 2)
    with pytest.raises(
        ValueError, match="prediction_type must be one of epsilon, v_prediction, sample"
    ):
        eps_from_output(x, x, 0.5, "v")
    with pytest.raises(ValueError, match="prediction_type must be one of .*, got 'x0'"):
        make_eps_fn(lambda x, t: x, VP, prediction_type="x0")


@pytest.mark.parametrize("wrap", ["tensor", "sample_attr", "tuple"])
def test_make_eps_fn_v_model(wrap):
    """A v-model returning a tensor, an object with .sample, or a tuple; ε comes back exactly."""
    x0, eps, x, t, a = _noised()
    seen = {}

    def model(x_in, t_in):
        seen["t"] = t_in
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        return {"tensor": v, "sample_attr": SimpleNamespace(sample=v), "tuple": (v,)}[wrap]

    got = make_eps_fn(model, VP, prediction_type="v_prediction")(x, t)
    torch.testing.assert_close(got, eps, rtol=0, atol=1e-12)
    assert torch.equal(seen["t"], t)


def test_make_eps_fn_time_shift_and_dtypes():
    """The model sees x in model_dtype and t + time_shift; ε comes back in x's dtype."""
    seen = {}

    def model(x_in, t_in):
        seen["dtype"], seen["t"] = x_in.dtype, t_in
        return torch.ones_like(x_in)

    x = torch.randn(3, 2)
    t = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    eps = make_eps_fn(model, VP, time_shift=-1.0, model_dtype=torch.float16)(x, t)
    assert seen["dtype"] == torch.float16 and seen["t"].tolist() == [9.0, 19.0, 29.0]
    assert eps.dtype == torch.float32 and torch.equal(eps, torch.ones(3, 2))


def test_make_eps_fn_rejects_odd_outputs():
    with pytest.raises(ValueError, match="expected a tensor"):
        make_eps_fn(lambda x, t: {"sample": x}, VP)(torch.zeros(1, 2), torch.zeros(1))
