"""The one JSON reader (`pndm.files.jsonfile.read_json`): bounded in size and depth, finite
numbers, unique keys, one line naming the file; and the files pndm reads through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli_sample, tiny_pipeline_folder
from hostile_files import deep_json, sparse_file

from pndm.cli import main
from pndm.files.jsonfile import MAX_JSON_BYTES, MAX_JSON_DEPTH, nesting_depth, read_json


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (deep_json(), f"must nest at most {MAX_JSON_DEPTH} levels deep, got 100000"),
        ('{"a": ' + deep_json(MAX_JSON_DEPTH) + "}", "levels deep, got 33"),
        ('{"a": NaN}', "must hold finite numbers, got NaN"),
        ('{"a": [-Infinity]}', "must hold finite numbers, got -Infinity"),
        ('{"a": 1e400}', "must hold finite numbers, got 1e400"),
        ('{"seeds": "0-7", "seeds": "0-9"}', "must name each key once, got 'seeds' twice"),
        ('{"a": ' + "9" * 5000 + "}", "is not valid JSON"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object, got list"),
    ],
    ids=["deep", "depth 33", "NaN", "-Infinity", "overflow", "duplicate", "digits", "bad", "list"],
)
def test_bad_json_is_one_line_naming_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as err:
        read_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_json_within_the_bounds_is_read(tmp_path: Path) -> None:
    data = {"a": json.loads(deep_json(MAX_JSON_DEPTH - 1)), "b": "[[[[ {{", "c": 1e300}
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert read_json(tmp_path / "c.json") == data


def test_non_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="c.json is not valid JSON"):
        read_json(tmp_path / "c.json")


def test_a_huge_json_file_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "c.json", MAX_JSON_BYTES + 1)
    with pytest.raises(
        ValueError, match=r"config file .*c.json must be at most 16 MiB, got 16 MiB"
    ):
        read_json(path)


def test_brackets_in_strings_do_not_count() -> None:
    assert nesting_depth('{"a": "[[[[\\"[[", "b": [[]]}') == 3
    assert nesting_depth("") == 0


# ----------------------------------------------------------------------------- the files


def test_deep_json_in_a_unet_config_is_one_line(tmp_path: Path, capsys) -> None:
    model = tiny_pipeline_folder(tmp_path / "model")
    (model / "unet" / "config.json").write_text(deep_json())
    code = cli_sample("--out", str(tmp_path / "s.png"), model=model)
    assert_one_line_error(capsys, code, "config.json must nest at most")
    code = main(["info", str(model)])
    assert_one_line_error(capsys, code, "config.json must nest at most")


def test_deep_json_in_a_grid_file_is_one_line(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text('{"timesteps": ' + deep_json() + "}")
    code = main(["sample", "--timesteps", str(grid), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(capsys, code, "grid.json must nest at most")
    assert not (tmp_path / "s.png").exists()


def test_deep_json_in_a_manifest_is_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples"
    assert cli_sample("--seeds", "0-1", "--out", str(out)) == 0
    (out / "pndm.json").write_text('{"seeds": ' + deep_json() + "}")
    capsys.readouterr()
    assert_one_line_error(capsys, cli_sample("--seeds", "0-1", "--out", str(out)), "pndm.json")
    code = main(["pack", str(out), str(tmp_path / "p.npz")])
    assert_one_line_error(capsys, code, "pndm.json must nest at most")
