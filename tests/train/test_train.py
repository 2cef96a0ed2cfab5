"""The DDPM trainer: output folder, exact resume, data loading, refusals, pure helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN
from PIL import Image

from pndm.train.config import TrainConfig
from pndm.train.data import load_digits, load_image_folder
from pndm.train.loop import train
from pndm.train.output import CHECKPOINT_NAME
from pndm.train.step import diffusion_loss, ema_decay, learning_rate

pytest.importorskip("sklearn")


def tiny_config(out: Path, **overrides: object) -> TrainConfig:
    return TrainConfig(output_dir=out, **{**TINY_TRAIN, "train_steps": 4, **overrides})


def load_checkpoint_file(folder: Path) -> dict:
    return torch.load(folder / CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def assert_tensors_equal(a: object, b: object) -> None:
    """Recursive exact equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_tensors_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_tensors_equal(x, y)
    else:
        assert a == b


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "pipe"
    return train(tiny_config(out, train_steps=6, checkpoint_every=6))


def test_pipeline_folder_layout(trained: Path) -> None:
    index = json.loads((trained / "model_index.json").read_text())
    assert index == {
        "_class_name": "PNDMPipeline",
        "_diffusers_version": index["_diffusers_version"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    assert (trained / "unet" / "config.json").is_file()
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (trained / "scheduler" / "scheduler_config.json").is_file()
    assert not [p for p in trained.iterdir() if p.name.startswith(".")], "temporary files left"


def test_pipeline_loads_with_ema_weights(trained: Path) -> None:
    from pndm.compat.scheduler import PNDMScheduler
    from pndm.models.unet_2d import UNet2DModel

    unet = UNet2DModel.from_pretrained(trained, subfolder="unet")
    assert unet.config.sample_size == 8 and unet.config.in_channels == 1
    assert_tensors_equal(unet.state_dict(), load_checkpoint_file(trained)["ema"])
    scheduler = PNDMScheduler.from_pretrained(trained, subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "linear"
    out = unet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).sample
    assert out.shape == (2, 1, 8, 8) and bool(out.isfinite().all())


def test_resume_continues_exactly(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "pipe"
    train(tiny_config(out, train_steps=3, checkpoint_every=3))
    assert load_checkpoint_file(out)["step"] == 3
    train(tiny_config(out, train_steps=6, checkpoint_every=6, resume=True))
    resumed, straight = load_checkpoint_file(out), load_checkpoint_file(trained)
    assert resumed["step"] == straight["step"] == 6
    for key in ("model", "ema", "optimizer", "generator"):
        assert_tensors_equal(resumed[key], straight[key])


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train(tiny_config(tmp_path / "pipe", train_steps=2, checkpoint_every=2))
    with pytest.raises(ValueError, match="learning_rate"):
        train(tiny_config(tmp_path / "pipe", train_steps=4, resume=True, learning_rate=0.5))
    with pytest.raises(ValueError, match="past --steps 1"):
        train(tiny_config(tmp_path / "pipe", train_steps=1, resume=True))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path / "pipe", resume=True))


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(tiny_config(out, train_steps=1))
    train(tiny_config(out, train_steps=1, overwrite=True, keep_checkpoint=False))
    assert (out / "model_index.json").is_file()
    assert (out / "keep.txt").read_text() == "user file"  # only our own entries are replaced
    assert not (out / CHECKPOINT_NAME).exists()


def write_images(folder: Path) -> None:
    folder.mkdir()
    (folder / "sub").mkdir()
    gen = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate([(12, 10), (9, 9), (20, 16)]):
        pixels = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        suffix = ".png" if i % 2 == 0 else ".JPG"
        Image.fromarray(pixels).save(folder / ("sub" if i == 2 else ".") / f"img{i}{suffix}")
    (folder / "notes.txt").write_text("not an image")


def test_image_folder_loads_rgb_and_grey(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    rgb = load_image_folder(tmp_path / "images", resolution=8, channels=3)
    grey = load_image_folder(tmp_path / "images", resolution=8, channels=1)
    assert rgb.shape == (3, 3, 8, 8) and grey.shape == (3, 1, 8, 8)
    assert rgb.min() >= -1 and rgb.max() <= 1 and rgb.std() > 0.1


def test_train_on_image_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    out = train(tiny_config(tmp_path / "pipe", data=str(tmp_path / "images"), channels=3))
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["in_channels"] == config["out_channels"] == 3


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_image_folder(tmp_path / "missing", 8, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG or JPEG"):
        load_image_folder(tmp_path / "empty", 8, 1)
    (tmp_path / "empty" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image_folder(tmp_path / "empty", 8, 1)


def test_digits_dataset() -> None:
    images = load_digits(16, "bilinear")
    assert images.shape == (1797, 1, 16, 16)
    assert images.min() == -1 and images.max() == 1
    assert load_digits(8).shape == (1797, 1, 8, 8)


def test_digits_without_sklearn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ModuleNotFoundError, match=r"pndm\[train\]"):
        load_digits(16)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"resolution": 7}, "multiple of 2"),
        ({"upscale": "nearest"}, "bilinear, bicubic"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"beta_schedule": "cosine"}, "squaredcos_cap_v2"),
        ({"train_steps": 0}, "train_steps"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_config(tmp_path, **overrides)


def test_learning_rate_warmup_and_ema_decay(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, learning_rate=1.0, warmup_steps=4, ema_decay=0.999)
    assert [learning_rate(config, s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert ema_decay(config, 0) == pytest.approx(0.1)
    assert ema_decay(config, 10**6) == 0.999


def test_diffusion_loss_is_zero_for_an_oracle() -> None:
    """A model that returns the true noise has zero loss: checks x_t = sqrt(ā) x0 + sqrt(1-ā) ε."""
    ac = torch.linspace(0.99, 0.01, 10)
    x0, noise, t = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2), torch.tensor([0, 3, 5, 9])

    class Oracle(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> object:
            a = ac[t].view(-1, 1, 1, 1)
            return type("Out", (), {"sample": (x - a.sqrt() * x0) / (1 - a).sqrt()})

    assert diffusion_loss(Oracle(), x0, t, noise, ac).item() < 1e-10
