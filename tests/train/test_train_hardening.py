"""`pndm train` against hostile input: checked before work, nothing silent, nothing lost.

Every refusal through the CLI is one stderr line, exit status 2, no traceback, and no file made.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, assert_one_line_error, read_only_folder, unlock
from PIL import Image

from pndm.cli import main
from pndm.train import loop
from pndm.train.config import TrainConfig
from pndm.train.data import load_image, load_image_folder
from pndm.train.loop import train
from pndm.train.output import CHECKPOINT_NAME
from pndm.train.state import TrainState
from pndm.train.step import NonFiniteLossError, train_step

TINY = {**TINY_TRAIN, "batch_size": 4, "warmup_steps": 1, "ema_decay": 0.995}
TINY_CLI = [
    "--resolution", "8", "--block-out-channels", "8", "16", "--layers-per-block", "1",
    "--norm-num-groups", "8", "--batch-size", "4", "--steps", "2", "--no-progress",
]  # fmt: skip


def grey_images(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


def tiny(out: Path, data: Path, **overrides: object) -> TrainConfig:
    return TrainConfig(output_dir=out, data=str(data), **{**TINY, "train_steps": 2, **overrides})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run pndm, expect a one-line refusal with status 2; return the line."""
    return assert_one_line_error(capsys, main(list(argv)))


# ----------------------------------------------------------------------------- checked before work


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--device", "banana"], "device must be one of auto, cpu, cuda, cuda:N, got 'banana'"),
        (["--dtype", "int8"], "dtype must be one of float32, float16, bfloat16, got 'int8'"),
        (["--dtype", "float16"], "dtype must be one of float32, bfloat16, got 'float16' (float16"),
        (["--lr", "inf"], "learning_rate must be a finite"),
        (["--lr", "nan"], "learning_rate must be a finite"),
        (["--weight-decay", "inf"], "weight_decay must be a finite"),
        (
            ["--lr", "1e300"],
            "learning_rate must be a finite number in [1.17549e-38, 3.40282e+38]",
        ),  # was a traceback
        (["--seed", "-1"], "seed must be an integer in [0, 18446744073709551615], got -1"),
        (["--seed", str(2**64)], "seed must be an integer in [0, 18446744073709551615]"),
        (["--steps", "0"], "train_steps must be an integer >= 1"),
        (["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
        (["--resolution", "0"], "resolution 0 must be a positive multiple of 2"),
        (["--block-out-channels", "8", "-16"], "block_out_channels must be positive"),
        (["--norm-num-groups", "0"], "norm_num_groups must be an integer >= 1"),
        (
            ["--num-train-timesteps", str(10**9)],
            "num_train_timesteps must be an integer in [2, 1000000]",
        ),
        (["--resolution", "65536"], "training needs at least"),  # refused, not an OOM kill
        (["--batch-size", str(10**9)], "lower --resolution, --batch-size"),
    ],
)
def test_bad_settings_are_one_line_before_any_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    data = grey_images(tmp_path / "images")
    before = snapshot(tmp_path)
    err = run_cli(
        capsys, "train", "-o", str(tmp_path / "out"), "--data", str(data), *TINY_CLI, *flags
    )
    assert needle in err
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_cuda_device_without_cuda_is_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = grey_images(tmp_path / "images")
    err = run_cli(
        capsys, "train", "-o", str(tmp_path / "out"), "--data", str(data), "--device", "cuda"
    )
    assert "CUDA is not available" in err and not (tmp_path / "out").exists()


