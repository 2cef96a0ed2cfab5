"""Every command against a table of hostile inputs: each is exit 2 with one ``pndm: error:`` line
naming the flag or file, no traceback, within seconds, and nothing written or changed.

The inputs: FIFOs (a reader that opens one blocks), symlink loops, JSON nested 100,000 deep,
PNGs whose header claims 200 megapixels, sparse files far past a reader's limit, and flag values
that would allocate without bound. Other modules test each reader in depth; this one walks the
commands, so that a new command or flag that forgets a check shows up here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from hostile_files import bomb_png, deep_json, fifo, sparse_file, symlink_loop, within

from pndm.assets import shipped_model_path
from pndm.cli import main

Setup = Callable[[Path], list[str]]  # makes the hostile input in a folder; returns the argv


def model_with(name: str, content: Callable[[Path], object], shipped: str = "digits") -> Setup:
    """A copy of a shipped model whose file ``name`` is replaced by ``content(path)``."""

    def setup(tmp: Path) -> list[str]:
        model = tmp / "model"
        shutil.copytree(shipped_model_path(shipped), model)
        (model / name).unlink()
        content(model / name)
        return ["--model", str(model)]

    return setup


def write_text(text: str) -> Callable[[Path], object]:
    return lambda path: path.write_text(text)


def sample(*args: str) -> Setup:
    return lambda tmp: ["sample", "--no-progress", "--out", str(tmp / "out.png"), *args]


def sample_on(model: Setup, *args: str) -> Setup:
    return lambda tmp: [*sample(*args)(tmp), *model(tmp)]


def with_file(make: Callable[[Path], object], argv: Callable[[Path], list[str]]) -> Setup:
    def setup(tmp: Path) -> list[str]:
        make(tmp / "input")
        return argv(tmp / "input")

    return setup


def png_folder(png: bytes) -> Callable[[Path], object]:
    def make(path: Path) -> None:
        path.mkdir()
        (path / "0.png").write_bytes(png)
        (path / "1.png").write_bytes(png)

    return make


def sample_folder(manifest: Callable[[Path], object]) -> Callable[[Path], object]:
    def make(path: Path) -> None:
        path.mkdir()
        manifest(path / "pndm.json")

    return make


def class_names(names: object) -> Setup:
    """A copy of digits-cond whose model_index.json records ``names`` as its class names."""
    index = json.loads((shipped_model_path("digits-cond") / "model_index.json").read_text())
    return model_with("model_index.json", write_text(json.dumps({**index, "_class_names": names})),
                      "digits-cond")  # fmt: skip


DEEP = write_text(deep_json())
CASES: dict[str, tuple[Setup, str]] = {
    # pndm sample: flags that would allocate without bound, hostile model files
    "sample --seeds past the image limit": (sample("--seeds", "0-99999999999"), "images in one"),
    "sample --steps 10**9": (sample("--steps", "1000000000"), "steps"),
    "sample --batch-size 0": (sample("--batch-size", "0"), "--batch-size"),
    "sample --guidance nan": (sample("--guidance", "nan"), "--guidance"),
    "sample --class huge": (sample("--class", "9" * 30), "--class"),
    "sample --timesteps FIFO": (
        with_file(fifo, lambda p: sample("--timesteps", str(p))(p.parent)), "FIFO"),
    "sample --timesteps deep JSON": (
        with_file(DEEP, lambda p: sample("--timesteps", str(p))(p.parent)), "input"),
    "sample unet config deep JSON": (sample_on(model_with("unet/config.json", DEEP)), "config"),
    "sample unet config FIFO": (sample_on(model_with("unet/config.json", fifo)), "FIFO"),
    "sample weights symlink loop": (
        sample_on(model_with("unet/diffusion_pytorch_model.safetensors", symlink_loop)),
        "safetensors"),
    "sample _class_names: 2,000,000 names": (sample_on(class_names(["x"] * 2_000_000)),
                                              "model_index.json: _class_names must be a list"),
    "sample _class_names: terminal escapes": (
        sample_on(class_names([f"\x1b]0;{i}\x07" for i in range(10)])),
        "model_index.json: _class_names[0] must be"),
    "sample weights sparse 20 GiB": (
        sample_on(model_with("unet/diffusion_pytorch_model.safetensors",
                             lambda p: sparse_file(p, 20 << 30))), "safetensors"),
    # pndm tune
    "tune --samples 10**12": (lambda tmp: ["tune", "--method", "ipndm", "--nfe", "4",
                              "--samples", "1000000000000", "--out", str(tmp / "g.json")],
                              "samples"),
    "tune --iterations 10**9": (lambda tmp: ["tune", "--method", "ipndm", "--nfe", "4",
                                "--iterations", "1000000000", "--out", str(tmp / "g.json")],
                                "--iterations"),
    # pndm pack: a sample folder's manifest
    "pack pndm.json deep JSON": (with_file(sample_folder(DEEP), lambda p: [
        "pack", str(p), str(p.parent / "p.npz")]), "pndm.json"),
    "pack pndm.json FIFO": (with_file(sample_folder(fifo), lambda p: [
        "pack", str(p), str(p.parent / "p.npz")]), "pndm.json"),
    # pndm fid: sample sets
    "fid samples FIFO": (with_file(fifo, lambda p: ["fid", str(p), "digits"]), "FIFO"),
    "fid folder of PNG bombs": (
        with_file(png_folder(bomb_png()), lambda p: ["fid", str(p), "digits"]), "pixels"),
    "fid sparse npz": (with_file(lambda p: sparse_file(p.with_suffix(".npz"), 200 << 30),
                                 lambda p: ["fid", str(p.with_suffix(".npz")), "digits"]), "npz"),
    # pndm train: data and sizes
    "train --data PNG bombs": (with_file(png_folder(bomb_png()), lambda p: [
        "train", "--data", str(p), "--output", str(p.parent / "m")]), "pixels"),
    "train --resolution 10**6": (lambda tmp: ["train", "--resolution", "1000000", "--output",
                                 str(tmp / "m")], "resolution"),
    # pndm convert: checkpoints
    "convert FIFO": (with_file(fifo, lambda p: ["convert", str(p), str(p.parent / "out")]),
                     "FIFO"),
    "convert sparse 20 GiB checkpoint": (
        with_file(lambda p: sparse_file(p.with_suffix(".ckpt"), 20 << 30),
                  lambda p: ["convert", str(p.with_suffix(".ckpt")), str(p.parent / "out")]),
        "ckpt"),
    # pndm info: a model folder's index
    "info model_index.json deep JSON": (
        lambda tmp: ["info", model_with("model_index.json", DEEP)(tmp)[1]], "model_index.json"),
    "info model_index.json _class_names twice": (
        lambda tmp: ["info", class_names(["7"] * 10)(tmp)[1]],
        "model_index.json: _class_names must name each class once"),
}  # fmt: skip


def snapshot(folder: Path) -> dict[str, object]:
    """Every path under ``folder`` with its kind and, for regular files, size and mtime."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            state[str(path)] = "special"
        elif path.is_file():
            stat = path.stat()
            state[str(path)] = (stat.st_size, stat.st_mtime_ns)
        else:
            state[str(path)] = "dir"
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_in_seconds_and_changes_nothing(case, tmp_path, capsys):
    setup, needle = CASES[case]
    argv = setup(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    with within(30):
        code = main(argv)
    assert_one_line_error(capsys, code, needle)
    assert snapshot(tmp_path) == before


def test_every_command_is_walked() -> None:
    """A command added to the CLI (one module per command, `pndm.cli.entry.SUBCOMMANDS`)
    without a row in the table fails here."""
    from pndm.cli.entry import SUBCOMMANDS

    commands = {add.__module__.rsplit(".", 1)[1] for add in SUBCOMMANDS}
    walked = {name.split()[0] for name in CASES}
    assert walked == commands, f"commands without a hostile case: {commands - walked}"
