"""Pure sampling methods: ``SAMPLERS[name](eps_fn, x, timesteps, schedule, **options) -> x_N``.

``eps_fn(x, t) -> ε`` with t a float64 (batch,) tensor on x's device; ``timesteps`` is the strictly
decreasing grid t_0 > ... > t_N (the model is not called at the target t_N, except where a method's
docstring says so); ``schedule`` is any object with ``alpha_bar(t)`` (float64). Samplers do not
mutate their inputs, keep no state and keep x in its own dtype. Each docstring gives the NFE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pndm.samplers._checks import check_options
from pndm.samplers.core import AB_WEIGHTS, linear_combination, transfer, transfer_coefficients

# Functions under private names: ``pndm.samplers.ddim`` etc. stay the modules.
from pndm.samplers.ddim import ddim as _ddim
from pndm.samplers.dpmpp import dpmpp_2m as _dpmpp_2m
from pndm.samplers.ipndm import ipndm as _ipndm
from pndm.samplers.pec import pec as _pec
from pndm.samplers.pf import pf as _pf
from pndm.samplers.plms import plms as _plms
from pndm.samplers.pndm import f_pndm as _f_pndm
from pndm.samplers.pndm import fon as _fon
from pndm.samplers.pndm import fon_orig as _fon_orig
from pndm.samplers.pndm import s_pndm as _s_pndm
from pndm.samplers.vab import vab as _vab

Sampler = Callable[..., torch.Tensor]

SAMPLERS: dict[str, Sampler] = {
    fn.method_name: fn  # type: ignore[attr-defined]
    for fn in (_ddim, _s_pndm, _f_pndm, _fon, _fon_orig, _plms, _ipndm, _pf, _vab, _pec, _dpmpp_2m)
}


def get_sampler(name: str) -> Sampler:
    """The sampling function called ``name``; lists the valid names on a typo."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def nfe(name: str, n: int, **options: Any) -> int | None:
    """Model calls of method ``name`` for n steps with these options (None: adaptive, as pf)."""
    fn = get_sampler(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of steps must be an integer >= 1, got {n!r}")
    check_options(name, options, fn.options)  # type: ignore[attr-defined]
    return fn.nfe(n, **options)  # type: ignore[attr-defined]


__all__ = [
    "AB_WEIGHTS",
    "SAMPLERS",
    "get_sampler",
    "linear_combination",
    "nfe",
    "transfer",
    "transfer_coefficients",
]
