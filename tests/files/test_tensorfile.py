"""Tensor files read safely and bounded (`pndm.files.tensorfile`): safetensors headers checked
against the file, torch pickles only through ``weights_only``, and every refusal of an unsafe
pickle says that pndm never unpickles code, never that the user may."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error
from hostile_files import deep_json, fifo, within
from safetensors.torch import save_file

from pndm.cli import main
from pndm.files.tensorfile import read_safetensors, read_torch
from pndm.files.weights import read_weights

UNSAFE_ADVICE = ("weights_only", "allow_pickle", "add_safe_globals")


class Pickled:  # a class torch.load(weights_only=True) will not build
    pass


def _pickled_class(path: Path) -> Path:
    torch.save({"conv_in.weight": torch.zeros(2), "extra": Pickled()}, path)
    return path


def assert_never_suggests_unpickling(message: str) -> None:
    for advice in UNSAFE_ADVICE:
        assert advice not in message, message
    assert "pndm never unpickles code" in message and "safetensors" in message, message


def test_a_pickled_class_is_refused_naming_it_and_how_to_convert(tmp_path: Path) -> None:
    path = _pickled_class(tmp_path / "m.bin")
    for read in (read_torch, read_weights):
        with pytest.raises(ValueError) as err:
            read(path)
        message = str(err.value)
        assert str(path) in message and "Pickled" in message and "\n" not in message
        assert_never_suggests_unpickling(message)


def test_garbage_and_plain_pickles_say_the_same(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "p.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tmp_path / "g.pt").write_bytes(b"\x80\x02garbage" * 10)
    for name in ("p.pt", "g.pt"):
        with pytest.raises(ValueError, match=f"cannot read checkpoint .*{name}") as err:
            read_torch(tmp_path / name)
        assert_never_suggests_unpickling(str(err.value))


def test_tensors_load(tmp_path: Path) -> None:
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(1, dtype=torch.int64)}
    torch.save(state, tmp_path / "w.bin")
    save_file(state, tmp_path / "w.safetensors")
    for name in ("w.bin", "w.safetensors"):
        read = read_weights(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)


def _safetensors(header: object, body: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x01\x02", "must be a safetensors file, got 2 bytes"),
        (_safetensors({"a": ENTRY}, b"\0" * 8, length=10**12), "1000000000000-byte header"),
        (_safetensors({"a": ENTRY}, b"\0" * 4), "tensor 'a' must have a known dtype"),
        (_safetensors({"a": {**ENTRY, "dtype": "F128"}}, b"\0" * 8), "known dtype"),
        (_safetensors({"a": {**ENTRY, "shape": [3]}}, b"\0" * 8), "shape that fits its bytes"),
        (_safetensors({"a": {**ENTRY, "shape": [-2]}}, b"\0" * 8), "shape that fits"),
        (_safetensors({"a": {**ENTRY, "dtype": ["F32"]}}, b"\0" * 8), "known dtype"),
        (_safetensors(deep_json(), b""), "must nest at most"),
        (_safetensors('{"a": NaN}'), "finite numbers"),
        (_safetensors("[1]"), "the header must be a JSON object"),
        (b"\x04\0\0\0\0\0\0\0\xff\xfe\xfd\xfc", "must be UTF-8 JSON"),
    ],
    ids=[
        "tiny",
        "truncated header",
        "cut body",
        "dtype",
        "shape",
        "negative",
        "list dtype",
        "deep",
        "NaN",
        "list",
        "binary",
    ],  # fmt: skip
)
def test_a_bad_safetensors_header_is_one_line_naming_the_file(tmp_path, data, words) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=words) as err:
        read_safetensors(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_not_regular_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights .* must be a regular file, got a FIFO"):
        read_weights(fifo(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="checkpoint .* must be a regular file, got a folder"):
        read_torch(tmp_path)


# ----------------------------------------------------------------------------- the sites


def test_convert_refuses_a_pickled_class(tmp_path: Path, capsys) -> None:
    path = _pickled_class(tmp_path / "model.ckpt")
    code = main(["convert", str(path), str(tmp_path / "out"), "--config", "cifar10"])
    line = assert_one_line_error(capsys, code, "model.ckpt", "Pickled")
    assert_never_suggests_unpickling(line)
    assert not (tmp_path / "out").exists()


def test_train_resume_refuses_a_pickled_class(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _pickled_class(out / "checkpoint.pt")
    code = main(["train", "--output", str(out), "--resume", "--steps", "1"])
    line = assert_one_line_error(capsys, code, "checkpoint.pt", "Pickled")
    assert_never_suggests_unpickling(line)


def test_fid_refuses_pickled_inception_weights(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pytorch_fid")
    import numpy as np

    np.savez(tmp_path / "s.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    weights = _pickled_class(tmp_path / "inception.pth")
    argv = ["fid", str(tmp_path / "s.npz"), str(tmp_path / "s.npz"), "--device", "cpu"]
    code = main([*argv, "--inception-weights", str(weights), "--no-progress"])
    line = assert_one_line_error(capsys, code, "inception.pth", "Pickled")
    assert_never_suggests_unpickling(line)


@pytest.mark.parametrize(
    "name",
    [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ],  # fmt: skip
)
def test_a_fifo_in_a_model_folder_is_named_not_waited_on(tmp_path, capsys, name) -> None:
    from conftest import cli_sample, tiny_pipeline_folder

    model = tiny_pipeline_folder(tmp_path / "model")
    (model / name).unlink()
    fifo(model / name)
    with within(20):
        code = cli_sample("--out", str(tmp_path / "s.png"), model=model)
    assert_one_line_error(capsys, code, f"{model / name} must be a regular file, got a FIFO")


def test_a_fifo_as_inception_weights_is_named_not_waited_on(tmp_path, capsys) -> None:
    pytest.importorskip("pytorch_fid")
    import numpy as np

    np.savez(tmp_path / "s.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    argv = ["fid", str(tmp_path / "s.npz"), str(tmp_path / "s.npz"), "--device", "cpu"]
    with within(20):
        code = main([*argv, "--inception-weights", str(fifo(tmp_path / "w.pth"))])
    assert_one_line_error(capsys, code, "w.pth must be a regular file, got a FIFO")
