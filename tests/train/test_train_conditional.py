"""`pndm train --conditional`: class labels, label dropout, the "no class" label and the class
names in the folder (``pndm sample --class NAME``, ``pndm info``), resume, refusals, and an
unconditional run's random stream as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_SAMPLE, TINY_TRAIN, assert_one_line_error
from PIL import Image

from pndm.cli import main
from pndm.train.config import TrainConfig, unet_config
from pndm.train.data import load_dataset
from pndm.train.labels import DIGITS_NAMES, MAX_CLASSES, ClassLabels, drop_labels, load_labels
from pndm.train.loop import train
from pndm.train.output import CHECKPOINT_NAME
from pndm.train.state import fresh_state
from pndm.train.step import diffusion_loss, sample_batch, train_step

TINY = {**TINY_TRAIN, "batch_size": 4, "warmup_steps": 1}
TINY_CLI = [
    "--resolution", "8", "--block-out-channels", "8", "16", "--layers-per-block", "1",
    "--norm-num-groups", "8", "--batch-size", "4", "--steps", "2", "--no-progress",
]  # fmt: skip


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    """root/NAME/i.png, each image's grey level 40 * (its class's index among sorted names)."""
    for level, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True)
        for i in range(counts[name]):
            Image.fromarray(np.full((8, 8), 40 * level, np.uint8)).save(root / name / f"{i}.png")
    return root


def tiny(out: Path, data: Path | str, **overrides: object) -> TrainConfig:
    fields = {**TINY, "train_steps": 2, "conditional": True, **overrides}
    return TrainConfig(output_dir=out, data=str(data), **fields)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    return assert_one_line_error(capsys, main(list(argv)))


# ----------------------------------------------------------------------------- labels


def test_digits_labels_are_scikit_learns_targets(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    labels = load_labels(tiny(tmp_path / "out", "digits"))
    assert labels is not None and labels.classes == 10 and labels.null_label == 10
    assert labels.names == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    assert labels.values.dtype == torch.int64
    assert labels.values.tolist() == load_digits().target.tolist()


def test_folder_labels_are_the_sorted_subfolders_in_the_images_order(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"cat": 3, "ant": 2, "dog": 1})
    (data / "dog" / "deep").mkdir()  # deeper folders belong to their class
    Image.fromarray(np.full((8, 8), 80, np.uint8)).save(data / "dog" / "deep" / "x.png")
    config = tiny(tmp_path / "out", data)
    labels = load_labels(config)
    assert labels is not None and labels.classes == 3 and labels.names == ("ant", "cat", "dog")
    assert sorted(labels.values.tolist()) == [0, 0, 1, 1, 1, 2, 2]
    grey = (load_dataset(config).mean((1, 2, 3)) + 1) * 127.5  # the level says the class
    torch.testing.assert_close(grey, labels.values.float() * 40, rtol=0, atol=0.5)


def test_an_unconditional_run_has_no_labels(tmp_path: Path) -> None:
    assert load_labels(tiny(tmp_path / "out", "digits", conditional=False)) is None


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_label_dropout_rate(rate: float) -> None:
    """Over n = 200,000 draws the dropped fraction is within 5 standard errors of ``rate``
    (sqrt(rate (1 - rate) / n) <= 0.0012; a false alarm has probability below 1e-6)."""
    n = 200_000
    labels = torch.arange(n) % 7
    dropped = drop_labels(labels, rate, 7, torch.Generator().manual_seed(0))
    is_null = dropped == 7
    assert abs(is_null.float().mean().item() - rate) <= 5 * math.sqrt(rate * (1 - rate) / n)
    assert torch.equal(dropped[~is_null], labels[~is_null])  # the rest keep their labels


# ----------------------------------------------------------------------------- the random stream


def replay(data: torch.Tensor, seed: int, steps: int, batch: int) -> torch.Generator:
    """The draws of the trainer before this feature: per batch, indices, times, noise."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        torch.randint(len(data), (batch,), generator=g)
        torch.randint(1000, (batch,), generator=g)
        torch.randn((batch, *data.shape[1:]), generator=g)
    return g


