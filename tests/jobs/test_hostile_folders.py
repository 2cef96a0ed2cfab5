"""Hostile inputs to the commands that read a sample folder (``pndm sample`` into a folder,
``pndm pack``): a tampered ``pndm.json`` (each field), duplicated seeds, huge ranges, bad
``--seeds``, an extension refused by a later check. Every case: exit 2, one line on stderr
naming the file or flag, no traceback, finished within seconds, nothing written and nothing
changed; refusals of what is read come before any model is loaded.

The tables (`MANIFEST_EDITS`, `MANIFEST_FILES`, `SAMPLE_SEEDS`, `PACK_SEEDS`, `LATER_CHECKS`) are
plain data so that a test walking every command can reuse them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import FAST_SAMPLE, assert_one_line_error, cli_sample, tiny_pipeline_folder

from pndm.cli import main
from pndm.jobs import run as jobs

pytestmark = pytest.mark.usefixtures("one_thread")

SECONDS = 10  # a refusal reads a few small files: far less, even on a busy machine
DELETE = object()  # an edit that removes the key


class Edit(NamedTuple):
    """``pndm.json`` with the value at ``keys`` replaced by ``value`` (or removed: `DELETE`);
    ``needle``: in the one error line of both commands (``pack``: of pack, where it differs)."""

    id: str
    keys: tuple[str, ...]
    value: Any
    needle: str
    pack: str | None = None


WIDTH = "image.width must be an integer in [1, 8192]"
SEEDS = 'seeds must be a seed list such as "0-63,100" naming each seed once'
MANIFEST_EDITS = [
    Edit("format-missing", ("format",), DELETE, "format must be 'pndm-sample-folder/2'"),
    Edit("format-old", ("format",), "pndm-sample-folder/1", "written by an earlier pndm"),
    Edit("format-number", ("format",), 2, "format must be 'pndm-sample-folder/2'"),
    Edit("unknown-field", ("seed_offset",), 5, "file must be an object of format, settings"),
    Edit("unknown-field-named", ("seed_offset",), 5, "got the unknown key 'seed_offset'"),
    Edit("settings-missing", ("settings",), DELETE, "settings must be given, got nothing"),
    Edit("settings-list", ("settings",), [], "settings must be an object of model"),
    Edit("settings-unknown", ("settings", "eta"), 0.5, "settings must be an object of"),
    Edit("model-missing", ("settings", "model"), DELETE, "settings.model must be given"),
    Edit("steps-string", ("settings", "steps"), "4", "settings.steps must be an integer, got '4'"),
    Edit("steps-bool", ("settings", "steps"), True, "settings.steps must be an integer, got True"),
    Edit("options-list", ("settings", "method_options"), [], "method_options must be an object"),
    Edit("timesteps-text", ("settings", "timesteps"), "999", "timesteps must be a list of times"),
    Edit("image-missing", ("image",), DELETE, "image must be given, got nothing"),
    Edit("image-text", ("image",), "16x16", "image must be an object of width, height, mode"),
    Edit("image-extra", ("image", "depth"), 8, "image must be an object of width, height, mode"),
    Edit("image-extra-named", ("image", "depth"), 8, "got the unknown key 'depth'"),
    Edit("calibration-list", ("settings", "calibration"), [], "calibration must be an object"),
    Edit("width-zero", ("image", "width"), 0, f"{WIDTH}, got 0"),
    Edit("width-float", ("image", "width"), 16.0, f"{WIDTH}, got 16.0"),
    Edit("width-bool", ("image", "width"), True, f"{WIDTH}, got True"),
    Edit("width-huge", ("image", "width"), 10**9, f"{WIDTH}, got 1000000000"),
    Edit("width-text", ("image", "width"), "16", f"{WIDTH}, got '16'"),
    Edit("height-negative", ("image", "height"), -16, "image.height must be an integer in"),
    Edit("height-missing", ("image", "height"), DELETE, "image.height must be given"),
    Edit("mode-palette", ("image", "mode"), "P", "image.mode must be one of L, RGB, got 'P'"),
    Edit("mode-rgba", ("image", "mode"), "RGBA", "image.mode must be one of L, RGB"),
    Edit("mode-number", ("image", "mode"), 1, "image.mode must be one of L, RGB, got 1"),
    # Valid values that are not the model's: sample refuses them as a changed setting; pack
    # (which does not know the model) finds no PNG of that size or mode.
    Edit("width-other", ("image", "width"), 8, "image {", "4 of 4 seeds"),
    Edit("mode-other", ("image", "mode"), "RGB", '"mode": "RGB"', "4 of 4 seeds"),
    Edit("versions-missing", ("versions",), DELETE, "versions must be given"),
    Edit("versions-text", ("versions",), "0.1.0", "versions must be an object of pndm, torch"),
    Edit("torch-number", ("versions", "torch"), 2.1, "versions.torch must be a version string"),
    Edit("pndm-missing", ("versions", "pndm"), DELETE, "versions.pndm must be given"),
    Edit("seeds-missing", ("seeds",), DELETE, "seeds must be given, got nothing"),
    Edit("seeds-number", ("seeds",), 7, f"{SEEDS}, got 7"),
    Edit("seeds-list", ("seeds",), [0, 1], f"{SEEDS}, got [0, 1]"),
    Edit("seeds-twice", ("seeds",), "0-3,2", "seed 2 is listed twice"),
    Edit("seeds-overlap", ("seeds",), "0-3,3-5", "seed 3 is listed twice"),
    Edit("seeds-huge-range", ("seeds",), "0-99999999999", "is more than 10000000"),
    Edit("seeds-past-2-64", ("seeds",), "0-3,18446744073709551616", "[0, 2**64)"),
    Edit("seeds-overflow", ("seeds",), "0-99999999999999999999999", "[0, 2**64)"),
    Edit("seeds-descending", ("seeds",), "3-0", "is descending"),
    Edit("seeds-letters", ("seeds",), "0-3,a", "'a' is not a seed"),
    Edit("seeds-trailing-comma", ("seeds",), "0-3,", "'' is not a seed"),
    Edit("seeds-negative", ("seeds",), "-1", "'-1' is not a seed"),
    Edit("seeds-unicode-digits", ("seeds",), "٣", "is not a seed"),
    Edit("seeds-long-repeat", ("seeds",), "0," * 100_000 + "0", "seed 0 is listed twice"),
]
# (id, pndm.json's bytes, needle): files that are no manifest at all
MANIFEST_FILES = [
    ("not-json", b"{", "is not valid JSON"),
    ("a-list", b"[]", "must hold a JSON object"),
    ("binary", b"\xff\xfe\x00garbage", "is not valid JSON"),
    ("empty", b"", "is not valid JSON"),
]
SAMPLE_SEEDS = [  # (id, --seeds, needle): into a folder
    ("overflow", "0-99999999999999999999999", "seeds must be integers in [0, 2**64)"),
    ("huge-range", "0-99999999999", "images in one run is more than 10000000"),
    ("long-number", "9" * 5000, "(5000 characters)"),
    ("unicode-digits", "١٢", "is not a seed"),
    ("twice", "0-5,3", "seed 3 is listed twice"),
]

PACK_SEEDS = [  # (id, pack --seeds, needle): the folder records seeds 0-3
    ("empty", "", "'' is not a seed"),
    ("letters", "a", "'a' is not a seed"),
    ("descending", "3-1", "is descending"),
    ("twice", "0,1,0", "seed 0 is listed twice"),
    ("huge-range", "0-99999999999", "images in one pack is more than 10000000"),
    ("overflow", "0-99999999999999999999999", "seeds must be integers in [0, 2**64)"),
    ("past-2-64", "18446744073709551616", "seeds must be integers in [0, 2**64)"),
    ("not-recorded", "0,7,9-10", "3 of these seeds are not recorded in"),
    ("not-recorded-many", "0-999", "996 of these seeds are not recorded in"),
]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None: a folder)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sampled") / "f"
    assert cli_sample("--seeds", "0-3", "--out", str(folder)) == 0
    return folder


@pytest.fixture
def folder(sampled: Path, tmp_path: Path) -> Path:
    """A copy of a finished 4-seed folder."""
    return Path(shutil.copytree(sampled, tmp_path / "f"))


@pytest.fixture
def no_load(monkeypatch) -> None:
    """Loading a model fails the test: these refusals come before it."""
    from pndm.compat import folders

    monkeypatch.setattr(folders, "load_unet", lambda *a, **k: pytest.fail("loaded the model"))


def edit(folder: Path, change: Edit) -> None:
    path = folder / "pndm.json"
    data = json.loads(path.read_text())
    *parents, key = change.keys
    inner = data
    for name in parents:
        inner = inner[name]
    if change.value is DELETE:
        del inner[key]
    else:
        inner[key] = change.value
    path.write_text(json.dumps(data))


def refused(capsys, tmp_path: Path, command: list[str], *needles: str) -> str:
    """Run ``command``: exit 2, one stderr line with every needle, within `SECONDS`, nothing
    under ``tmp_path`` written or changed."""
    before = snapshot(tmp_path)
    capsys.readouterr()
    start = time.monotonic()
    code = main(command)
    seconds = time.monotonic() - start
    line = assert_one_line_error(capsys, code, *needles)
    assert seconds < SECONDS, f"took {seconds:.1f} s"
    assert snapshot(tmp_path) == before
    return line


def sample_into(folder: Path, *args: str) -> list[str]:
    return ["sample", *FAST_SAMPLE, *args, "--out", str(folder)]


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize("change", MANIFEST_EDITS, ids=[e.id for e in MANIFEST_EDITS])
def test_sample_refuses_a_tampered_manifest(folder, tmp_path, capsys, change: Edit) -> None:
    edit(folder, change)
    line = refused(capsys, tmp_path, sample_into(folder, "--seeds", "0-5"), change.needle)
    assert "pndm.json" in line


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize("change", MANIFEST_EDITS, ids=[e.id for e in MANIFEST_EDITS])
def test_pack_refuses_a_tampered_manifest(folder, tmp_path, capsys, change: Edit) -> None:
    edit(folder, change)
    command = ["pack", str(folder), str(tmp_path / "p.npz")]
    refused(capsys, tmp_path, command, change.pack or change.needle)


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize(("content", "needle"), [c[1:] for c in MANIFEST_FILES],
                         ids=[c[0] for c in MANIFEST_FILES])  # fmt: skip
def test_a_manifest_that_is_no_manifest_is_refused(folder, tmp_path, capsys, content, needle):
    (folder / "pndm.json").write_bytes(content)
    refused(capsys, tmp_path, sample_into(folder, "--seeds", "0-5"), needle, "pndm.json")
    refused(capsys, tmp_path, ["pack", str(folder), str(tmp_path / "p.npz")], needle, "pndm.json")


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize(("spec", "needle"), [c[1:] for c in SAMPLE_SEEDS],
                         ids=[c[0] for c in SAMPLE_SEEDS])  # fmt: skip
def test_sample_refuses_bad_seeds_for_a_folder(folder, tmp_path, capsys, spec, needle) -> None:
    refused(capsys, tmp_path, sample_into(folder, "--seeds", spec), needle)


@pytest.mark.usefixtures("no_load")
def test_a_refused_line_stays_short_for_a_huge_value(folder, tmp_path, capsys) -> None:
    edit(folder, Edit("", ("seeds",), "x" * 1_000_000, ""))
    line = refused(capsys, tmp_path, ["pack", str(folder), str(tmp_path / "p.npz")], "seeds")
    assert len(line) < 500


@pytest.mark.usefixtures("no_load")
def test_an_extension_past_the_image_limit_is_refused(folder, tmp_path, capsys, monkeypatch):
    from pndm.jobs import seeds

    monkeypatch.setattr(seeds, "MAX_IMAGES", 5)  # the folder holds 4: 2 more make 6
    needle = f"6 images in the sample folder {folder} is more than 5"
    refused(capsys, tmp_path, sample_into(folder, "--seeds", "3-5"), needle)


@pytest.mark.usefixtures("no_load")
def test_a_model_whose_images_a_folder_cannot_hold_is_refused(tmp_path, capsys) -> None:
    model = tiny_pipeline_folder(tmp_path / "model", sample_size=8200)
    needle = "this model makes 8200x8200 RGB images; a sample folder holds"
    refused(capsys, tmp_path, [*sample_into(tmp_path / "f", "--model", str(model))], needle)


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize(("spec", "needle"), [c[1:] for c in PACK_SEEDS],
                         ids=[c[0] for c in PACK_SEEDS])  # fmt: skip
def test_pack_refuses_bad_seeds(folder, tmp_path, capsys, spec, needle) -> None:
    command = ["pack", str(folder), str(tmp_path / "p.npz"), "--seeds", spec]
    refused(capsys, tmp_path, command, needle)


@pytest.mark.usefixtures("no_load")
def test_pack_refuses_recorded_seeds_without_a_png(folder, tmp_path, capsys) -> None:
    (folder / "seed000002.png").unlink()
    command = ["pack", str(folder), str(tmp_path / "p.npz"), "--seeds", "3,2,0"]
    refused(capsys, tmp_path, command, "1 of 3 seeds in", "have no complete PNG (2)")


# ----------------------------------------------------------------------------- refused runs
# A run refused by a check after the manifest's (the seed names, the model, the room) writes
# nothing: an extension leaves pndm.json as it was, a first run leaves no folder.


def no_room(monkeypatch) -> None:
    from types import SimpleNamespace

    from pndm.jobs import destinations

    full = SimpleNamespace(f_bavail=0, f_frsize=4096, f_files=0, f_favail=0)
    monkeypatch.setattr(destinations.os, "statvfs", lambda path: full)


def broken_weights(monkeypatch) -> None:
    from pndm.compat import folders

    def load(*args, **kwargs):
        raise ValueError("diffusion_pytorch_model.safetensors is damaged")

    monkeypatch.setattr(folders, "load_unet", load)


def no_memory(monkeypatch) -> None:
    from pndm.runtime import fast

    monkeypatch.setattr(fast, "free_memory", lambda device: 1000)


LATER_CHECKS = [  # (id, how the check fails, needle)
    ("no-disk", no_room, "GiB of disk"),
    ("broken-weights", broken_weights, "is damaged"),
    ("no-memory", no_memory, "needs about"),
]


@pytest.mark.parametrize("first", [False, True], ids=["extension", "first-run"])
@pytest.mark.parametrize(("fail", "needle"), [c[1:] for c in LATER_CHECKS],
                         ids=[c[0] for c in LATER_CHECKS])  # fmt: skip
def test_a_run_refused_by_a_later_check_writes_nothing(
    folder, tmp_path, capsys, monkeypatch, first, fail, needle
) -> None:
    out = tmp_path / "new" if first else folder
    fail(monkeypatch)
    monkeypatch.setattr(jobs, "sample_batch", lambda *a: pytest.fail("sampled"))
    refused(capsys, tmp_path, sample_into(out, "--seeds", "0-5"), needle)
    assert not (tmp_path / "new").exists()


def test_an_extension_onto_an_unreplaceable_seed_name_writes_nothing(folder, tmp_path, capsys):
    (folder / "seed000005.png").mkdir()
    refused(capsys, tmp_path, sample_into(folder, "--seeds", "0-7"), "seed000005.png")
