"""The shared argument checks (`pndm.checks`): one bound and one message shape,
"<name> must be <what is valid>, got <value>", and the sites that used to let look-alikes through
(a truthy "no", 1000.0 for an integer, True for a positive number, NaN, inf)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pndm.checks import (
    check_choice,
    check_count,
    check_flag,
    check_number,
    check_positive,
    check_seed,
)


@pytest.mark.parametrize(
    ("check", "args", "message"),
    [
        (check_count, ("n", 0), "n must be an integer >= 1, got 0"),
        (check_count, ("n", 3.0), "n must be an integer >= 1, got 3.0"),
        (check_count, ("n", True), "n must be an integer >= 1, got True"),
        (check_count, ("n", 11, 0, 10), "n must be an integer in [0, 10], got 11"),
        (check_flag, ("f", "no"), "f must be True or False, got 'no'"),
        (check_flag, ("f", 1), "f must be True or False, got 1"),
        (check_positive, ("p", 0), "p must be a positive finite number, got 0"),
        (check_positive, ("p", math.inf), "p must be a positive finite number, got inf"),
        (check_positive, ("p", True), "p must be a positive finite number, got True"),
        (check_number, ("x", math.nan), "x must be a finite number, got nan"),
        (check_number, ("x", 2, 0, 1), "x must be a finite number in [0, 1], got 2"),
        (check_choice, ("c", "d", ("a", "b")), "c must be one of a, b, got 'd'"),
        (check_choice, ("c", True, (1, 2)), "c must be one of 1, 2, got True"),
        (check_choice, ("c", 2.0, (1, 2)), "c must be one of 1, 2, got 2.0"),
        (check_seed, (-1,), "seeds must be integers in [0, 2**64), got -1"),
    ],
)
def test_one_message_shape(check, args, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check(*args)
    assert str(info.value) == message


def test_good_values_pass_unchanged() -> None:
    assert check_count("n", np.int64(4)) == 4 and isinstance(check_count("n", np.int64(4)), int)
    assert check_flag("f", False) is False
    assert check_positive("p", 2) == 2.0 and check_number("x", -3.5) == -3.5
    assert check_choice("c", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"got 'x' \(because\)"):
        check_choice("c", "x", ("a",), why="because")


def test_sites_refuse_look_alikes(tmp_path) -> None:
    """Each of these passed before (a truthy "no" turned the option on, 1000.0 was an integer,
    True a positive number): now each is refused by name."""
    from pndm.compat.convert import convert_checkpoint
    from pndm.grids import edm, time_uniform
    from pndm.jobs.job import SampleJob, check_job
    from pndm.runtime.fast import FastCache, prepare_model
    from pndm.schedule import VPSchedule, make_betas
    from pndm.train.config import TrainConfig
    from pndm.tuning import tune

    cases = [
        (lambda: make_betas(1000.0), "num_train_timesteps must be an integer in [2, 100000]"),
        (lambda: edm(VPSchedule(), 5, rho=True), "rho must be a positive finite number"),
        (lambda: time_uniform(VPSchedule(), 5, rho=math.nan), "rho must be a positive finite"),
        (
            lambda: tune(
                lambda x, t: x,
                VPSchedule(),
                torch.zeros(1, 2),
                method="ddim",
                nfe=2,
                search_options="no",
            ),
            "search_options must be True or False",
        ),  # fmt: skip
        (
            lambda: check_job(SampleJob(out=str(tmp_path / "s.png"), seeds=[0], progress="no")),
            "progress must be True or False",
        ),  # fmt: skip
        (
            lambda: TrainConfig(output_dir=tmp_path / "o", attention="no"),
            "attention must be True or False",
        ),  # fmt: skip
        (
            lambda: TrainConfig(output_dir=tmp_path / "o", seed=np.int64(-1)),
            "seed must be an integer in [0, ",
        ),  # fmt: skip
        (
            lambda: prepare_model(torch.nn.Identity(), FastCache(), channels_last="no"),
            "channels_last must be True or False",
        ),  # fmt: skip
        (
            lambda: convert_checkpoint(tmp_path / "x.pth", tmp_path / "o", ema="no"),
            "ema must be True or False",
        ),  # fmt: skip
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert message in str(info.value), (message, info.value)
    assert TrainConfig(output_dir=tmp_path / "o", seed=np.int64(5)).seed == 5  # np ints count