def test_an_unconditional_batch_draws_what_it_drew_before() -> None:
    """The pre-existing stream, replayed by hand: indices, times, noise, nothing more."""
    data = torch.randn(9, 1, 4, 4)
    g = torch.Generator().manual_seed(3)
    batch = sample_batch(data, 1000, 5, g)
    h = torch.Generator().manual_seed(3)
    index = torch.randint(9, (5,), generator=h)
    t = torch.randint(1000, (5,), generator=h)
    noise = torch.randn((5, 1, 4, 4), generator=h)
    assert torch.equal(batch.x0, data[index]) and torch.equal(batch.t, t)
    assert torch.equal(batch.noise, noise) and batch.labels is None
    assert torch.equal(g.get_state(), h.get_state())


def test_a_conditional_batch_draws_its_dropout_last() -> None:
    """The unconditional draws first (the same images, times and noise), then one uniform per
    label: the label is "no class" where it is below the dropout rate."""
    data, values = torch.randn(9, 1, 4, 4), torch.arange(9) % 3
    labels = ClassLabels(values, ("a", "b", "c"))
    g = torch.Generator().manual_seed(3)
    batch = sample_batch(data, 1000, 64, g, labels, 0.4)
    h = torch.Generator().manual_seed(3)
    index = torch.randint(9, (64,), generator=h)
    torch.randint(1000, (64,), generator=h)
    torch.randn((64, 1, 4, 4), generator=h)
    expected = torch.where(torch.rand(64, generator=h) < 0.4, 3, values[index])
    assert torch.equal(batch.labels, expected) and torch.equal(batch.x0, data[index])
    assert torch.equal(g.get_state(), h.get_state())


def test_unconditional_training_consumes_the_old_stream_and_calls_the_model_without_labels(
    tmp_path: Path,
) -> None:
    """Three unconditional steps leave the generator where the old draws leave it, and the
    model is called as ``model(x_t, t)``: the run is the one before this feature."""
    config = tiny(tmp_path / "out", "digits", conditional=False, train_steps=3)
    data = torch.randn(20, 1, 8, 8)
    state = fresh_state(config)
    calls: list[dict] = []
    state.model.register_forward_pre_hook(lambda m, a, k: calls.append(k), with_kwargs=True)
    for _ in range(3):
        train_step(state, data, torch.linspace(0.99, 0.01, 1000), config)
    assert calls == [{}, {}, {}]
    assert torch.equal(state.generator.get_state(), replay(data, config.seed, 3, 4).get_state())


def test_the_model_gets_the_batchs_labels(tmp_path: Path) -> None:
    config = tiny(tmp_path / "out", "digits", label_dropout=0.5)
    data, values = torch.randn(20, 1, 8, 8), torch.arange(20) % 10
    state = fresh_state(config, classes=10)
    seen: list[torch.Tensor] = []
    hook = lambda m, a, k: seen.append(k["class_labels"])  # noqa: E731
    state.model.register_forward_pre_hook(hook, with_kwargs=True)
    g = torch.Generator().set_state(state.generator.get_state())
    labels = ClassLabels(values, DIGITS_NAMES)
    expected = sample_batch(data, 1000, 4, g, labels, 0.5).labels
    train_step(state, data, torch.linspace(0.99, 0.01, 1000), config, labels)
    assert len(seen) == 1 and torch.equal(seen[0], expected)


