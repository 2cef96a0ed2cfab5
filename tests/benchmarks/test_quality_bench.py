"""benchmarks/quality.py's diffusers harness: each scheduler gets the exact ε at the ᾱ it assumes
and ends at ᾱ_0, so with many steps it converges to the exact flow at its own order.

On the 2-D mixture of algorithms.md §6 with the discrete linear schedule. A wrong time (e.g. the
rounded model time diffusers uses for Karras grids) stalls UniPC at 2.8e-4 (here 2.5e-5); a wrong
end point (Heun left ending at σ = 0) gives 9.6e-3 (here 6.9e-3).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("scipy")
from benchlib import peers  # noqa: E402  (benchmarks/ is on pytest's pythonpath)
from benchlib.problems import Problem  # noqa: E402

from pndm.analytic import GaussianMixture, reference_flow  # noqa: E402
from pndm.schedule import NoiseSchedule  # noqa: E402

CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}
PEERS = {peer.name: peer for peer in peers.PEERS}


@pytest.fixture(scope="module")
def problem() -> Problem:
    schedule = NoiseSchedule.from_config(CONFIG)
    gmm = GaussianMixture((0.5, 0.3, 0.2), ((-1.0, 0.5), (1.0, 1.0), (0.3, -1.2)), (0.3, 0.2, 0.4))
    noise = torch.randn((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    toy = Problem("toy", gmm.eps_fn(schedule), schedule, CONFIG, noise)
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
        scheduler = peers.make_scheduler(PEERS[name], CONFIG, option, n)
        x, calls = peers.run_peer(problem, PEERS[name], scheduler)
        assert calls == len(scheduler.timesteps)
        errors.append(problem.error(x))
    assert errors[1] < max_error
    assert errors[0] / errors[1] > min_ratio  # the method's own order: no stall


def test_benchlib_comes_from_pytest_configuration_not_sys_path_edits() -> None:
    """benchmarks/ is on pytest's ``pythonpath`` (pyproject.toml); no test edits sys.path."""
    tests = Path(__file__).resolve().parents[1]
    edit = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path \+?=")
    editing = [p.name for p in tests.rglob("*.py") if edit.search(p.read_text(encoding="utf-8"))]
    assert editing == []
    assert Path(peers.__file__).resolve().parent == tests.parent / "benchmarks" / "benchlib"
