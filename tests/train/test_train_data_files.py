"""`pndm train --data FOLDER` with hostile files among the images: each one line naming the file,
before any training step; a FIFO does not block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_files import assert_one_line, bomb_png, fifo, run_pndm, symlink_loop, without_iend
from PIL import Image

from pndm.train.data import load_image_folder


def _images(folder: Path) -> Path:
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_bytes(bomb_png()), "must have at most 67108864 pixels, got 20000x10000"),
        (lambda p: p.write_bytes(without_iend(p.with_name("0.png").read_bytes())), "no IEND"),
        (symlink_loop, "must be a regular file, got a symlink loop"),
        (lambda p: p.mkdir(), "must be a regular file, got a folder"),
    ],
    ids=["bomb", "no IEND", "symlink loop", "folder"],
)
def test_a_bad_image_is_one_line_naming_it(tmp_path: Path, make, words) -> None:
    folder = _images(tmp_path / "data")
    make(folder / "z.png")
    with pytest.raises(ValueError, match=words) as err:
        load_image_folder(folder, 8, 1)
    assert str(folder / "z.png") in str(err.value)


def test_a_fifo_among_the_images_does_not_block(tmp_path: Path) -> None:
    folder = _images(tmp_path / "data")
    fifo(folder / "z.png")
    result = run_pndm(
        "train", "--data", str(folder), "--output", str(tmp_path / "out"), "--resolution", "8",
        "--steps", "1", "--no-progress", timeout=60,
    )  # fmt: skip
    assert_one_line(result, "z.png must be a regular file, got a FIFO")
    assert not (tmp_path / "out").exists()