def test_labels_change_the_loss(tmp_path: Path) -> None:
    """The label table is used: the same noisy batch with other labels has another loss."""
    state = fresh_state(tiny(tmp_path / "out", "digits"), classes=10)
    torch.nn.init.normal_(state.model.class_embedding.weight)  # rows apart, as training makes
    x0, noise = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t, ac = torch.tensor([10, 200, 500, 900]), torch.linspace(0.99, 0.01, 1000)
    with torch.no_grad():
        losses = [
            diffusion_loss(state.model, x0, t, noise, ac, torch.full((4,), c)) for c in (3, 10)
        ]
    assert losses[0].item() != losses[1].item()


# ----------------------------------------------------------------------------- runs and folders


def test_conditional_run_records_the_null_label_and_samples_with_guidance(tmp_path: Path) -> None:
    from pndm import PNDMPipeline

    out = train(tiny(tmp_path / "out", "digits"))
    index = json.loads((out / "model_index.json").read_text())
    assert index["_null_class_label"] == 10 and index["_class_names"] == list(DIGITS_NAMES)
    assert json.loads((out / "unet" / "config.json").read_text())["num_class_embeds"] == 11
    pipe = PNDMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.null_class_label == 10
    images = pipe(2, 5, seeds=[0, 1], class_labels=3, guidance_scale=2.0, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_class_folder_run_has_one_label_per_class(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"a": 2, "b": 1, "c": 1})
    out = train(tiny(tmp_path / "out", data))
    index = json.loads((out / "model_index.json").read_text())
    assert index["_null_class_label"] == 3 and index["_class_names"] == ["a", "b", "c"]
    assert json.loads((out / "unet" / "config.json").read_text())["num_class_embeds"] == 4


def test_a_class_is_sampled_by_its_folders_name_as_by_its_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two class folders, trained from the command line: ``--class zebra`` (label 1: "ant"
    sorts first) writes the bytes ``--class 1`` writes; ``pndm info`` lists the labels' names."""
    data = class_folder(tmp_path / "data", {"zebra": 2, "ant": 2})
    model = tmp_path / "model"
    assert main(["train", "-o", str(model), "--data", str(data), *TINY_CLI, "--conditional"]) == 0
    sheets = {}
    for label in ("zebra", "1", "0"):
        sheets[label] = tmp_path / f"{label}.png"
        assert main(["sample", "--model", str(model), *FAST_SAMPLE, "--seeds", "0-1", "--class",
                     label, "--guidance", "2", "--out", str(sheets[label])]) == 0  # fmt: skip
    assert sheets["zebra"].read_bytes() == sheets["1"].read_bytes()
    assert sheets["zebra"].read_bytes() != sheets["0"].read_bytes()  # the label matters
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "classes: 2, labels 0-1 (--class takes a label or its name; 'no class' label: 2)" in out
    assert "\n  0: ant\n  1: zebra\n" in out


def test_conditional_resume_is_exact_and_checks_the_settings(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"a": 2, "b": 2})
    straight = train(tiny(tmp_path / "straight", data, train_steps=4, checkpoint_every=4))
    out = tmp_path / "out"
    train(tiny(out, data, checkpoint_every=2))
    for change, needle in [
        ({"label_dropout": 0.2}, "label_dropout: 0.1 -> 0.2"),
        ({"conditional": False}, "conditional: True -> False"),
    ]:
        with pytest.raises(ValueError, match=f"settings differ.*{needle}"):
            train(tiny(out, data, train_steps=4, resume=True, **change))
    train(tiny(out, data, train_steps=4, checkpoint_every=2, resume=True))
    a, b = (torch.load(p / CHECKPOINT_NAME, weights_only=True) for p in (straight, out))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    (data / "b").rename(data / "z")  # as many classes, but label 1 has another name now
    with pytest.raises(
        ValueError, match=r"settings differ.*class_names: \['a', 'b'\] -> \['a', 'z'\]"
    ):
        train(tiny(out, data, train_steps=6, resume=True))
    class_folder(tmp_path / "data", {"c": 1})  # the data now has a third class
    with pytest.raises(ValueError, match="settings differ.*classes: 2 -> 3"):
        train(tiny(out, data, train_steps=6, resume=True))


