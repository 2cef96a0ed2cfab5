"""The `pndm` command line: help, one-line user errors with exit status 2, train and info."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from pndm.assets import shipped_model_path
from pndm.cli import main

TINY_TRAIN = [
    "--resolution", "8", "--block-out-channels", "8", "16", "--layers-per-block", "1",
    "--norm-num-groups", "8", "--batch-size", "4", "--steps", "2", "--no-progress",
]  # fmt: skip


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["info", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "usage: pndm" in capsys.readouterr().out


def test_console_script_help() -> None:
    exe = shutil.which("pndm")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "pndm.cli", "--help"]
    if not exe:
        pytest.skip("the pndm console script is not on PATH")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "info" in result.stdout


def test_help_does_not_import_torch() -> None:
    """Building every subcommand's parser (all that --help needs) leaves torch unimported."""
    code = "import sys, pndm.cli; pndm.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_each_command_module_is_registered_and_runs_its_own_run() -> None:
    """One module per command under pndm.cli: its ``add`` is listed in SUBCOMMANDS and the
    parser it registers runs that module's ``run`` (a new command module cannot be left out)."""
    import importlib
    import pkgutil

    import pndm.cli
    from pndm.cli.entry import SUBCOMMANDS

    shared = {"__main__", "args", "entry", "signals"}
    names = {m.name for m in pkgutil.iter_modules(pndm.cli.__path__)} - shared
    modules = {name: importlib.import_module(f"pndm.cli.{name}") for name in names}
    assert sorted(add.__module__ for add in SUBCOMMANDS) == sorted(
        m.__name__ for m in modules.values()
    )
    subparsers = argparse.ArgumentParser().add_subparsers()
    for add in SUBCOMMANDS:
        add(subparsers)
    choices = subparsers.choices
    assert set(choices) == names
    for name, module in modules.items():
        assert choices[name].get_default("func") is module.run


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["train"], "--output"),
        (["train", "-o", "x", "--steps", "many"], "invalid int value"),
        (["train", "-o", "x", "--ema-decay", "2"], "ema_decay"),
        (["info", "/no/such/folder"], "not found"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(capsys, main(argv), needle)


def test_train_then_refuse_existing_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "pipe"
    assert main(["train", "-o", str(out), *TINY_TRAIN]) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "PNDMPipeline"
    capsys.readouterr()
    assert_one_line_error(capsys, main(["train", "-o", str(out), *TINY_TRAIN]), "--overwrite")
    assert main(["train", "-o", str(out), "--overwrite", *TINY_TRAIN]) == 0


def test_train_missing_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "-o", str(tmp_path / "o"), "--data", str(tmp_path / "nope")])
    assert_one_line_error(capsys, code, "image folder not found")
    assert not (tmp_path / "o").exists()


def test_info_on_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    from pndm.models.unet_2d import UNet2DModel

    folder = shipped_model_path()
    assert (folder / "model_index.json").is_file()
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    count = sum(p.numel() for p in unet.parameters())
    assert f"parameters: {count:,}" in out
    assert "dtype: float32" in out
    assert "num_train_timesteps: 1000" in out
    assert out.strip().splitlines()[-1].startswith("verdict: ")


def test_info_defaults_to_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    assert str(shipped_model_path()) in capsys.readouterr().out
