"""``pndm fid``: Inception features as pytorch-fid computes them, the digits metric, bad input.

The real Inception weights cannot be downloaded here, so pytorch-fid's own network is built with
random weights, saved in the published file's layout under the published name, and both pytorch-fid
and pndm load that file: the comparison checks the resizing, normalisation, feature layer and
statistics, not the weights' values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import assert_one_line_error

from pndm.cli import main
from pndm.metrics import fid, load_statistics, sample_statistics, save_statistics
from pndm.metrics.inception import WEIGHTS_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


def _pngs(folder: Path, count: int, size: int, mode: str, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (size, size) if mode == "L" else (size, size, 3)
        PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"{i:03d}.png"
        )
    return folder


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """pytorch-fid's FID Inception with random weights, saved as the hub cache's file. He-normal
    convolutions keep the activations O(1) through the 94 layers (torch's default init shrinks
    them to 1e-9, where the features would test nothing)."""
    inception = pytest.importorskip("pytorch_fid.inception")
    patch = pytest.MonkeyPatch()
    patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: {})
    patch.setattr(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None)
    torch.manual_seed(0)
    try:
        net = inception.fid_inception_v3()
    finally:
        patch.undo()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    state = net.state_dict()
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home


def _pytorch_fid_statistics(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from pytorch_fid import fid_score, inception

    files = sorted(folder.glob("*.png"))
    net = inception.InceptionV3([3])  # loads the cached file: no download
    return fid_score.calculate_activation_statistics(files, net, 3, 2048, "cpu", 0)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_inception_statistics_equal_pytorch_fid(tmp_path, monkeypatch, random_inception, mode):
    """Found in the hub cache without a flag; greyscale repeated to three channels, as
    pytorch-fid's convert('RGB'). Same kernels, same batches: equal to float32 rounding."""
    monkeypatch.setenv("TORCH_HOME", str(random_inception))
    folder = _pngs(tmp_path / "imgs", 4, 24, mode)  # two batches of 3 and 1
    mu, sigma = _pytorch_fid_statistics(folder)
    ours = sample_statistics(folder, features="inception", batch_size=3, device="cpu")
    assert ours.dims == 2048 and np.abs(mu).max() > 0
    np.testing.assert_allclose(ours.mu, mu, rtol=1e-5, atol=1e-6 * np.abs(mu).max())
    np.testing.assert_allclose(ours.sigma, sigma, rtol=1e-4, atol=1e-6 * np.abs(sigma).max())


def test_inception_weights_flag_and_fid_value(tmp_path, monkeypatch, random_inception, capsys):
    """--inception-weights works with an empty hub cache, and the value printed alone on the last
    line of stdout is what pytorch-fid's calculate_frechet_distance returns for the two sets'
    statistics (spied: scipy's sqrtm of 2048x2048 takes minutes on one thread; our own distance is
    checked against it at 64-d in test_metrics.py)."""
    from pytorch_fid import fid_score

    calls = []
    monkeypatch.setattr(fid_score, "calculate_frechet_distance", lambda *a: calls.append(a) or 12.5)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    weights = random_inception / "hub" / "checkpoints" / WEIGHTS_NAME
    a, b = _pngs(tmp_path / "a", 3, 16, "RGB", 1), _pngs(tmp_path / "b", 2, 16, "RGB", 2)
    code = main(["fid", str(a), str(b), "--inception-weights", str(weights), "--device", "cpu"])
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1] == "12.5"
    mu_a, sigma_a, mu_b, sigma_b = calls[0]
    stats_a = sample_statistics(a, inception_weights=weights, device="cpu")
    np.testing.assert_array_equal(mu_a, stats_a.mu)
    np.testing.assert_array_equal(sigma_a, stats_a.sigma)
    assert mu_b.shape == (2048,) and sigma_b.shape == (2048, 2048)


