"""Pure sampling methods: ``SAMPLERS[name](eps_fn, x, timesteps, schedule, **options) -> x_N``.

``eps_fn(x, t) -> ε`` with t a float64 (batch,) tensor on x's device; ``timesteps`` is the strictly
decreasing grid t_0 > ... > t_N (the model is not called at the target t_N, except where a method's
docstring says so); ``schedule`` is any object with ``alpha_bar(t)`` (float64). Samplers do not
mutate their inputs, keep no state and keep x in its own dtype. Each docstring gives the NFE.

Each fixed-step method is written once, as a plan whose run asks for its model calls one at a time
(`pndm.samplers.calls`): the pure loop above and the diffusers schedulers of `pndm.compat` drive
the same code (``SAMPLERS[name].plan(...)``).
"""

from __future__ import annotations

from typing import Any

from pndm.checks import check_choice
from pndm.samplers.core import AB_WEIGHTS, linear_combination, transfer, transfer_coefficients

# Methods under private names: ``pndm.samplers.ddim`` etc. stay the modules.
from pndm.samplers.ddim import ddim as _ddim
from pndm.samplers.dpmpp import dpmpp_2m as _dpmpp_2m
from pndm.samplers.ipndm import ipndm as _ipndm
from pndm.samplers.method import Method
from pndm.samplers.pec import pec as _pec
from pndm.samplers.pec_adaptive import pec_adaptive as _pec_adaptive
from pndm.samplers.pec_data import pec_data as _pec_data
from pndm.samplers.pf import pf as _pf
from pndm.samplers.plms import plms as _plms
from pndm.samplers.pndm import f_pndm as _f_pndm
from pndm.samplers.pndm import fon as _fon
from pndm.samplers.pndm import fon_orig as _fon_orig
from pndm.samplers.pndm import s_pndm as _s_pndm
from pndm.samplers.vab import vab as _vab

SAMPLERS: dict[str, Method] = {
    "ddim": _ddim,
    "s-pndm": _s_pndm,
    "f-pndm": _f_pndm,
    "fon": _fon,
    "fon-orig": _fon_orig,
    "plms": _plms,
    "ipndm": _ipndm,
    "pf": _pf,
    "vab": _vab,
    "pec": _pec,
    "dpmpp-2m": _dpmpp_2m,
    "pec-adaptive": _pec_adaptive,
    "pec-data": _pec_data,
}


def get_sampler(name: str) -> Method:
    """The sampling method called ``name``; lists the valid names on a typo."""
    if name not in SAMPLERS:
        check_choice("method", name, tuple(SAMPLERS))
    return SAMPLERS[name]


def nfe(name: str, n: int, **options: Any) -> int | None:
    """Model calls of method ``name`` for n steps with these options (None: adaptive, as pf)."""
    return get_sampler(name).nfe(n, **options)


__all__ = [
    "AB_WEIGHTS",
    "SAMPLERS",
    "Method",
    "get_sampler",
    "linear_combination",
    "nfe",
    "transfer",
    "transfer_coefficients",
]
