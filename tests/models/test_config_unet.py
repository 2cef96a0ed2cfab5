"""A UNet config is checked field by field when it is read, before weights or sampling.

Each broken field gives one ValueError naming the field and what is valid; through the CLI that
is one line, exit 2, no traceback and no file written. Valid configs (ours, diffusers' defaults,
google/ddpm-cifar10-32's) still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from pndm.assets import shipped_model_path
from pndm.cli import main
from pndm.models import loading
from pndm.models.loading import read_unet_config
from pndm.models.unet_2d import DDPM_CIFAR10_CONFIG, UNet2DModel

SMALL = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=[8, 16],
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
)

# (field, bad value, words the message must hold: the field and the valid values)
BROKEN = [
    ("sample_size", 0, "positive multiple of 2"),
    ("sample_size", -8, "positive multiple of 2"),
    ("sample_size", 9, "positive multiple of 2"),
    ("sample_size", "8", "an integer or [height, width]"),
    ("sample_size", [8], "an integer or [height, width]"),
    ("sample_size", [8, 8, 8], "an integer or [height, width]"),
    ("sample_size", True, "an integer or [height, width]"),
    ("in_channels", -3, "integer >= 1"),
    ("in_channels", 0, "integer >= 1"),
    ("in_channels", 1.5, "integer >= 1"),
    ("out_channels", "3", "integer >= 1"),
    ("block_out_channels", [8, -16], "non-empty list of integers >= 1"),
    ("block_out_channels", [], "non-empty list of integers >= 1"),
    ("block_out_channels", 16, "non-empty list of integers >= 1"),
    ("block_out_channels", [8, 16.0], "non-empty list of integers >= 1"),
    ("down_block_types", ["DownBlock2D"], "2 names, one per block_out_channels entry"),
    ("up_block_types", ["UpBlock2D"] * 3, "2 names, one per block_out_channels entry"),
    ("up_block_types", "UpBlock2D", "a list of block type names"),
    ("down_block_types", ["DownBlock2D", 7], "a list of block type names"),
    ("layers_per_block", 0, "integer >= 1"),
    ("layers_per_block", -1, "integer >= 1"),
    ("layers_per_block", "2", "integer >= 1"),
    ("norm_num_groups", 3, "a divisor of every block_out_channels [8, 16]"),
    ("norm_num_groups", 0, "integer >= 1"),
    ("attn_norm_num_groups", 3, "a divisor of 16"),
    ("norm_eps", -1e-5, "a positive finite number"),
    ("norm_eps", "tiny", "a positive finite number"),
    ("dropout", 1.5, "a finite number in [0, 1]"),
    ("downsample_padding", -1, "an integer >= 0"),
    ("attention_head_dim", 0, "null or an integer >= 1"),
    ("time_embedding_dim", -4, "null or an integer >= 1"),
    ("freq_shift", 4, "less than block_out_channels[0] / 2 = 4"),
    ("mid_block_scale_factor", float("nan"), "a finite number"),
    ("center_input_sample", "yes", "True or False"),
    ("act_fn", 1, "a string"),
    ("time_embedding_type", "learned", "one of positional, fourier"),
]


@pytest.mark.parametrize(("key", "value", "valid"), BROKEN, ids=[f"{k}={v}" for k, v, _ in BROKEN])
def test_from_config_names_the_field_and_valid_values(key: str, value: object, valid: str) -> None:
    with pytest.raises(ValueError) as info:
        UNet2DModel.from_config({**SMALL, key: value})
    message = str(info.value)  # the one shape of pndm.checks: "<name> must be <valid>, got <value>"
    assert f"UNet config {key} must be" in message and f"got {value!r}" in message, message
    assert valid in message, message


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        {**SMALL, "sample_size": [8, 16]},
        {**SMALL, "sample_size": None},
        {**SMALL, "attention_head_dim": None, "norm_eps": 1e-6, "freq_shift": 1},
        DDPM_CIFAR10_CONFIG,
        {},  # diffusers' defaults
    ],
    ids=["small", "height-width", "no-size", "cifar-like", "cifar10", "defaults"],
)
def test_valid_configs_still_pass(config: dict) -> None:
    diffusers = pytest.importorskip("diffusers")
    diffusers.UNet2DModel.from_config(config)  # the oracle: diffusers takes it too
    import torch

    with torch.device("meta"):
        UNet2DModel.from_config(config)


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(shipped_model_path(), folder)
    return folder


def break_config(folder: Path, **changes: object) -> Path:
    path = folder / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def test_read_unet_config_names_the_file(model_copy: Path) -> None:
    path = break_config(model_copy, sample_size=0)
    with pytest.raises(ValueError, match=f"{path}: UNet config sample_size must be .*, got 0"):
        read_unet_config(path)


def test_from_pretrained_refuses_before_reading_weights(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_config(model_copy, block_out_channels=[32, -64, 64])

    def no_weights(*args: object) -> None:
        raise AssertionError("weights were read before the config was checked")

    monkeypatch.setattr(loading, "read_weights", no_weights)
    monkeypatch.setattr(loading, "find_weights", no_weights)
    with pytest.raises(ValueError, match="block_out_channels"):
        UNet2DModel.from_pretrained(model_copy, subfolder="unet")


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sample_size": 0}, "sample_size must be"),  # was a ZeroDivisionError after loading
        ({"block_out_channels": [32, -64, 64]}, "block_out_channels"),  # was a torch RuntimeError
        ({"in_channels": -1}, "in_channels must be an integer >= 1, got -1"),
        ({"sample_size": [16]}, "sample_size must be an integer or [height, width]"),  # IndexError
        ({"layers_per_block": "2"}, "layers_per_block must be an integer >= 1, got '2'"),
        ({"norm_eps": -1}, "norm_eps must be a positive finite number, got -1"),  # was NaN images
        ({"down_block_types": ["DownBlock2D"]}, "down_block_types"),
    ],
)
@pytest.mark.parametrize("out", ["sheet.png", "folder/", "images.npz"])
def test_cli_sample_refuses_a_broken_config_in_one_line(
    model_copy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict,
    needle: str,
    out: str,
) -> None:
    break_config(model_copy, **change)
    (tmp_path / "out").mkdir()
    before = files_under(tmp_path)
    target = f"{tmp_path / 'out'}/{out}"
    code = main(["sample", "--model", str(model_copy), "--out", target, "--no-progress"])
    assert_one_line_error(capsys, code, needle, "config.json")
    assert files_under(tmp_path) == before and not any((tmp_path / "out").iterdir())


def test_cli_info_refuses_a_broken_config_in_one_line(
    model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_config(model_copy, sample_size=0)
    code = main(["info", str(model_copy)])
    assert_one_line_error(capsys, code, "sample_size must be", "got 0")
