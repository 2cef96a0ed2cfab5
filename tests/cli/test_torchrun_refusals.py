"""One-process commands under torchrun (``pndm tune``, ``pndm pack``): refused in one line before
any work, on every rank (each rank would do the whole work and race on the same output file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli_sample

from pndm.cli import main

TUNE = ["tune", "--method", "ipndm", "--nfe", "4", "--samples", "2", "--no-progress"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    env = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize("rank", [0, 1])
def test_tune_under_torchrun_is_refused_before_any_work(
    tmp_path: Path, capsys, monkeypatch, rank: int
) -> None:
    from pndm.compat import folders

    as_rank(monkeypatch, rank)
    monkeypatch.setattr(folders, "model_hash", lambda *a: pytest.fail("hashed the model"))
    code = main([*TUNE, "--out", str(tmp_path / "grid.json")])
    assert_one_line_error(capsys, code, "pndm tune runs in one process", "WORLD_SIZE=2")
    assert list(tmp_path.iterdir()) == []


def test_pack_under_torchrun_is_refused_before_any_work(tmp_path: Path, capsys, monkeypatch):
    folder = tmp_path / "f"
    assert cli_sample("--seeds", "0-1", "--out", str(folder)) == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    as_rank(monkeypatch, 0)
    capsys.readouterr()
    code = main(["pack", str(folder), str(tmp_path / "p.npz")])
    assert_one_line_error(capsys, code, "pndm pack runs in one process", "WORLD_SIZE=2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.slow
def test_tune_under_real_torchrun_writes_nothing(tmp_path: Path) -> None:
    cmd = [*TORCHRUN, "-m", "pndm.cli", *TUNE, "--out", str(tmp_path / "grid.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    # Every rank refuses; torchrun may stop the other rank before it prints (a race): one or two
    assert result.stderr.count("pndm: error: pndm tune runs in one process") in (1, 2)
    frames = [line for line in result.stderr.splitlines() if line.lstrip().startswith("File ")]
    assert not [line for line in frames if "/pndm/" in line]  # torchrun's own traceback only
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["train", "--output", "{tmp}/model"], "pndm train"),
        (["convert", "{tmp}/ckpt.pth", "{tmp}/model"], "pndm convert"),
        (["fid", "{tmp}/samples.npz", "--save-stats", "{tmp}/stats.npz"], "pndm fid"),
    ],
)
def test_other_one_process_commands_are_refused_before_any_work(
    tmp_path: Path, capsys, monkeypatch, argv: list[str], command: str
) -> None:
    """Each would do the whole work on every rank and race on its output: refused before any
    input is read (the inputs named here do not even exist)."""
    as_rank(monkeypatch, 1)
    code = main([arg.format(tmp=tmp_path) for arg in argv])
    assert_one_line_error(capsys, code, f"{command} runs in one process", "WORLD_SIZE=2")
    assert list(tmp_path.iterdir()) == []
