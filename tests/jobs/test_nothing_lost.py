"""Nothing lost: durable no-clobber writes, and SIGTERM handled like Ctrl-C (no debris)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_SAMPLE, assert_one_line_error, cli_sample

from pndm.cli.signals import EXIT_INTERRUPTED, EXIT_TERMINATED
from pndm.files import atomic
from pndm.jobs import run as jobs


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path: Path, monkeypatch) -> None:
    synced: list[bool] = []
    real = atomic.os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(True) or real(fd))
    atomic.atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    assert len(synced) == 2 and (tmp_path / "a.txt").read_text() == "x"


def test_no_replace_keeps_a_file_that_appeared(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"

    def write(tmp: Path) -> None:
        target.write_text("theirs")  # appears while ours is being written
        tmp.write_text("ours")

    with pytest.raises(FileExistsError, match="appeared while pndm was writing") as err:
        atomic.atomic_write(target, write, replace=False)
    assert target.read_text() == "theirs"
    kept = [p for p in tmp_path.iterdir() if p != target]
    assert len(kept) == 1 and kept[0].read_text() == "ours" and kept[0].suffix == ".npz"
    assert str(kept[0]) in str(err.value)


def _appear_during_sampling(monkeypatch, path: Path) -> None:
    real = jobs.sample_batch

    def sample_then_appear(*args):
        images = real(*args)
        path.write_bytes(b"someone else's file")
        return images

    monkeypatch.setattr(jobs, "sample_batch", sample_then_appear)


@pytest.mark.parametrize("name", ["out.npz", "out.png", "folder/seed000001.png"])
def test_a_file_that_appears_while_sampling_is_not_overwritten(
    tmp_path: Path, monkeypatch, capsys, name: str
) -> None:
    appeared = tmp_path / name
    out = tmp_path / name.split("/")[0]
    _appear_during_sampling(monkeypatch, appeared)
    assert_one_line_error(capsys, cli_sample("--seeds", "0-2", "--out", str(out)), "left as it is")
    assert appeared.read_bytes() == b"someone else's file"
    assert not list(tmp_path.rglob("*.tmp"))


def test_overwrite_replaces_a_file_that_was_there(tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    out.write_bytes(b"old")
    assert cli_sample("--seeds", "0-1", "--out", str(out), "--overwrite") == 0
    assert np.load(out)["arr_0"].shape[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize("out", ["folder", "out.npz"])
def test_sigterm_leaves_no_temporary_files(tmp_path: Path, out: str) -> None:
    """SIGTERM at several moments of a run (loading, sampling, writing): exit 143, no .tmp."""
    cmd = [sys.executable, "-m", "pndm.cli", "sample", *FAST_SAMPLE, "--batch-size", "2"]
    for i, delay in enumerate((1.0, 2.5, 4.0, 5.5)):
        target = tmp_path / f"{i}-{out}"
        proc = subprocess.Popen(
            [*cmd, "--seeds", "0-40", "--out", str(target)], text=True, stderr=subprocess.PIPE
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        # it finished first (the signal then lands in the interpreter's shutdown, after the CLI
        # restored the default handler, and kills it with -SIGTERM): its output is complete
        finished = proc.returncode == 0 or (proc.returncode == -signal.SIGTERM and "wrote " in err)
        if finished:
            assert not list(tmp_path.rglob("*.tmp")), f"debris after a finished run: {err}"
            continue
        assert proc.returncode == EXIT_TERMINATED, err
        assert err.strip().splitlines()[-1] == "pndm: terminated", err
        assert not list(tmp_path.rglob("*.tmp")), f"debris after SIGTERM at {delay} s"


def test_a_manifest_that_is_not_a_file_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "f" / "pndm.json").mkdir(parents=True)
    assert_one_line_error(capsys, cli_sample("--out", str(tmp_path / "f")), "is not a file")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_under_a_seed_name_is_refused_before_sampling(
    tmp_path: Path, capsys, monkeypatch, overwrite: list[str]
) -> None:
    assert cli_sample("--seeds", "0", "--out", str(tmp_path / "f")) == 0  # a folder with a manifest
    (tmp_path / "f" / "seed000001.png").mkdir()
    monkeypatch.setattr(jobs, "sample_batch", lambda *a: pytest.fail("sampled before the check"))
    capsys.readouterr()
    code = cli_sample("--seeds", "0-2", "--out", str(tmp_path / "f"), *overwrite)
    assert_one_line_error(capsys, code, "seed000001.png")


_DURING_TORCH_IMPORT = """
import os, signal, sys, types
from importlib.machinery import ModuleSpec
# Ctrl-C as in a terminal: a job started in the background (`cmd &`) inherits SIGINT ignored,
# which pndm rightly leaves alone, and the signal below would then never arrive
signal.signal(signal.SIGINT, signal.default_int_handler)
from pndm.cli.signals import signals_interrupt
torch = types.ModuleType("torch")
torch.__spec__ = ModuleSpec("torch", None)
torch.__spec__._initializing = True  # what importlib sets while a module's code runs
sys.modules["torch"] = torch
with signals_interrupt({process}):
    os.kill(os.getpid(), signal.SIG{name})
    signal.pause()
"""


@pytest.mark.parametrize(("name", "status", "word"),
                         [("TERM", EXIT_TERMINATED, "terminated"),
                          ("INT", EXIT_INTERRUPTED, "interrupted")])  # fmt: skip
def test_a_signal_while_torch_is_imported_exits_cleanly(name: str, status: int, word: str) -> None:
    """SIGTERM or Ctrl-C landing inside torch's import: raising there aborts the process
    (pybind11 cannot carry the exception out of a C++ callback: exit -6, seen on a loaded
    machine), so the CLI exits 143 / 130 at once instead; nothing is written before torch is
    loaded."""
    code = _DURING_TORCH_IMPORT.replace("{name}", name)
    proc = _run_code(code.replace("{process}", "True"))
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"pndm: {word}", proc.stderr
    # in-process (`main` called from Python) the exception is raised, the host lives on
    body = _indent(code.replace("{process}", "False"))
    caught = "except KeyboardInterrupt as e:\n    print(type(e).__name__)"
    in_process = _run_code(f"try:\n{body}\n{caught}")
    assert in_process.returncode == 0, in_process.stderr
    assert in_process.stdout.strip() == ("Terminated" if name == "TERM" else "KeyboardInterrupt")


def _run_code(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.strip().splitlines())
