"""``pndm sample --class N|random --guidance W`` on a class-conditional model folder: the same
images as the Python pipeline, labels from each image's seed (so resume and torchrun agree),
recorded in pndm.json as a pixel-deciding setting and written by pack beside the images."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_SAMPLE, assert_one_line_error, cli_sample, tiny_unet

from pndm import PNDMPipeline, PNDMScheduler
from pndm.cli import main
from pndm.guidance import label_of_seed
from pndm.images import to_uint8
from pndm.runtime.devices import torch_threads

CLASSES = 10
GUIDED = ["--class", "random", "--guidance", "2.5"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conditional")
    unet = tiny_unet(num_class_embeds=CLASSES + 1)
    PNDMPipeline(unet, PNDMScheduler(), null_class_label=CLASSES).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Path:
    """The `model` with class names, not in sorted order ("cat" is label 1)."""
    folder = tmp_path_factory.mktemp("named")
    unet = tiny_unet(num_class_embeds=CLASSES + 1)
    names = ["dog", "cat", "ant", "emu", "owl", "bee", "yak", "fox", "gnu", "elk"]
    PNDMPipeline(unet, PNDMScheduler(), CLASSES, names).save_pretrained(folder)
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".png"}


def test_the_cli_gives_the_pipelines_guided_images_and_their_labels(model, tmp_path) -> None:
    out = tmp_path / "x.npz"
    seeds = [0, 1, 2, 3]
    assert cli_sample("--seeds", "0-3", "--batch-size", "4", *GUIDED, "--out", str(out),
                      model=model) == 0  # fmt: skip
    pipe = PNDMPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    with torch_threads(1):  # FAST_SAMPLE's --threads 1: the same convolution roundings
        expected = pipe(4, 4, seeds=seeds, class_labels="random", guidance_scale=2.5,
                        output_type="np").images  # fmt: skip
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["arr_0"], to_uint8(expected))
        assert npz["labels"].tolist() == [label_of_seed(seed, CLASSES) for seed in seeds]
        assert npz["labels"].dtype == np.int64


def test_a_folder_records_the_conditioning_and_pack_writes_the_labels(model, tmp_path, capsys):
    out = tmp_path / "f"
    assert cli_sample("--seeds", "0-5", "--class", "7", "--guidance", "3", "--out", f"{out}/",
                      model=model) == 0  # fmt: skip
    settings = json.loads((out / "pndm.json").read_text())["settings"]
    assert settings["conditioning"] == {"class_labels": 7, "num_classes": 10, "guidance_scale": 3.0}
    assert main(["pack", str(out), str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as npz:
        assert npz["labels"].tolist() == [7] * 6
    before = files(out)
    capsys.readouterr()
    code = cli_sample("--seeds", "0-7", "--class", "7", "--out", f"{out}/", model=model)
    assert_one_line_error(capsys, code, "holds images made with other settings", "conditioning")
    assert files(out) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--guidance", "2"], "--guidance needs --class"),
        (["--class", "10"], r"class label must be an integer in [0, 9], got 10"),
        (["--class", "3", "--guidance", "-1"], "--guidance must be a finite number in [0, 100]"),
        (
            ["--class", "cat"],
            "--class must be an int in [0, 9] or 'random' (the model records no "
            "class names), got 'cat'",
        ),
        (["--class", "\uff13"], "--class must be an int in [0, 9]"),  # a full-width 3: a name
        ([], "this model is class-conditional: give --class"),
    ],
)
def test_bad_conditioning_is_refused_before_the_model_loads(
    model, tmp_path, capsys, monkeypatch, args, needle
) -> None:
    from pndm.compat import folders

    monkeypatch.setattr(folders, "load_unet", lambda *a, **k: pytest.fail("loaded the model"))
    code = cli_sample("--seeds", "0-1", *args, "--out", str(tmp_path / "x.npz"), model=model)
    assert_one_line_error(capsys, code, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_class_name_is_recorded_as_its_label(named, tmp_path, capsys) -> None:
    """A folder sampled with --class cat records label 1, so --class 1 extends it (the same
    settings) with the same bytes a --class 1 run writes."""
    out = f"{tmp_path / 'f'}/"
    assert cli_sample("--seeds", "0-1", "--class", "cat", "--guidance", "2", "--out", out,
                      model=named) == 0  # fmt: skip
    settings = json.loads((tmp_path / "f" / "pndm.json").read_text())["settings"]
    assert settings["conditioning"]["class_labels"] == 1
    assert cli_sample("--seeds", "0-3", "--class", "1", "--guidance", "2", "--out", out,
                      model=named) == 0  # fmt: skip
    assert cli_sample("--seeds", "0-3", "--class", "1", "--guidance", "2",
                      "--out", f"{tmp_path / 'by_label'}/", model=named) == 0  # fmt: skip
    assert files(tmp_path / "f") == files(tmp_path / "by_label") and len(files(tmp_path / "f")) == 4


def test_an_unknown_class_name_lists_the_names_before_the_model_loads(
    named, tmp_path, capsys, monkeypatch
) -> None:
    from pndm.compat import folders

    monkeypatch.setattr(folders, "load_unet", lambda *a, **k: pytest.fail("loaded the model"))
    code = cli_sample("--class", "cow", "--out", str(tmp_path / "x.npz"), model=named)
    assert_one_line_error(capsys, code, "--class must be an int in [0, 9], 'random' or a class "
                          "name of the model ('dog', 'cat', 'ant',", "got 'cow'")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_class_labels_on_an_unconditional_model_are_refused(tmp_path, capsys) -> None:
    code = cli_sample("--seeds", "0-1", "--class", "3", "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(capsys, code, "--class needs a class-conditional model")


@pytest.mark.slow
def test_random_labels_under_torchrun_and_after_a_kill_are_the_same_bytes(model, tmp_path):
    """Two torchrun ranks, and a run killed after its first images then resumed, write the
    same PNGs as one uninterrupted process (labels from seeds, not from batches or ranks)."""
    common = ["sample", "--model", str(model), "--seeds", "0-15", "--batch-size", "2",
              *GUIDED, *FAST_SAMPLE]  # fmt: skip
    assert main([*common, "--out", f"{tmp_path / 'one'}/"]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ranks = subprocess.run([*torchrun, "-m", "pndm.cli", *common, "--out", f"{tmp_path / 'r'}/"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr
    assert files(tmp_path / "r") == files(tmp_path / "one")
    killed = [sys.executable, "-m", "pndm.cli", *common, "--out", f"{tmp_path / 'k'}/"]
    proc = subprocess.Popen(killed, stderr=subprocess.DEVNULL)
    _kill_after_first_images(proc, tmp_path / "k")
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    rerun = subprocess.run(killed, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert files(tmp_path / "k") == files(tmp_path / "one")


def _kill_after_first_images(proc: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if folder.is_dir() and len(list(folder.glob("seed*.png"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)


def test_a_conditional_model_without_a_class_leaves_no_folder(model, tmp_path, capsys) -> None:
    """Refused before pndm.json is written, so the same folder then takes a --class run."""
    out = f"{tmp_path / 'f'}/"
    code = cli_sample("--seeds", "0-1", "--out", out, model=model)
    assert_one_line_error(capsys, code, "this model is class-conditional")
    assert not (tmp_path / "f").exists()
    assert cli_sample("--seeds", "0-1", "--class", "3", "--out", out, model=model) == 0
