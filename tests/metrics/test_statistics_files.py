"""Hostile statistics and sample files for ``pndm fid``: each refused in one line naming the file,
before any network loads; two statistics files compared without a feature network."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error
from hostile_files import assert_one_line, bomb_png, fifo, run_pndm, symlink_loop, without_iend

from pndm.cli import main
from pndm.metrics import fid, inception, load_statistics, save_statistics, statistics_of
from pndm.metrics.frechet import Statistics, clamped, frechet_distance


def _digits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def _stats(**arrays) -> dict:
    base = {"mu": np.zeros(64), "sigma": np.eye(64), "features": np.str_("digits")}
    return {k: v for k, v in {**base, **arrays}.items() if v is not None}


BAD_STATISTICS = {
    "count array": (_stats(count=np.array([5, 6, 7])), "count must be an integer, got int64"),
    "count 1": (_stats(count=np.int64(1)), "count must be an integer >= 2, got 1"),
    "features": (_stats(features=np.str_("resnet")), "features must be one of inception, digits"),
    "features array": (_stats(features=np.array(["a", "b"])), "features must be a string"),
    "extra": (_stats(extra=np.zeros(2)), "must hold only mu, sigma, features, count"),
    "asymmetric": (_stats(sigma=np.eye(64) + np.triu(np.ones((64, 64)), 1)), "symmetric"),
    "negative": (_stats(sigma=-np.eye(64)), "positive semi-definite"),
    "indefinite": (_stats(sigma=np.diag([1.0] * 63 + [-0.5])), "positive semi-definite"),
    "NaN": (_stats(mu=np.full(64, np.nan)), "NaN or inf"),
    "int sigma": (_stats(sigma=np.eye(64, dtype=np.int64)), "sigma must be a 2-d float array"),
    "mu 2-d": (_stats(mu=np.zeros((64, 1))), "mu must be a 1-d float array"),
    "shapes": (_stats(sigma=np.eye(63)), "mu must be (d,) and sigma (d, d)"),
    "pickled": (_stats(sigma=np.array([None], dtype=object)), "pndm never unpickles"),
    "huge mu": (_stats(mu=np.zeros(8193)), "mu must have at most 8192 features"),
}


@pytest.mark.parametrize("name", BAD_STATISTICS)
def test_a_bad_statistics_file_is_one_line_naming_it(tmp_path: Path, capsys, name: str) -> None:
    arrays, words = BAD_STATISTICS[name]
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    np.savez(tmp_path / "s.npz", arr_0=_digits(4, 0))
    code = main(["fid", str(tmp_path / "s.npz"), str(path), "--device", "cpu"])
    line = assert_one_line_error(capsys, code, words, str(path))
    assert "allow_pickle" not in line


BAD_SAMPLES = {
    "0x0": (np.zeros((4, 0, 0, 1), np.uint8), "arr_0's images must have 1 to"),
    "no images": (np.zeros((0, 16, 16, 1), np.uint8), "holds 0 image(s)"),
    "pickled": (np.array([None, 1], dtype=object), "pndm never unpickles"),
    "4 channels": (np.zeros((4, 16, 16, 4), np.uint8), "arr_0 must be uint8 (N, H, W, C)"),
}


@pytest.mark.parametrize("name", BAD_SAMPLES)
def test_a_bad_sample_file_is_one_line_naming_it(tmp_path: Path, capsys, name: str) -> None:
    images, words = BAD_SAMPLES[name]
    path = tmp_path / "s.npz"
    np.savez(path, arr_0=images)
    for argv in ([str(path), "digits"], [str(tmp_path / "ok.npz"), str(path)]):
        np.savez(tmp_path / "ok.npz", arr_0=_digits(4, 0))
        code = main(["fid", *argv, "--features", "digits", "--device", "cpu"])
        line = assert_one_line_error(capsys, code, words, str(path))
        assert "allow_pickle" not in line


def test_unknown_arrays_beside_arr_0_are_refused(tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "s.npz", arr_0=_digits(4, 0), captions=np.zeros(4))
    code = main(["fid", str(tmp_path / "s.npz"), "digits", "--device", "cpu"])
    assert_one_line_error(capsys, code, "must hold only arr_0, seeds, labels", "captions")


def test_a_bad_image_in_a_folder_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    import PIL.Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        PIL.Image.fromarray(_digits(1, i)[0, ..., 0]).save(folder / f"{i}.png")
    good = (folder / "2.png").read_bytes()
    for bad, words in ((bomb_png(), "pixels, got 20000x10000"), (without_iend(good), "IEND")):
        (folder / "2.png").write_bytes(bad)
        code = main(["fid", str(folder), "digits", "--device", "cpu"])
        assert_one_line_error(capsys, code, str(folder / "2.png"), words)
    (folder / "2.png").unlink()
    symlink_loop(folder / "2.png")
    code = main(["fid", str(folder), "digits", "--device", "cpu"])
    assert_one_line_error(capsys, code, "2.png must be a regular file, got a symlink loop")


def test_fifos_are_refused_without_blocking(tmp_path: Path) -> None:
    """Samples, a reference and an image in a folder that are FIFOs: each one line, at once."""
    np.savez(tmp_path / "ok.npz", arr_0=_digits(4, 0))
    folder = tmp_path / "images"
    folder.mkdir()
    fifo(folder / "0.png")
    fifo(folder / "1.png")
    fifo(tmp_path / "f.npz")
    start = time.monotonic()
    for argv, words in (
        ([str(tmp_path / "f.npz"), "digits"], "f.npz must be a regular file, got a FIFO"),
        ([str(tmp_path / "ok.npz"), str(tmp_path / "f.npz")], "got a FIFO"),
        ([str(folder), "digits"], "0.png must be a regular file, got a FIFO"),
    ):
        assert_one_line(run_pndm("fid", *argv, "--device", "cpu", timeout=60), words)
    assert time.monotonic() - start < 120


# ----------------------------------------------------------------------------- two statistics


def test_two_statistics_files_are_compared_without_a_network(tmp_path, capsys, monkeypatch):
    """pytorch-fid accepts two statistics files; so does pndm, and loads no feature network."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, arr_0=_digits(40, 1))
    np.savez(b, arr_0=_digits(30, 2))
    for src in (a, b):
        argv = ["fid", str(src), "--save-stats", str(src.with_suffix(".stats.npz"))]
        assert main([*argv, "--features", "digits", "--device", "cpu", "--no-progress"]) == 0
    direct = fid(a, b, features="digits", device="cpu")
    from pndm.metrics import digits

    monkeypatch.setattr(digits, "load_network", lambda *a: pytest.fail("loaded the network"))
    capsys.readouterr()
    assert main(["fid", str(a.with_suffix(".stats.npz")), str(b.with_suffix(".stats.npz"))]) == 0
    assert float(capsys.readouterr().out.strip()) == pytest.approx(direct, rel=1e-12)


