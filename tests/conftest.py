"""Helpers shared by the test modules (import them: ``from conftest import ...``).

- ``one_thread``: a module-scoped fixture that runs a module's tests (and its module-scoped model
  fixtures) on one torch thread and restores the thread count afterwards, so no module changes
  global torch state for the next. Tiny convolutions gain nothing from a second thread on the
  suite's shared cores, and one thread makes oneDNN's summation order fixed. Use it with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``assert_one_line_error``: the CLI's contract for a user error: exit 2, one stderr line.
- ``rel``: relative error in float64.
- ``SMALL_UNET``: a small two-level UNet2DModel config with attention (16x16, 3 channels).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

SMALL_UNET = {  # two levels, attention at the coarse one
    "block_out_channels": (16, 32),
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "sample_size": 16,
}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    """A user error: exit status 2, exactly one stderr line ``pndm: error: ...`` holding every
    needle, no traceback. Returns the line."""
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("pndm: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module", autouse=True)
def _global_torch_state_is_restored() -> Iterator[None]:
    """No test module may leave torch's process-wide settings changed for the next module."""
    before = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled())
    yield
    after = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled())
    assert after == before, f"(threads, default dtype, grad mode) changed: {before} -> {after}"