def test_bad_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert "image folder not found" in run_cli(
        capsys, "train", "-o", out, "--data", str(tmp_path / "no")
    )
    (tmp_path / "empty").mkdir()
    assert "no PNG or JPEG" in run_cli(
        capsys, "train", "-o", out, "--data", str(tmp_path / "empty")
    )
    (tmp_path / "file.png").write_bytes(b"x")
    assert "is a file" in run_cli(capsys, "train", "-o", out, "--data", str(tmp_path / "file.png"))
    corrupt = grey_images(tmp_path / "corrupt")
    (corrupt / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert "cannot read image" in run_cli(capsys, "train", "-o", out, "--data", str(corrupt))
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_or_read_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = grey_images(tmp_path / "images")
    (tmp_path / "file").write_text("mine")
    err = run_cli(capsys, "train", "-o", str(tmp_path / "file"), "--data", str(data), *TINY_CLI)
    assert "not a folder" in err and (tmp_path / "file").read_text() == "mine"
    locked = read_only_folder(tmp_path / "locked")
    try:
        err = run_cli(capsys, "train", "-o", str(locked / "out"), "--data", str(data), *TINY_CLI)
    finally:
        unlock(locked)
    assert "cannot write to the output folder" in err and not (locked / "out").exists()


def test_corrupt_checkpoint_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = grey_images(tmp_path / "images")
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 not a checkpoint")
    err = run_cli(capsys, "train", "-o", str(out), "--data", str(data), "--resume", *TINY_CLI)
    assert "cannot read checkpoint" in err
    torch.save({"step": 1}, out / CHECKPOINT_NAME)
    err = run_cli(capsys, "train", "-o", str(out), "--data", str(data), "--resume", *TINY_CLI)
    assert "is not a pndm train checkpoint" in err


# ----------------------------------------------------------------------------- nothing silent


def test_non_finite_loss_stops_with_nothing_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2, as for any run the user's settings break (``pndm sample`` does the same for NaN)."""
    data = grey_images(tmp_path / "images")
    out = tmp_path / "out"
    err = run_cli(capsys, "train", "-o", str(out), "--data", str(data), *TINY_CLI, "--lr", "1e30")
    assert "training loss is nan" in err and "nothing saved" in err
    assert not out.exists()


def test_non_finite_weights_are_never_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that breaks the weights after a finite loss must not reach a checkpoint."""
    data = grey_images(tmp_path / "images")
    real_step = train_step

    def breaking(state: TrainState, *args: object, **kwargs: object) -> float:
        loss = real_step(state, *args, **kwargs)
        with torch.no_grad():
            next(state.model.parameters()).view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(loop, "train_step", breaking)
    with pytest.raises(NonFiniteLossError, match="NaN or inf after step 1"):
        train(tiny(tmp_path / "out", data, train_steps=3, checkpoint_every=1))
    assert not (tmp_path / "out").exists()


def write_png16(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels.astype(np.uint16)).save(path)
    # The oracle of "16-bit": the PNG header's bit depth byte (IHDR, offset 24).
    assert path.read_bytes()[24] == 16
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (pixels.shape[1], pixels.shape[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_its_range(tmp_path: Path, channels: int) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    levels = (0, 1000, 32768, 65535)
    for i, level in enumerate(levels):
        write_png16(folder / f"{i}.png", np.full((12, 12), level))
    images = load_image_folder(folder, resolution=8, channels=channels)
    expected = torch.tensor(levels, dtype=torch.float32) / 65535 * 2 - 1
    assert images.shape == (4, channels, 8, 8)
    torch.testing.assert_close(images.amin((1, 2, 3)), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(images.amax((1, 2, 3)), expected, rtol=0, atol=1e-6)


def test_16_bit_png_matches_its_8_bit_rendering(tmp_path: Path) -> None:
    """A 16-bit ramp and the same ramp in 8 bits load within one 8-bit level of each other."""
    ramp16 = np.tile(np.linspace(0, 65535, 16).round(), (16, 1))
    write_png16(tmp_path / "a16.png", ramp16)
    Image.fromarray((ramp16 / 257).round().astype(np.uint8)).save(tmp_path / "a8.png")
    x16 = load_image(tmp_path / "a16.png", 16, 1)
    x8 = load_image(tmp_path / "a8.png", 16, 1)
    assert (x16 - x8).abs().max() <= 2 / 255


def test_images_without_a_known_range_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    # A float TIFF behind a .png name: PIL opens it by content, as mode "F".
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(folder / "f.png", format="TIFF")
    with pytest.raises(ValueError, match=r"mode 'F' \(TIFF\) has no known range"):
        load_image_folder(folder, 8, 1)


# ----------------------------------------------------------------------------- nothing lost


def test_interrupted_overwrite_keeps_the_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = grey_images(tmp_path / "images")
    out = tmp_path / "out"
    train(tiny(out, data, checkpoint_every=2))
    (out / "notes.txt").write_text("user file")
    before = snapshot(out)
    real_step, calls = train_step, []

    def interrupted(*args: object, **kwargs: object) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(out, data, overwrite=True, seed=1, checkpoint_every=1))
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no debris


def test_completed_overwrite_swaps_in_the_new_model(tmp_path: Path) -> None:
    data = grey_images(tmp_path / "images")
    out = tmp_path / "out"
    train(tiny(out, data, checkpoint_every=2))
    (out / "notes.txt").write_text("user file")
    old = snapshot(out)
    train(tiny(out, data, overwrite=True, seed=1, keep_checkpoint=False))
    new = snapshot(out)
    assert new["notes.txt"] == b"user file" and CHECKPOINT_NAME not in new
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert new[weights] != old[weights]
    assert json.loads(new["model_index.json"])["_class_name"] == "PNDMPipeline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]


def test_failed_fresh_run_leaves_no_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = grey_images(tmp_path / "images")

    def broken(*args: object, **kwargs: object) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_step", broken)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "out", data))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- names


def test_train_steps_name_and_old_checkpoints_resume(tmp_path: Path) -> None:
    """``--steps`` sets ``train_steps``; a checkpoint saved before ``dtype`` existed resumes."""
    from pndm.cli import build_parser

    args = build_parser().parse_args(["train", "-o", "x", "--steps", "7"])
    assert args.train_steps == 7 and not hasattr(args, "steps")
    data = grey_images(tmp_path / "images")
    out = tmp_path / "out"
    train(tiny(out, data, checkpoint_every=2))
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    del saved["config"]["dtype"]  # as written by the trainer before --dtype
    saved["config"]["steps"] = 2  # an old name is read as today's
    torch.save(saved, out / CHECKPOINT_NAME)
    train(tiny(out, data, train_steps=4, checkpoint_every=2, resume=True))
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == 4


def test_bfloat16_training_runs_and_saves_float32(tmp_path: Path) -> None:
    from pndm.models.unet_2d import UNet2DModel

    data = grey_images(tmp_path / "images")
    out = train(tiny(tmp_path / "out", data, dtype="bfloat16"))
    unet = UNet2DModel.from_pretrained(out, subfolder="unet")
    assert unet.dtype == torch.float32
    assert all(bool(p.isfinite().all()) for p in unet.parameters())
