"""``pndm tune``'s limits on the command line (issue 22): ``--samples 1000000000`` grew to 22 GB
and was killed, ``--nfe 1000000`` ran without end. Each is refused in one line, within seconds,
before any model call, writing nothing; ``--help`` names the limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error

from pndm.cli import main


@pytest.fixture
def no_tuning(monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tuner ran")

    monkeypatch.setattr("pndm.tuning.tune_pipeline", refuse)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--samples", "1000000000"], "samples must be at most"),
        (["--nfe", "1000000"], "argument --nfe: must be an integer in [1, 199], got '1000000'"),
        (["--nfe", "200"], "argument --nfe: must be an integer in [1, 199]"),
        (["--iterations", "100000000"], "argument --iterations: must be an integer in [1, 10000]"),
        (["--seed", "100000000000000000000"], "seed must be below"),
    ],
)
def test_absurd_sizes_are_refused(tmp_path: Path, capsys, no_tuning, flags, needle) -> None:
    out = tmp_path / "grid.json"
    argv = ["tune", "--method", "ipndm", "--nfe", "4", "--out", str(out), "--device", "cpu"]
    start = time.perf_counter()
    code = main([*argv, *flags])  # later flags win
    assert time.perf_counter() - start < 20  # the model's load and hash; no model call
    assert_one_line_error(capsys, code, needle)
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_limits(capsys) -> None:
    assert main(["tune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "at most 199 (fewer than the teacher's 200)" in text
    assert "at most 10000" in text and "at most what fits in the device's free memory" in text
    assert main(["sample", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "at most 1000 and the model's num_train_timesteps" in text
