"""``pndm sample``: grid PNG, per-seed PNG folder (with resume), .npz; and its one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_one_line_error,
    cli_sample,
    read_only_folder,
    tiny_pipeline_folder,
    unlock,
)
from PIL import Image

from pndm.assets import shipped_model_path
from pndm.cli import main
from pndm.compat.pipeline import PNDMPipeline
from pndm.images import contact_sheet
from pndm.jobs import run as jobs
from pndm.jobs.seeds import parse_seeds

SIZE = 8  # conftest.TINY_UNET's images


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random RGB pipeline folder (8x8 images)."""
    return tiny_pipeline_folder(tmp_path_factory.mktemp("model") / "tiny")


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


# ----------------------------------------------------------------------------- seeds, grid


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [("0-3", [0, 1, 2, 3]), ("1,5,9", [1, 5, 9]), ("0-3,10", [0, 1, 2, 3, 10]), ("7", [7])],
)
def test_parse_seeds(spec: str, seeds: list[int]) -> None:
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("5-2", "descending"), ("a", "not a seed"), ("", "not a seed"), ("1,1", "twice")],
)
def test_parse_seeds_rejects(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_seeds(spec)


def test_contact_sheet_layout() -> None:
    images = np.stack([np.full((4, 4, 3), i + 1, np.uint8) for i in range(5)])
    grid = contact_sheet(images, padding=2)
    assert grid.shape == (2 * 6 + 2, 3 * 6 + 2, 3)  # 5 images: 3 columns, 2 rows
    assert grid[2:6, 2:6].min() == 1 and grid[8:12, 8:12].max() == 5
    assert grid[8:12, 14:18].max() == 0  # the sixth tile is empty


# ----------------------------------------------------------------------------- outputs


def test_folder_output_is_per_seed_and_batch_independent(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        cli_sample("--seeds", "0-3,10", "--batch-size", "2", "--out", str(a), model=model_dir) == 0
    )
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "wrote 5 images" in summary and "f-pndm, 4 steps, NFE 13," in summary
    assert "images/s" in summary
    names = sorted(p.name for p in a.iterdir() if p.name != "pndm.json")
    assert names == [f"seed{s:06d}.png" for s in (0, 1, 2, 3, 10)]
    assert (
        cli_sample("--seeds", "10,2", "--batch-size", "5", "--out", f"{b}/", model=model_dir) == 0
    )
    for name in ("seed000002.png", "seed000010.png"):
        first, second = read_png(a / name), read_png(b / name)
        assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
        assert np.array_equal(first, second), name
    assert not np.array_equal(read_png(a / "seed000000.png"), read_png(a / "seed000001.png"))


def test_grid_png_tiles_are_the_images(model_dir: Path, tmp_path: Path) -> None:
    assert cli_sample("--num-images", "5", "--out", str(tmp_path / "g.png"), model=model_dir) == 0
    assert cli_sample("--num-images", "5", "--out", str(tmp_path / "each"), model=model_dir) == 0
    grid = read_png(tmp_path / "g.png")
    assert grid.shape == (2 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2, 3)
    for i in range(5):
        top, left = 2 + (i // 3) * (SIZE + 2), 2 + (i % 3) * (SIZE + 2)
        tile = grid[top : top + SIZE, left : left + SIZE]
        assert np.array_equal(tile, read_png(tmp_path / "each" / f"seed{i:06d}.png"))


def test_npz_output(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.npz"
    assert (
        cli_sample("--seeds", "3,1,4", "--method", "ddim", "--out", str(out), model=model_dir) == 0
    )
    with np.load(out) as data:
        arr, seeds = data["arr_0"], data["seeds"]
    assert arr.shape == (3, SIZE, SIZE, 3) and arr.dtype == np.uint8
    assert seeds.tolist() == [3, 1, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no temporary files left


def test_existing_file_needs_overwrite(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.png"
    out.write_bytes(b"old")
    assert_one_line_error(
        capsys,
        cli_sample("--num-images", "1", "--out", str(out), model=model_dir),
        "--overwrite",
    )
    assert out.read_bytes() == b"old"
    assert cli_sample("--num-images", "1", "--out", str(out), "--overwrite", model=model_dir) == 0
    assert read_png(out).shape == (SIZE + 4, SIZE + 4, 3)


# ----------------------------------------------------------------------------- resume


def test_folder_resume_skips_existing_images(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imgs"
    assert cli_sample("--seeds", "0-1", "--out", str(out), model=model_dir) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("seed*")}
    capsys.readouterr()
    assert cli_sample("--seeds", "0-3", "--out", str(out), model=model_dir) == 0
    assert "wrote 2 images (2 already there)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    assert len(list(out.glob("seed*"))) == 4
    assert (
        cli_sample("--seeds", "0-3", "--out", str(out), model=model_dir) == 0
    )  # nothing left: no load
    assert "wrote 0 images (4 already there)" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_same_images(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = jobs.sample_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "imgs"
    args = ["--seeds", "0-5", "--batch-size", "2", "--out", str(out)]
    monkeypatch.setattr(jobs, "sample_batch", interrupted)
    assert cli_sample(*args, model=model_dir) == 130
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pndm.json", "seed000000.png", "seed000001.png"]
    monkeypatch.setattr(jobs, "sample_batch", real)
    assert cli_sample(*args, model=model_dir) == 0
    assert cli_sample("--seeds", "0-5", "--out", str(tmp_path / "clean"), model=model_dir) == 0
    for seed in range(6):
        name = f"seed{seed:06d}.png"
        assert np.array_equal(read_png(out / name), read_png(tmp_path / "clean" / name))


def test_no_half_written_png(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt while a PNG is being written leaves neither it nor a temporary file."""

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    out = tmp_path / "imgs"
    monkeypatch.setattr(Image.Image, "save", broken_save)
    assert cli_sample("--num-images", "2", "--out", str(out), model=model_dir) == 130
    assert [p.name for p in out.iterdir()] == ["pndm.json"]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--steps", "0"], ["--steps must be an integer"]),
        (["--method", "pndmm"], ["method must be one of", "f-pndm", "ddim", "got 'pndmm'"]),
        (["--seeds", "5-2"], ["descending"]),
        (["--seeds", "x"], ["not a seed"]),
        (["--num-images", "0"], ["--num-images: must be an integer >= 1"]),
        (["--seeds", ""], ["bad seeds"]),
        (["--batch-size", "0"], ["--batch-size must be an integer >= 1"]),
        (["--seeds", "1", "--num-images", "2"], ["not allowed with"]),
        (["--dtype", "int8"], ["invalid choice"]),
        (["--device", "tpu"], ["device must be one of auto, cpu, cuda", "got 'tpu'"]),
        (["--steps", "2000"], ["--steps must be an integer in [1, 1000]"]),
    ],
)
def test_bad_options(
    args: list[str],
    needles: list[str],
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_sample(*args, "--out", str(tmp_path / "g.png"), model=model_dir)
    assert_one_line_error(capsys, code, *needles)
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        ("no/such/dir/g.png", "folder not found for --out"),
        ("no/such/dir/", "folder not found for --out"),
        ("g.jpg", "unsupported output"),
    ],
)
def test_bad_output_paths(
    out: str, needle: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(capsys, cli_sample("--out", str(tmp_path / out), model=model_dir), needle)


def test_error_after_loading_is_one_line_with_progress_on(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "sample",
        "--model",
        str(model_dir),
        "--steps",
        "2000",
        "--out",
        str(tmp_path / "g.png"),
    ]
    assert_one_line_error(capsys, main(argv), "--steps must be an integer in [1, 1000]")


def test_missing_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_sample("--out", str(tmp_path / "g.png"), model=tmp_path / "nothing")
    assert_one_line_error(capsys, code, "not found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_sample("--device", "cuda", "--out", str(tmp_path / "g.png"), model=model_dir)
    assert_one_line_error(capsys, code, "CUDA is not available")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--help"]) == 0
    assert "--seeds" in capsys.readouterr().out


# ----------------------------------------------------------------------------- shipped model


def test_default_model_is_the_shipped_one(tmp_path: Path) -> None:
    assert (shipped_model_path() / "model_index.json").is_file(), "the shipped model is missing"
    out = tmp_path / "one.npz"
    argv = ["sample", "--num-images", "2", "--steps", "4", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    with np.load(out) as data:
        assert data["arr_0"].shape[0] == 2 and data["arr_0"].dtype == np.uint8


def test_no_temporary_files_left_anywhere(model_dir: Path, tmp_path: Path) -> None:
    for out in ("a.png", "b.npz", "c"):
        assert cli_sample("--num-images", "3", "--out", str(tmp_path / out), model=model_dir) == 0
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers
    expected = ["pndm.json"] + [f"seed{i:06d}.png" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "c")) == expected


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("name", ["g.png", "g.npz", "pngs/"])
def test_read_only_output_fails_before_sampling(
    name: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    folder = read_only_folder(tmp_path / "ro")
    monkeypatch.setattr(jobs, "sample_batch", lambda *a: pytest.fail("sampled before the check"))
    try:
        code = cli_sample("--out", str(folder / name), model=model_dir)
    finally:
        unlock(folder)
    assert_one_line_error(capsys, code, "cannot write to the output folder")


def test_too_many_images_are_refused_before_any_list_is_built(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--num-images", str(10**9)], ["--seeds", f"0-{10**9}"]):
        code = cli_sample(*args, "--out", str(tmp_path / "f/"), model=model_dir)
        assert_one_line_error(capsys, code, "images in one run is more than 10000000")


def test_an_image_too_large_for_memory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    folder = tiny_pipeline_folder(
        tmp_path / "huge", sample_size=100_000, block_out_channels=(8,),
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
    )  # fmt: skip
    monkeypatch.setattr(jobs, "sample_batch", lambda *a: pytest.fail("sampled before the check"))
    code = cli_sample("--num-images", "1", "--out", str(tmp_path / "x.png"), model=folder)
    assert_one_line_error(capsys, code, "one image of this model (sample_size 100000) needs")


def test_in_memory_outputs_that_cannot_fit_are_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from pndm.runtime import fast

    real = fast.free_memory
    monkeypatch.setattr(
        fast, "free_memory", lambda d: real(d) if d.type != "cpu" or d.index else 10**9
    )
    monkeypatch.setattr(fast, "check_fits", lambda *a: None)  # the UNet check is another test
    monkeypatch.setattr(jobs, "sample_batch", lambda *a: pytest.fail("sampled before the check"))
    code = cli_sample("--num-images", "3000000", "--out", str(tmp_path / "x.npz"), model=model_dir)
    assert_one_line_error(capsys, code, "GiB of memory", "into a folder")


def test_a_nan_model_fails_in_one_line_and_writes_nothing(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = PNDMPipeline.from_pretrained(model_dir)
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(float("nan"))
    pipe.save_pretrained(tmp_path / "nan-model")
    for out in ("g.png", "g.npz", "f/"):
        code = cli_sample(
            "--num-images", "2", "--out", str(tmp_path / out), model=tmp_path / "nan-model"
        )
        assert_one_line_error(capsys, code, "NaN or inf at model call 1 of")
        assert not (tmp_path / out).exists() or not list((tmp_path / out).glob("seed*"))


def test_seeds_up_to_2_64_minus_1_are_stored_exactly(model_dir: Path, tmp_path: Path) -> None:
    seeds = [0, 2**63, 2**64 - 1]
    out = tmp_path / "big.npz"
    assert cli_sample("--seeds", ",".join(map(str, seeds)), "--out", str(out), model=model_dir) == 0
    with np.load(out) as data:
        assert [int(s) for s in data["seeds"]] == seeds