def test_missing_inception_weights_say_what_to_get(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pytorch_fid")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    folder = _pngs(tmp_path / "imgs", 2, 8, "RGB")
    stats = tmp_path / "ref.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    code = main(["fid", str(folder), str(stats), "--device", "cpu"])
    hub = str(tmp_path / "empty" / "hub" / "checkpoints" / WEIGHTS_NAME)
    assert_one_line_error(capsys, code, "Inception weights not found", WEIGHTS_NAME, hub)
    code = main(["fid", str(folder), str(stats), "--inception-weights", str(tmp_path / "no.pth")])
    assert_one_line_error(capsys, code, "Inception weights not found", "no.pth")


def test_corrupt_inception_weights_are_one_line(tmp_path, capsys):
    pytest.importorskip("pytorch_fid")
    folder = _pngs(tmp_path / "imgs", 2, 8, "RGB")
    bad = tmp_path / WEIGHTS_NAME
    bad.write_bytes(b"not a checkpoint")
    code = main(["fid", str(folder), "--save-stats", str(tmp_path / "s.npz"),
                 "--inception-weights", str(bad)])  # fmt: skip
    assert_one_line_error(capsys, code, "cannot read weights", str(bad))
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    code = main(["fid", str(folder), "--save-stats", str(tmp_path / "s.npz"),
                 "--inception-weights", str(bad)])  # fmt: skip
    assert_one_line_error(capsys, code, f"is not {WEIGHTS_NAME}")


def test_without_pytorch_fid_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "pytorch_fid", None)
    folder = _pngs(tmp_path / "imgs", 2, 8, "RGB")
    code = main(["fid", str(folder), "--save-stats", str(tmp_path / "s.npz"), "--device", "cpu"])
    assert_one_line_error(capsys, code, "pip install 'pndm[fid]'", "--features digits")


# ----------------------------------------------------------------------------- digits metric


def _digit_like(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def test_digits_metric_orders_data_noisy_data_and_noise(tmp_path, capsys) -> None:
    """The digits themselves score far better than noise; mild noise sits between."""
    pytest.importorskip("sklearn")
    from pndm.metrics.digits_train import digits_images

    data = digits_images()[0]
    rng = np.random.default_rng(0)
    noisy = np.clip(data.astype(int) + rng.integers(-40, 41, data.shape), 0, 255).astype(np.uint8)
    scores = []
    sets = {"data": data[:1000], "noisy": noisy[:1000], "noise": _digit_like(1000, 1)}
    for name, images in sets.items():
        np.savez(tmp_path / f"{name}.npz", arr_0=images)
        assert main(["fid", str(tmp_path / f"{name}.npz"), "digits", "--device", "cpu"]) == 0
        scores.append(float(capsys.readouterr().out.strip().splitlines()[-1]))
    assert scores[0] < scores[1] < scores[2]
    assert scores[0] < 0.1 * scores[2]


def test_save_stats_then_compare_equals_direct_comparison(tmp_path, capsys) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, arr_0=_digit_like(40, 1))
    np.savez(b, arr_0=_digit_like(30, 2))
    stats = tmp_path / "b_stats.npz"
    argv = ["fid", str(b), "--save-stats", str(stats), "--features", "digits", "--device", "cpu"]
    assert main(argv) == 0
    assert load_statistics(stats).features == "digits" and load_statistics(stats).count == 30
    capsys.readouterr()
    assert main(["fid", str(a), str(stats), "--device", "cpu"]) == 0  # the file names its features
    via_file = float(capsys.readouterr().out.strip().splitlines()[-1])
    direct = fid(a, b, features="digits", device="cpu")
    assert via_file == pytest.approx(direct, rel=1e-12)
    argv[1] = str(a)  # --overwrite replaces the statistics with a's
    assert main([*argv, "--overwrite"]) == 0 and load_statistics(stats).count == 40


