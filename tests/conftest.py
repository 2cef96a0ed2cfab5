"""Helpers shared by the test modules (import them: ``from conftest import ...``).

- ``one_thread``: a module-scoped fixture that runs a module's tests (and its module-scoped model
  fixtures) on one torch thread and restores the thread count afterwards, so no module changes
  global torch state for the next. Tiny convolutions gain nothing from a second thread on the
  suite's shared cores, and one thread makes oneDNN's summation order fixed. Use it with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``assert_one_line_error``: the CLI's contract for a user error: exit 2, one stderr line.
- ``rel``: relative error in float64.
- ``SMALL_UNET``: a small two-level UNet2DModel config with attention (16x16, 3 channels).
- ``TINY_UNET``, ``tiny_unet``, ``tiny_pipeline_folder``: an 8x8 RGB UNet (any field overridden)
  that runs in milliseconds, seeded, and a pipeline folder holding one.
- ``cli_sample``: ``pndm sample`` in this process, fast (``FAST_SAMPLE``: later flags win).
- ``GRID``, ``tuned``: a full grid and a `Tuned` result as the tuner returns it.
- ``TINY_TRAIN``: TrainConfig fields of a trainer run that takes milliseconds per step.
- ``assert_rounding_close``: float32 tolerances that follow the machine's own rounding.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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

TINY_UNET = {  # 8x8 RGB, attention at the coarse level
    "sample_size": 8,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None,
}
GREY = {"in_channels": 1, "out_channels": 1}  # overrides: one channel
PLAIN = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
FAST_SAMPLE = ["--steps", "4", "--no-progress", "--threads", "1"]

# A UNet small enough that a training step takes milliseconds (pndm.train.TrainConfig fields).
TINY_TRAIN = {
    "resolution": 8,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "batch_size": 8,
    "warmup_steps": 2,
    "ema_decay": 0.9,
    "progress": False,
}


def tiny_unet(seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised ``TINY_UNET`` (``overrides`` change any field), seeded."""
    from pndm.models.unet_2d import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**{**TINY_UNET, **overrides}).eval()


def tiny_pipeline_folder(folder: Path, seed: int = 0, **overrides: Any) -> Path:
    """A pipeline folder of a `tiny_unet` and a default PNDMScheduler; returns ``folder``."""
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.compat.scheduler import PNDMScheduler

    unet = tiny_unet(seed, **overrides)
    PNDMPipeline(unet=unet, scheduler=PNDMScheduler()).save_pretrained(folder)
    return folder


GRID = [999.0, 700.25, 400.5, 120.0, 10.0, -1.0]  # a full grid: model times, then the target


def tuned(timesteps: tuple[float, ...] = tuple(GRID), method: str = "ipndm", **options: Any):
    """A `pndm.tuning.Tuned` as the tuner returns it (by default 4 calls: ipndm with afs on 5
    steps); its NFE is the method's on that grid with those options, as a grid file requires."""
    from pndm.samplers import get_sampler
    from pndm.tuning import Tuned

    if not options and "afs" in get_sampler(method).options:
        options = {"afs": True}
    calls = get_sampler(method).nfe(len(timesteps) - 1, **options)
    return Tuned(torch.tensor(timesteps, dtype=torch.float64), method, calls, options,
                 error=0.1, start_error=0.2, model_calls=300, seconds=1.5)  # fmt: skip


def cli_sample(*args: str, model: Path | None = None) -> int:
    """``pndm sample`` in this process with ``FAST_SAMPLE`` (flags in ``args`` win), on the
    pipeline folder ``model`` (default: the shipped one)."""
    from pndm.cli import main

    chosen = [] if model is None else ["--model", str(model)]
    return main(["sample", *FAST_SAMPLE, *chosen, *args])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", help="also run the tests marked slow (as CI does)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (torchrun, subprocess kills, an inductor compile) run only with
    ``--slow`` or PNDM_SLOW=1; a plain ``pytest`` stays quick and reports them as skipped."""
    if config.getoption("--slow") or os.environ.get("PNDM_SLOW"):
        return
    gate = pytest.mark.skip(reason="slow: run with --slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(gate)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    from pndm.runtime.devices import torch_threads

    with torch_threads(1):
        yield


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


class Counter:
    """An eps_fn wrapper that checks each call's times and records them (``calls`` counts them)."""

    def __init__(self, eps_fn: Any) -> None:
        self.eps_fn, self.times = eps_fn, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.float64 and t.shape == (x.shape[0],) and t.device == x.device
        self.times.append(float(t[0]))
        return self.eps_fn(x, t)

    @property
    def calls(self) -> int:
        return len(self.times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def read_only_folder(folder: Path) -> Path:
    """A folder nobody can write to, root included (chmod, plus chattr +i where root)."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    pytest.skip("cannot make a read-only folder on this file system as this user")


def unlock(folder: Path) -> None:
    """Undo ``read_only_folder``'s chattr +i (so pytest can remove the folder)."""
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)


@pytest.fixture(scope="module", autouse=True)
def _global_torch_state_is_restored() -> Iterator[None]:
    """No test module may leave torch's process-wide settings changed for the next module."""
    before = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled())
    yield
    after = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled())
    assert after == before, f"(threads, default dtype, grad mode) changed: {before} -> {after}"


# A float32 result computed by other kernels (Winograd, channels-last, another batch size, ours
# vs diffusers or the original code) is within this many times the plain float32 path's own
# error against float64. Measured 0.67-2.04x over the 36 seeded comparisons of the suite, on
# AVX2 and with oneDNN and MKL held to AVX and to SSE4.1 (ONEDNN_MAX_CPU_ISA,
# MKL_ENABLE_INSTRUCTIONS: other blockings and orders of summation, as AVX-512's are); a
# wrong Winograd coefficient (one entry of B^T off by 1e-3) fails by orders of magnitude.
ROUNDING_FACTOR = 4


def _as_array(a: Any) -> np.ndarray:
    return a.detach().double().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def assert_rounding_close(got: Any, plain: Any, exact: Any, factor: float = ROUNDING_FACTOR):
    """``got`` and ``plain`` are the same float32 computation by different kernels, ``exact``
    its float64 value: max |got - exact| <= factor * max |plain - exact| (+ one float32 ulp of
    the values' scale, should plain happen to be exact). The bound scales with the rounding of
    the machine the test runs on (AVX2 and AVX-512 change the order of summation, not the size
    of the error), so it holds on any x86-64 CPU, and the seed only picks which inputs."""
    got, plain, exact = _as_array(got), _as_array(plain), _as_array(exact)
    scale = float(np.abs(exact).max()) * 2.0**-24
    own = float(np.abs(plain - exact).max())
    error = float(np.abs(got - exact).max())
    assert error <= factor * own + scale, f"error {error:.3g} > {factor} x plain's {own:.3g}"
