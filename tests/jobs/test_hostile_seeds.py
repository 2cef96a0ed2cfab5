"""Hostile files under a seed's name in a sample folder. What is not a whole image of the right
size and mode is sampled again, and the folder ends byte-identical to an uninterrupted run; what
a PNG cannot replace (a FIFO, a symlink loop) is refused in one line; nothing blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FAST_SAMPLE, assert_one_line_error, cli_sample
from hostile_files import assert_one_line, bomb_png, fifo, run_pndm, symlink_loop, without_iend

from pndm.cli import main
from pndm.jobs.destinations import seed_filename


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "samples"
    assert cli_sample("--seeds", "0-4", "--batch-size", "2", "--out", str(out)) == 0
    return out


BROKEN = {
    "bomb": lambda png: bomb_png(),  # 74 bytes whose header claims 20000x10000 pixels
    "no IEND": without_iend,  # every row decodes; only the end marker is missing
    "other size": lambda png: bomb_png(16, 8),
    "foreign": lambda png: b"not an image",
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_image_under_a_seed_name_is_sampled_again(uninterrupted, tmp_path, kind) -> None:
    """The README's promise: the broken file is resampled, the others kept, and the folder is
    byte-identical to an uninterrupted run."""
    out = tmp_path / "samples"
    assert cli_sample("--seeds", "0-4", "--batch-size", "2", "--out", str(out)) == 0
    broken = out / seed_filename(3)
    broken.write_bytes(BROKEN[kind](broken.read_bytes()))
    kept = (out / seed_filename(0)).stat().st_mtime_ns
    assert cli_sample("--seeds", "0-4", "--batch-size", "2", "--out", str(out)) == 0
    assert files(out) == files(uninterrupted)
    assert (out / seed_filename(0)).stat().st_mtime_ns == kept


def test_pack_refuses_broken_images_as_missing(uninterrupted, tmp_path, capsys) -> None:
    out = tmp_path / "samples"
    assert cli_sample("--seeds", "0-4", "--batch-size", "2", "--out", str(out)) == 0
    (out / seed_filename(1)).write_bytes(bomb_png())
    (out / seed_filename(2)).write_bytes(without_iend((out / seed_filename(2)).read_bytes()))
    capsys.readouterr()
    code = main(["pack", str(out), str(tmp_path / "p.npz")])
    assert_one_line_error(capsys, code, "2 of 5 seeds", "no complete PNG (1, 2)")
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("make", [fifo, symlink_loop], ids=["fifo", "symlink loop"])
def test_what_a_png_cannot_replace_is_refused_without_blocking(tmp_path: Path, make) -> None:
    """Once, a FIFO here hung resume and pack for ever: they opened it before checking it."""
    out = tmp_path / "samples"
    assert cli_sample("--seeds", "0-1", "--out", str(out)) == 0  # seed 1 recorded...
    (out / seed_filename(1)).unlink()
    make(out / seed_filename(1))  # ...and its PNG replaced
    before = sorted(os.listdir(out))
    result = run_pndm("sample", *FAST_SAMPLE, "--seeds", "0-1", "--out", str(out), timeout=120)
    assert_one_line(result, "1 seed names", "are not files (seed000001.png); move them away")
    result = run_pndm("pack", str(out), str(tmp_path / "p.npz"), timeout=60)
    assert_one_line(result, "1 of 2 seeds", "no complete PNG (1)")
    assert sorted(os.listdir(out)) == before and not (tmp_path / "p.npz").exists()
