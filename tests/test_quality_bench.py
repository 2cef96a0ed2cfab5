"""benchmarks/quality.py's diffusers harness: each scheduler gets the exact ε at the ᾱ it assumes
and ends at ᾱ_0, so with many steps it converges to the exact flow at its own order.

On the 2-D mixture of algorithms.md §6 with the discrete linear schedule. A wrong time (e.g. the
rounded model time diffusers uses for Karras grids) stalls UniPC at 2.8e-4 (here 2.5e-5); a wrong
end point (Heun left ending at σ = 0) gives 9.6e-3 (here 6.9e-3).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("scipy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402

from pndm.analytic import GaussianMixture, reference_flow  # noqa: E402
from pndm.schedule import NoiseSchedule  # noqa: E402

CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}
PEERS = {peer.name: peer for peer in quality.PEERS}


@pytest.fixture(scope="module")
def problem() -> quality.Problem:
    schedule = NoiseSchedule.from_config(CONFIG)
    gmm = GaussianMixture((0.5, 0.3, 0.2), ((-1.0, 0.5), (1.0, 1.0), (0.3, -1.2)), (0.3, 0.2, 0.4))
    noise = torch.randn((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    toy = quality.Problem("toy", gmm.eps_fn(schedule), schedule, CONFIG, noise)
    toy.reference = reference_flow(toy.eps_fn, noise, 999.0, 0.0, schedule, 1e-10, 1e-10)
    return toy


@pytest.mark.parametrize(
    ("name", "option", "steps", "min_ratio", "max_error"),
    [
        ("DDIM", {"timestep_spacing": "trailing"}, 50, 1.8, 2e-2),  # ᾱ[t], order 1
        (
            "UniPC",  # fractional Karras times, order 3 or more
            {"timestep_spacing": "trailing", "use_karras_sigmas": True, "solver_order": 3},
            50,
            8.0,
            5e-5,
        ),
        ("Euler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}, 50, 1.8, 2e-2),
        ("Heun", {"timestep_spacing": "trailing", "use_karras_sigmas": True}, 25, 3.0, 8e-3),
    ],
)
def test_peer_converges_to_exact_flow(problem, name, option, steps, min_ratio, max_error):
    errors = []
    for n in (steps, 2 * steps):
        scheduler = quality.make_scheduler(PEERS[name], CONFIG, option, n)
        x, calls = quality.run_peer(problem, PEERS[name], scheduler)
        assert calls == len(scheduler.timesteps)
        errors.append(problem.error(x))
    assert errors[1] < max_error
    assert errors[0] / errors[1] > min_ratio  # the method's own order: no stall
