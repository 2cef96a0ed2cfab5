"""The one output policy (`pndm.files.destinations`): what a file or folder destination may be, and
a folder replaced as a whole: killed at any moment, it holds the old contents or the new, never a
mix and never neither."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pndm.files import destinations
from pndm.files.destinations import check_new_file, check_new_folder, replacing

OLD = {"model_index.json": "old index", "unet/w": "old weights", "scheduler/c": "old config"}
NEW = {"model_index.json": "new index", "unet/w": "new weights", "scheduler/c": "new config"}
OWNED = ("model_index.json", "unet", "scheduler")


def write_tree(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def read_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()
    }


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("name", "setup", "overwrite", "error", "words"),
    [
        ("", None, False, ValueError, "--out is empty"),
        ("a.txt", None, False, ValueError, "--out writes .npz files; got"),
        ("d.npz", "dir", True, FileExistsError, "is a folder; give a file name ending in .npz"),
        ("f.npz", "file", False, FileExistsError, "exists; pass --overwrite to replace it"),
        ("no/such/f.npz", None, True, FileNotFoundError, "folder not found for --out"),
        ("link.npz", "fifo", True, FileExistsError, "exists and is not a regular file"),
    ],
)
def test_a_bad_file_destination_is_refused(tmp_path, name, setup, overwrite, error, words) -> None:
    path = tmp_path / name if name else ""
    if setup == "dir":
        path.mkdir()
    elif setup == "file":
        path.write_text("kept")
    elif setup == "fifo":
        os.mkfifo(path)
    with pytest.raises(error, match=words):
        check_new_file(path, overwrite=overwrite, suffixes=(".npz",), what="--out")


def test_a_good_file_destination_is_returned(tmp_path: Path) -> None:
    (tmp_path / "f.NPZ").write_text("old")
    assert check_new_file(tmp_path / "f.NPZ", overwrite=True, suffixes=(".npz",), what="x")
    assert check_new_file(tmp_path / "g.npz", overwrite=False, suffixes=(".npz",), what="x")


def test_folder_destinations(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        check_new_folder(tmp_path / "file", overwrite=True, what="DST")
    write_tree(tmp_path / "full", {"a": "b"})
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite to replace it or so"):
        check_new_folder(tmp_path / "full", overwrite=False, what="DST", other=" or so")
    with pytest.raises(FileNotFoundError, match="folder not found for DST"):
        check_new_folder(tmp_path / "a" / "b", overwrite=False, what="DST")
    (tmp_path / "empty").mkdir()
    for ok in ("full", "empty", "new"):
        check_new_folder(tmp_path / ok, overwrite=True, what="DST")


# ----------------------------------------------------------------------------- replacing


def test_replacing_swaps_whole_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "model"
    write_tree(out, {**OLD, "notes.txt": "mine", "extra/deep.txt": "mine too"})
    out.chmod(0o751)
    with replacing(out, OWNED) as staging:
        assert read_tree(out) == {**OLD, "notes.txt": "mine", "extra/deep.txt": "mine too"}
        write_tree(staging, NEW)
    assert read_tree(out) == {**NEW, "notes.txt": "mine", "extra/deep.txt": "mine too"}
    assert (out.stat().st_mode & 0o777) == 0o751
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left


def test_a_failed_build_leaves_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "model"
    write_tree(out, OLD)
    with pytest.raises(RuntimeError), replacing(out, OWNED) as staging:
        write_tree(staging, {"unet/w": "half"})
        raise RuntimeError("broke")
    assert read_tree(out) == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_new_folder_appears_complete(tmp_path: Path) -> None:
    with replacing(tmp_path / "model", OWNED) as staging:
        write_tree(staging, NEW)
        assert not (tmp_path / "model").exists()
    assert read_tree(tmp_path / "model") == NEW


def test_without_an_exchange_two_renames_do(tmp_path: Path, monkeypatch) -> None:
    def unsupported(a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "no RENAME_EXCHANGE here")

    monkeypatch.setattr(destinations, "_exchange", unsupported)
    out = tmp_path / "model"
    write_tree(out, {**OLD, "notes.txt": "mine"})
    with replacing(out, OWNED) as staging:
        write_tree(staging, NEW)
    assert read_tree(out) == {**NEW, "notes.txt": "mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# A child process replaces a folder and dies (os._exit: no cleanup, as SIGKILL) at its K-th file
# system operation, seen through an audit hook; K runs over every operation the replacement makes.
KILLED_AT = """
import os, sys
from pathlib import Path
K, out = int(sys.argv[1]), Path(sys.argv[2])
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
EVENTS = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.link",
          "os.symlink", "os.chmod", "shutil.rmtree", "ctypes.call_function", "os.truncate"}
seen = 0
def hook(event, args):
    global seen
    writes = event == "open" and (args[2] & WRITES or (args[1] or "r") != "r")
    if event in EVENTS or writes:
        seen += 1
        if seen == K:
            os._exit(137)
from pndm.files.destinations import replacing
sys.addaudithook(hook)
with replacing(out, ("model_index.json", "unet", "scheduler")) as staging:
    for name, text in {NEW}.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
print("done", seen)
"""


def test_killed_at_any_moment_the_folder_is_old_or_new(tmp_path: Path) -> None:
    script = KILLED_AT.replace("{NEW}", repr(NEW))
    finals = []
    for k in range(1, 200):
        out = tmp_path / f"run{k}" / "model"
        write_tree(out, {**OLD, "notes.txt": "mine"})
        run = subprocess.run([sys.executable, "-c", script, str(k), str(out)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        tree = read_tree(out)
        assert tree in ({**OLD, "notes.txt": "mine"}, {**NEW, "notes.txt": "mine"}), (k, tree)
        finals.append(tree == {**NEW, "notes.txt": "mine"})
        if run.returncode == 0:
            assert "done" in run.stdout
            break
        assert run.returncode == 137, run.stderr
    else:
        pytest.fail("the replacement never finished")
    assert finals[-1] and not finals[0] and k > 10  # killed before and after the exchange