def _bad(tmp_path: Path) -> dict[str, list[str]]:
    """Hostile inputs: CLI arguments -> what the one error line must say."""
    mixed = tmp_path / "mixed"
    _pngs(mixed, 2, 16, "L")
    PIL.Image.new("L", (8, 8)).save(mixed / "zz.png")
    np.savez(tmp_path / "one.npz", arr_0=_digit_like(1, 0))
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((4, 16, 16, 1), np.float32))
    np.savez(tmp_path / "other.npz", images=_digit_like(4, 0))
    np.savez(tmp_path / "ok.npz", arr_0=_digit_like(4, 0))
    np.savez(tmp_path / "rgb.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "d10.npz", mu=np.zeros(10), sigma=np.eye(10))
    save_statistics(tmp_path / "exists.npz", load_statistics(tmp_path / "d10.npz"))
    with open(tmp_path / "array.npz", "wb") as f:
        np.save(f, _digit_like(4, 0))
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    ok, t = str(tmp_path / "ok.npz"), str(tmp_path)
    return {
        "mixed": [[str(mixed), "digits"], "mixed image sizes", "zz.png", "8x8x1"],
        "one": [[f"{t}/one.npz", "digits"], "1 image", "at least 2"],
        "float": [[f"{t}/float.npz", "digits"], "uint8", "float32"],
        "no arr_0": [[f"{t}/other.npz", "digits"], "no arr_0", "images"],
        "rgb digits": [[f"{t}/rgb.npz", "digits"], "16x16 greyscale", "32x32x3"],
        "wrong dim": [[ok, f"{t}/d10.npz", "--features", "digits"], "10-dimensional", "64"],
        "unknown ref": [[ok, "cifar10"], "reference not found", "digits"],
        "both": [[ok, "digits", "--save-stats", f"{t}/s.npz"], "exactly one of REF"],
        "neither": [[ok], "exactly one of REF"],
        "npy": [[f"{t}/array.npz", "digits"], "single .npy array"],
        "garbage": [[f"{t}/garbage.npz", "digits"], "cannot read", "garbage.npz"],
        "exists": [
            [ok, "--save-stats", f"{t}/exists.npz", "--features", "digits"],
            "exists; pass --overwrite to replace it",
        ],
        "stats suffix": [[ok, "--save-stats", f"{t}/s.json"], "--save-stats writes .npz files"],
        "stats folder": [[ok, "--save-stats", f"{t}"], "is a folder; give a file name"],
        "mismatch": [[ok, "digits", "--features", "inception"], "digits statistics"],
        "missing": [[f"{t}/nothing.npz", "digits"], "samples not found"],
        "batch": [[ok, "digits", "--batch-size", "0"], "--batch-size"],
        "device": [[ok, "digits", "--device", "tpu"], "device must be one of", "cpu", "got 'tpu'"],
    }


def test_bad_input_is_one_clear_line(tmp_path, capsys) -> None:
    for name, (argv, *needles) in _bad(tmp_path).items():
        code = main(["fid", "--device", "cpu", *argv])  # a later --device wins
        line = assert_one_line_error(capsys, code, *needles)
        assert line, name
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_digits_metric_on_the_gpu_equals_the_cpu(tmp_path) -> None:
    """Features in float32 on another device: the distance agrees to 1e-4 relative (TF32 off)."""
    path = tmp_path / "s.npz"
    np.savez(path, arr_0=_digit_like(200, 3))
    cpu = fid(path, "digits", device="cpu")
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = fid(path, "digits", device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    assert gpu == pytest.approx(cpu, rel=1e-4)


def test_torch_free_names_agree_with_the_networks() -> None:
    from pndm.metrics import core, digits, inception, names

    assert names.FEATURES == (inception.NAME, digits.NAME)
    assert tuple(core.SHIPPED) == names.SHIPPED


def test_sample_folder_then_fid(tmp_path, capsys) -> None:
    """What pndm sample writes (a folder with its pndm.json) is what pndm fid reads."""
    out = tmp_path / "samples"
    argv = ["sample", "--seeds", "0-3", "--steps", "3", "--method", "ddim", "--out", str(out)]
    assert main([*argv, "--batch-size", "4"]) == 0
    capsys.readouterr()
    assert main(["fid", str(out), "digits", "--device", "cpu"]) == 0
    value = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(value) and value > 0


def test_a_shipped_name_that_is_also_a_path_warns(tmp_path, monkeypatch) -> None:
    from pndm.metrics.core import reference

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    with pytest.warns(UserWarning, match=r"shipped 'digits' statistics.*\./digits"):
        assert reference("digits").features == "digits"
    assert reference("./digits") == Path("./digits")
