"""Scale: torchrun ranks, the sample-folder manifest, resume after SIGKILL, and ``pndm pack``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_SAMPLE, assert_one_line_error, cli_sample
from PIL import Image

from pndm.cli import main
from pndm.cli.signals import EXIT_INTERRUPTED
from pndm.images import is_complete_png
from pndm.jobs import manifest

PNDM = [sys.executable, "-m", "pndm.cli"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path: Path) -> None:
    """2 gloo ranks write byte-identical PNGs to a 1-process run at the same --batch-size, each
    rank sampling its own half of the seeds (a batch padded to the job's size: see
    test_an_image_depends_on_its_batch_only_through_the_batch_size)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args = ["sample", "--seeds", "0-10", "--batch-size", "2", "--out", str(tmp_path / "ranks")]
    cmd = [*torchrun, "--nproc_per_node=2", "-m", "pndm.cli", *args, *FAST_SAMPLE]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote 11 images on 2 ranks [6, 5]" in result.stderr
    assert result.stderr.count("wrote 11 images") == 1  # only rank 0 prints the summary
    assert cli_sample("--seeds", "0-10", "--batch-size", "2", "--out", str(tmp_path / "one")) == 0
    assert files(tmp_path / "ranks") == files(tmp_path / "one")


@pytest.mark.slow
def test_torchrun_refuses_single_file_outputs(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*torchrun, "--nproc_per_node=2", "-m", "pndm.cli", "sample", *FAST_SAMPLE]
    result = subprocess.run(
        [*cmd, "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "pndm pack" in result.stderr
    assert not (tmp_path / "x.npz").exists()


def test_an_image_depends_on_its_batch_only_through_the_batch_size() -> None:
    """At a fixed batch size an image's every bit is independent of its neighbours and its
    place in the batch, which is what padding each batch to the job's size relies on. (Across
    batch sizes oneDNN picks other kernels: the last bits may differ, like across threads.)"""
    import torch

    from pndm import PNDMPipeline
    from pndm.assets import shipped_model_path

    unet = PNDMPipeline.from_pretrained(shipped_model_path()).unet
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 500.0)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = unet(x[:8], t).sample
        shuffled = unet(x[:8][perm], t).sample
        neighbours = unet(torch.cat([x[:4], x[12:]]), t).sample
    assert torch.equal(shuffled, first[perm])
    assert torch.equal(neighbours[:4], first[:4])


# ----------------------------------------------------------------------------- SIGKILL, resume


def _watch_then_kill(proc: subprocess.Popen, folder: Path, after: int) -> None:
    """Until ``after`` seed PNGs exist: every file under a seed's name must be complete."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = sorted(folder.glob("seed*.png")) if folder.is_dir() else []
        for path in done:
            assert is_complete_png(path, 16, 16, "L"), f"partial file under a final name: {path}"
        if len(done) >= after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_then_rerun_completes_exactly_the_missing_seeds(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [
        *PNDM,
        "sample",
        "--seeds",
        "0-23",
        "--batch-size",
        "3",
        "--out",
        str(out),
        *FAST_SAMPLE,
    ]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    _watch_then_kill(proc, out, after=4)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = {p.name for p in out.glob("seed*.png")}
    assert 4 <= len(before) < 24
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"wrote {24 - len(before)} images ({len(before)} already there)" in rerun.stderr
    assert cli_sample("--seeds", "0-23", "--batch-size", "3", "--out", str(tmp_path / "whole")) == 0
    assert files(out) == files(tmp_path / "whole")


def test_a_corrupt_file_under_a_seed_name_is_redone(tmp_path: Path, capsys) -> None:
    out = tmp_path / "f"
    assert cli_sample("--seeds", "0-3", "--out", str(out)) == 0
    good = (out / "seed000002.png").read_bytes()
    (out / "seed000002.png").write_bytes(good[: len(good) // 2])  # truncated
    Image.new("L", (8, 8)).save(out / "seed000003.png")  # wrong size
    (out / ".seed000001.png.abc.tmp").write_bytes(b"debris of a killed run")
    capsys.readouterr()
    assert cli_sample("--seeds", "0-3", "--out", str(out)) == 0
    assert "wrote 2 images (2 already there)" in capsys.readouterr().err
    assert cli_sample("--seeds", "0-3", "--out", str(tmp_path / "clean")) == 0
    assert files(out) == files(tmp_path / "clean")


# ----------------------------------------------------------------------------- manifest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "f"
    assert cli_sample("--seeds", "0-1", "--out", str(out)) == 0
    return out


def _other_weights(tmp_path: Path) -> Path:
    from pndm.assets import shipped_model_path
    from pndm.files.weights import read_weights, save_state_dict

    model = tmp_path / "other-model"
    shutil.copytree(shipped_model_path(), model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    state = read_weights(weights)
    state["conv_out.bias"] = state["conv_out.bias"] + 0.01
    save_state_dict(weights, state)
    return model


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "ddim"], "method 'ddim' (pndm.json: 'f-pndm')"),
        (["--steps", "5"], "steps 5 (pndm.json: 4)"),
        (["--dtype", "bfloat16"], "dtype 'bfloat16' (pndm.json: 'float32')"),
        (["--model", "OTHER"], "model 'sha256:"),
    ],
)
def test_other_settings_are_refused_before_loading(
    folder, tmp_path, capsys, monkeypatch, args, needle
):
    from pndm.compat import folders

    if "OTHER" in args:
        args = ["--model", str(_other_weights(tmp_path))]
    monkeypatch.setattr(folders, "load_unet", lambda *a, **k: pytest.fail("loaded the model"))
    before = files(folder)
    capsys.readouterr()
    code = cli_sample("--seeds", "0-3", *args, "--out", str(folder))
    assert_one_line_error(capsys, code, "holds images made with other settings", needle)
    assert files(folder) == before


def test_timesteps_and_method_options_are_pixel_deciding() -> None:
    base = {"model": "m", "method": "ipndm", "method_options": {}, "steps": 4}
    base |= {"timesteps": None, "dtype": "float32"}
    assert manifest.differences(base, dict(base)) == []
    assert manifest.differences(base, base | {"timesteps": [999.0, 500.0]}) == [
        "timesteps [999.0, 500.0] (pndm.json: null)"
    ]
    assert manifest.differences(base, base | {"method_options": {"afs": True}}) == [
        'method_options {"afs": true} (pndm.json: {})'
    ]


def test_more_seeds_extend_the_manifest_in_order(folder: Path) -> None:
    assert cli_sample("--seeds", "7,5,0-3", "--out", str(folder)) == 0
    assert json.loads((folder / "pndm.json").read_text())["seeds"] == "0-1,7,5,2-3"
    assert manifest.read(folder).seeds == [0, 1, 7, 5, 2, 3]


def test_a_seed_list_pndm_could_not_read_back_is_refused(folder, capsys, monkeypatch) -> None:
    monkeypatch.setattr(manifest, "MAX_JSON_BYTES", 1000)  # the real bound, 16 MiB, scaled down
    before = files(folder)
    scattered = ",".join(str(seed) for seed in range(10, 400, 2))  # about 1 kB of seed spec
    capsys.readouterr()
    code = cli_sample("--seeds", scattered, "--out", str(folder))
    assert_one_line_error(capsys, code, "seed list would make pndm.json", "seed ranges (a-b)")
    assert files(folder) == before
    assert cli_sample("--seeds", "10-400", "--out", str(folder)) == 0  # a range fits


def _other_torch(folder: Path) -> None:
    data = json.loads((folder / "pndm.json").read_text())
    data["versions"]["torch"] = "1.0.0"
    (folder / "pndm.json").write_text(json.dumps(data))


def test_other_versions_only_warn_in_one_line(folder: Path, capsys) -> None:
    _other_torch(folder)
    capsys.readouterr()
    assert cli_sample("--seeds", "0-2", "--out", str(folder)) == 0
    warning, summary = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: this folder was sampled with other versions: torch ")
    assert warning.endswith("(pndm.json: 1.0.0); new images may differ from the old ones in the "
                            "last bits")  # fmt: skip
    assert summary.startswith("wrote 1 images (2 already there)")


def test_the_library_warns_and_prints_nothing(folder: Path, capsys) -> None:
    from pndm.jobs.job import SampleJob
    from pndm.jobs.run import run_job

    _other_torch(folder)
    capsys.readouterr()
    job = SampleJob(out=folder, seeds=[0, 1], steps=4, progress=False, threads=1)
    with pytest.warns(manifest.VersionsWarning, match=r"torch .* \(pndm.json: 1.0.0\)"):
        assert run_job(job).skipped == 2
    assert capsys.readouterr().err == ""


def test_a_folder_of_unknown_images_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "old"
    out.mkdir()
    Image.new("L", (16, 16)).save(out / "seed000000.png")
    assert_one_line_error(capsys, cli_sample("--seeds", "0-1", "--out", str(out)), "no pndm.json")


# ----------------------------------------------------------------------------- pack


def test_pack_is_the_npz_in_manifest_order(folder: Path, tmp_path: Path) -> None:
    assert cli_sample("--seeds", "9,4", "--out", str(folder)) == 0
    assert main(["pack", str(folder), str(tmp_path / "p.npz")]) == 0
    assert cli_sample("--seeds", "0,1,9,4", "--out", str(tmp_path / "direct.npz")) == 0
    with np.load(tmp_path / "p.npz") as packed, np.load(tmp_path / "direct.npz") as direct:
        assert packed["arr_0"].dtype == np.uint8 and packed["arr_0"].shape == (4, 16, 16, 1)
        assert packed["seeds"].dtype == np.uint64
        assert packed["seeds"].tolist() == [0, 1, 9, 4]
        np.testing.assert_array_equal(packed["arr_0"], direct["arr_0"])
        np.testing.assert_array_equal(packed["seeds"], direct["seeds"])


def test_pack_refuses_missing_seeds_naming_them(folder: Path, tmp_path: Path, capsys) -> None:
    assert cli_sample("--seeds", "0-9", "--out", str(folder)) == 0
    for seed in (3, 4, 5, 6, 7, 8):
        os.unlink(folder / f"seed{seed:06d}.png")
    capsys.readouterr()
    code = main(["pack", str(folder), str(tmp_path / "p.npz")])
    assert_one_line_error(capsys, code, "6 of 10 seeds", "(3, 4, 5, 6, 7 ...)")
    assert not (tmp_path / "p.npz").exists()


def test_pack_refuses_a_plain_folder_and_an_existing_output(tmp_path: Path, folder, capsys):
    assert_one_line_error(
        capsys, main(["pack", str(tmp_path), str(tmp_path / "p.npz")]), "no pndm.json"
    )
    (tmp_path / "p.npz").write_bytes(b"keep me")
    assert_one_line_error(
        capsys, main(["pack", str(folder), str(tmp_path / "p.npz")]), "--overwrite"
    )
    assert (tmp_path / "p.npz").read_bytes() == b"keep me"


def test_pack_checks_its_output_like_sample(folder: Path, tmp_path: Path, capsys) -> None:
    missing_parent = tmp_path / "no" / "p.npz"
    code = main(["pack", str(folder), str(missing_parent)])
    assert_one_line_error(capsys, code, "folder not found for OUT")
    code = main(["pack", str(folder), str(tmp_path)])
    assert_one_line_error(capsys, code, "is a folder; give a file name ending in .npz")
    (tmp_path / "d.npz").mkdir()  # a folder named like the output: not "writes an .npz"
    code = main(["pack", str(folder), str(tmp_path / "d.npz")])
    assert_one_line_error(capsys, code, "d.npz is a folder; give a file name ending in .npz")
    code = main(["pack", str(folder), str(tmp_path / "p.txt")])
    assert_one_line_error(capsys, code, "OUT writes .npz files")


def test_pack_seeds_packs_a_subset_in_its_order(folder: Path, tmp_path: Path) -> None:
    assert cli_sample("--seeds", "9,4", "--out", str(folder)) == 0
    assert main(["pack", str(folder), str(tmp_path / "p.npz"), "--seeds", "4,0"]) == 0
    assert cli_sample("--seeds", "4,0", "--out", str(tmp_path / "direct.npz")) == 0
    with np.load(tmp_path / "p.npz") as packed, np.load(tmp_path / "direct.npz") as direct:
        assert packed["seeds"].tolist() == [4, 0]
        np.testing.assert_array_equal(packed["arr_0"], direct["arr_0"])


def _interrupt_after(monkeypatch, batches: int) -> None:
    """Ctrl-C while the batch after ``batches`` batches is sampled."""
    from pndm.jobs import run as jobs

    real, done = jobs.sample_batch, []

    def sample(*args):
        if len(done) == batches:
            raise KeyboardInterrupt
        done.append(True)
        return real(*args)

    monkeypatch.setattr(jobs, "sample_batch", sample)


def test_an_interrupted_extension_leaves_the_manifest_as_it_was(
    folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A Ctrl-C'd typo (0-49999 for 0-4) records nothing: pack still packs the recorded seeds,
    and the images it did write count once the seeds are asked for again."""
    before = (folder / "pndm.json").read_bytes()
    _interrupt_after(monkeypatch, 1)
    args = ("--batch-size", "2", "--out", str(folder))
    assert cli_sample("--seeds", "0-49999", *args) == EXIT_INTERRUPTED
    assert (folder / "pndm.json").read_bytes() == before
    assert sorted(p.name for p in folder.glob("seed*.png"))[-1] == "seed000003.png"
    assert main(["pack", str(folder), str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as packed:
        assert packed["seeds"].tolist() == [0, 1]
    monkeypatch.undo()
    capsys.readouterr()
    assert cli_sample("--seeds", "0-4", *args) == 0
    assert "wrote 1 images (4 already there)" in capsys.readouterr().err
    assert manifest.read(folder).seeds == [0, 1, 2, 3, 4]


def test_an_interrupted_first_run_records_the_settings_and_no_seeds(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "f"
    _interrupt_after(monkeypatch, 1)
    assert cli_sample("--seeds", "0-3", "--batch-size", "2", "--out", str(out)) == EXIT_INTERRUPTED
    assert manifest.read(out).seeds == [] and len(list(out.glob("seed*.png"))) == 2
    capsys.readouterr()
    code = main(["pack", str(out), str(tmp_path / "p.npz")])
    assert_one_line_error(capsys, code, "records no seeds yet")
    code = cli_sample("--seeds", "0-3", "--steps", "5", "--out", str(out))  # its PNGs are guarded
    assert_one_line_error(capsys, code, "steps 5 (pndm.json: 4)")
    monkeypatch.undo()
    assert cli_sample("--seeds", "0-3", "--batch-size", "2", "--out", str(out)) == 0
    assert manifest.read(out).seeds == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_without_a_hang(tmp_path: Path) -> None:
    """Rank 1's share (seeds 1, 3) holds a folder under a seed's name: rank 1 stops with that
    error before sampling while rank 0 waits for it in a collective; torchrun must end both."""
    out = tmp_path / "f"
    assert cli_sample("--seeds", "0", "--out", str(out)) == 0
    (out / "seed000001.png").mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*torchrun, "--nproc_per_node=2", "-m", "pndm.cli", "sample", *FAST_SAMPLE]
    start = time.monotonic()
    result = subprocess.run(
        [*cmd, "--seeds", "0-3", "--out", str(out)], capture_output=True, text=True, timeout=240
    )
    assert result.returncode != 0
    assert "seed000001.png" in result.stderr and "are not files" in result.stderr
    assert time.monotonic() - start < 120
    assert manifest.read(out).seeds == [0]  # rank 0 waited for rank 1's checks: nothing recorded