def test_two_inception_statistics_need_no_inception_weights(tmp_path, capsys, monkeypatch):
    """Unnamed 2048-d statistics (pytorch-fid's files) get pytorch-fid's distance; no weights
    are looked for (the distance itself is stubbed: scipy's sqrtm of 2048² takes a minute)."""
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no cached weights anywhere
    monkeypatch.setattr(inception, "load_network", lambda *a: pytest.fail("loaded the network"))
    monkeypatch.setattr(fid_score, "calculate_frechet_distance", lambda *a: np.float64(1.5))
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", mu=np.zeros(2048), sigma=np.eye(2048))  # pytorch-fid's
    code = main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    assert code == 0, capsys.readouterr().err
    assert float(capsys.readouterr().out.strip()) == 1.5


def test_statistics_of_different_features_are_refused(tmp_path: Path, capsys) -> None:
    save_statistics(tmp_path / "d.npz", Statistics(np.zeros(64), np.eye(64), "digits", 5))
    save_statistics(tmp_path / "i.npz", Statistics(np.zeros(64), np.eye(64), "inception", 5))
    code = main(["fid", str(tmp_path / "d.npz"), str(tmp_path / "i.npz")])
    assert_one_line_error(capsys, code, "digits and inception statistics cannot be compared")
    assert load_statistics(tmp_path / "d.npz").count == 5


# ----------------------------------------------------------------------------- cosmetics


def test_a_distance_that_rounds_below_zero_is_zero(monkeypatch) -> None:
    assert clamped(-8e-5) == 0.0 and clamped(3.0) == 3.0 and np.isnan(clamped(float("nan")))
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    monkeypatch.setattr(fid_score, "calculate_frechet_distance", lambda *a: np.float64(-8e-5))
    stats = statistics_of(np.random.default_rng(0).normal(size=(50, 8)))
    assert inception.distance(stats, stats) == 0.0
    assert frechet_distance(stats, stats) >= 0.0


def test_no_progress_silences_the_bar(tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "s.npz", arr_0=_digits(8, 0))
    assert (
        main(["fid", str(tmp_path / "s.npz"), "digits", "--no-progress", "--batch-size", "2"]) == 0
    )
    assert capsys.readouterr().err == ""