def test_checkpoints_from_before_class_names_were_recorded_resume(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"a": 2, "b": 2})
    out = tmp_path / "out"
    train(tiny(out, data, checkpoint_every=2))
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert saved["config"].pop("class_names") == ["a", "b"]  # as written before
    torch.save(saved, out / CHECKPOINT_NAME)
    train(tiny(out, data, train_steps=4, checkpoint_every=2, resume=True))
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == 4


def test_checkpoints_from_before_conditional_training_resume(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"a": 3})
    out = tmp_path / "out"
    train(tiny(out, data, conditional=False, checkpoint_every=2))
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    del saved["config"]["conditional"], saved["config"]["label_dropout"]  # as written before
    torch.save(saved, out / CHECKPOINT_NAME)
    train(tiny(out, data, conditional=False, train_steps=4, checkpoint_every=2, resume=True))
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == 4


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--conditional", "--label-dropout", "1"], "label_dropout must be a number in [0, 1)"),
        (["--conditional", "--label-dropout", "-0.1"], "in [0, 1), got -0.1"),
        (["--conditional", "--label-dropout", "nan"], "in [0, 1), got nan"),
        (["--label-dropout", "0.2"], "label_dropout 0.2 needs --conditional"),
        (["--conditional", "--resolution", "65536"], "training needs at least"),
    ],
)
def test_bad_conditional_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    assert needle in run_cli(capsys, "train", "-o", str(out), *TINY_CLI, *flags)
    assert not out.exists()


def test_conditional_on_a_flat_folder_names_the_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "0.png")
    out = tmp_path / "out"
    line = run_cli(capsys, "train", "-o", str(out), "--data", str(flat), *TINY_CLI, "--conditional")
    assert "one subfolder per class" in line and "CLASS/image.png" in line and "0.png" in line
    assert not out.exists()


def test_an_empty_class_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Left out, folder b would shift c's label from 2 to 1."""
    data = class_folder(tmp_path / "data", {"a": 1, "c": 1})
    (data / "b").mkdir()
    out = tmp_path / "out"
    line = run_cli(capsys, "train", "-o", str(out), "--data", str(data), *TINY_CLI, "--conditional")
    assert f"class folder {data / 'b'} holds no PNG or JPEG images" in line
    assert not out.exists()


@pytest.mark.parametrize("name", ["new\nline", "esc\x1b[2J", "byte\udcff"])  # b"byte\xff"
def test_a_class_folder_name_that_cannot_name_a_class_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Before any work: the model's folder could not record it as a class name."""
    data = class_folder(tmp_path / "data", {"a": 1})
    (data / name).mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / name / "0.png")
    out = tmp_path / "out"
    line = run_cli(capsys, "train", "-o", str(out), "--data", str(data), *TINY_CLI, "--conditional")
    assert (
        "cannot name a class: a class name must be a non-empty string of at most 255 "
        "characters without control characters" in line
    )
    assert "rename the folder" in line and not out.exists()


def test_too_many_classes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    pixel = np.zeros((1, 1), np.uint8)
    for i in range(MAX_CLASSES + 1):
        (data / f"{i:04d}").mkdir(parents=True)
        Image.fromarray(pixel).save(data / f"{i:04d}" / "x.png")
    out = tmp_path / "out"
    line = run_cli(capsys, "train", "-o", str(out), "--data", str(data), *TINY_CLI, "--conditional")
    assert f"has {MAX_CLASSES + 1} class subfolders" in line and f"at most {MAX_CLASSES}" in line
    assert not out.exists()


def test_conditional_sets_the_label_table_itself(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="conditional sets the UNet's num_class_embeds"):
        tiny(tmp_path / "out", "digits", extra={"num_class_embeds": 5})
    with pytest.raises(ValueError, match="needs its number of classes"):
        unet_config(tiny(tmp_path / "out", "digits"))
