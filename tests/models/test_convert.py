"""Converting checkpoints of the original DDPM/DDIM/PNDM code (ermongroup ``Model``) to diffusers.

The oracle is ``OriginalModel`` below: the original network written from its description (Ho et
al. 2020 Appendix B as ported by ermongroup/ddim), independently of ``pndm.models``. Its random
weights are converted and must give the same ε as the original module.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, assert_rounding_close
from torch import nn

from pndm.cli import main
from pndm.compat.convert import convert_checkpoint
from pndm.models.convert import (
    PRESETS,
    OriginalConfig,
    find_state_dict,
    infer_config,
    unet_config,
)
from pndm.models.embeddings import SinusoidalTimeProjection
from pndm.models.legacy import convert_ddpm_layout
from pndm.models.unet_2d import UNet2DModel
from pndm.schedule import NoiseSchedule, make_betas

TINY = OriginalConfig(
    ch=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(16,), resolution=32
)

# ----------------------------------------------------------------------------- the original net


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(t f_i), cos(t f_i)], f_i = 10000^(-i / (dim/2 - 1)) (the original code's embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(swish(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention; q, k, v and proj_out are 1x1 convolutions."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)  # (b, hw, c)
        k = self.k(h).reshape(b, c, hh * ww)  # (b, c, hw)
        v = self.v(h).reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # (b, query, key)
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class OriginalModel(nn.Module):
    def __init__(self, cfg: OriginalConfig) -> None:
        super().__init__()
        ch, mult, nrb = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        self.cfg, temb_ch, in_mult = cfg, 4 * ch, (1, *mult)
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, res = nn.ModuleList(), cfg.resolution
        for i, m in enumerate(mult):
            level, c_in = nn.Module(), ch * in_mult[i]
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nrb):
                level.block.append(ResnetBlock(c_in, ch * m, temb_ch))
                c_in = ch * m
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c_in))
            if i != len(mult) - 1:
                level.downsample, res = Downsample(c_in), res // 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c_in, c_in, temb_ch)
        self.mid.attn_1 = AttnBlock(c_in)
        self.mid.block_2 = ResnetBlock(c_in, c_in, temb_ch)
        self.up = nn.ModuleList()
        for i in reversed(range(len(mult))):  # built coarse to fine, each inserted at the front
            level, skip = nn.Module(), ch * mult[i]
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for j in range(nrb + 1):
                if j == nrb:
                    skip = ch * in_mult[i]
                level.block.append(ResnetBlock(c_in + skip, ch * mult[i], temb_ch))
                c_in = ch * mult[i]
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c_in))
            if i != 0:
                level.upsample, res = Upsample(c_in), res * 2
            self.up.insert(0, level)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = timestep_embedding(t, self.cfg.ch).to(x.dtype)  # float64 too, as the reference
        temb = self.temb.dense[1](swish(self.temb.dense[0](temb)))
        hs = [self.conv_in(x)]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                hs.append(level.attn[j](h) if len(level.attn) else h)
            if i != len(self.down) - 1:
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                h = level.attn[j](h) if len(level.attn) else h
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


def original_model(cfg: OriginalConfig = TINY, seed: int = 0) -> OriginalModel:
    """Random weights, every parameter perturbed (norm scales too), so no key can hide."""
    torch.manual_seed(seed)
    model = OriginalModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[OriginalModel, Path]:
    model = original_model()
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save(model.state_dict(), path)
    return model, path


# ----------------------------------------------------------------------------- facts


def test_time_embedding_convention_is_sin_cos_with_freq_shift_1() -> None:
    """Verified, not assumed: diffusers' flip_sin_to_cos=False, freq_shift=1 is the original's."""
    t = torch.tensor([0.0, 1.0, 17.0, 500.0, 999.0])
    ours = SinusoidalTimeProjection(128, flip_sin_to_cos=False, freq_shift=1)(t)
    # The same float32 operations in the same order: bitwise equal on any CPU (measured 0).
    torch.testing.assert_close(ours, timestep_embedding(t, 128), rtol=0, atol=1e-5)
    for flip, shift in [(True, 1), (False, 0)]:
        other = SinusoidalTimeProjection(128, flip_sin_to_cos=flip, freq_shift=shift)(t)
        assert (other - timestep_embedding(t, 128)).abs().max() > 0.1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_layouts_match_the_original_network(name: str) -> None:
    """Every original key has a diffusers key of the same shape (meta tensors: no memory)."""
    cfg = PRESETS[name]
    with torch.device("meta"):
        original = OriginalModel(cfg).state_dict()
        ours = UNet2DModel(**unet_config(cfg)).state_dict()
    converted = convert_ddpm_layout(original, len(cfg.ch_mult))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in ours.items()
    }
    assert infer_config(original) == cfg


def test_cifar10_config_equals_google_ddpm_cifar10_32() -> None:
    config = unet_config(PRESETS["cifar10"])
    assert config["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"] + [
        "DownBlock2D"
    ]
    assert config["up_block_types"] == ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    assert config["block_out_channels"] == [128, 256, 256, 256]
    assert (config["downsample_padding"], config["freq_shift"], config["norm_eps"]) == (0, 1, 1e-6)
    assert config["flip_sin_to_cos"] is False and config["attention_head_dim"] is None


# ----------------------------------------------------------------------------- conversion


def test_converted_model_gives_the_original_eps(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path
) -> None:
    original, src = tiny_checkpoint
    assert convert_checkpoint(src, tmp_path / "pipe") == TINY  # inferred from the shapes
    unet = UNet2DModel.from_pretrained(tmp_path / "pipe", subfolder="unet")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exact_model = copy.deepcopy(original).double()
    with torch.no_grad():
        for t in (0, 1, 250, 999):
            tt = torch.full((2,), t)
            want = original(x, tt)
            exact = exact_model(x.double(), tt)
            assert_rounding_close(unet(x, tt).sample, want, exact)  # other kernels, same maths
    assert want.abs().mean() > 0.1  # not a trivially small output


def test_diffusers_reads_the_converted_folder(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path
) -> None:
    diffusers = pytest.importorskip("diffusers")
    original, src = tiny_checkpoint
    convert_checkpoint(src, tmp_path / "pipe")
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "pipe", subfolder="unet").eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([420])
    with torch.no_grad():
        exact = copy.deepcopy(original).double()(x.double(), t)
        assert_rounding_close(unet(x, t).sample, original(x, t), exact)


def test_scheduler_config_records_the_original_index_convention(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path
) -> None:
    convert_checkpoint(tiny_checkpoint[1], tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["_class_name"] == "PNDMPipeline"
    config = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    assert config["alpha_index_offset"] == 1 and config["set_alpha_to_one"] is False
    assert (config["beta_start"], config["beta_end"], config["beta_schedule"]) == (
        0.0001,
        0.02,
        "linear",
    )
    abar = torch.cumprod(1 - make_betas(1000), 0)
    schedule = NoiseSchedule.from_config(config)
    t = torch.tensor([980.0, 500.0, 0.0, -1.0])  # model time t pairs with ᾱ[t + 1]; -1 with ᾱ[0]
    assert torch.equal(schedule.alpha_bar(t), abar[[981, 501, 1, 0]])


# ----------------------------------------------------------------------------- sampling


def original_fpndm(model: nn.Module, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The original code's F-PNDM loop (paper Algorithm 2, indices as algorithms.md §4).

    Model time t is paired with alphas_cump[t + 1]; times i*skip < T descending, then -1.
    Returns every model input, then the final sample (unclamped: a random net saturates).
    """
    abar = torch.cumprod(1 - make_betas(1000), 0)
    inputs: list[torch.Tensor] = []

    def transfer(x, t, t_next, eps):
        a, b = abar[int(t) + 1], abar[int(t_next) + 1]
        c_x = 1 / (a.sqrt() * (a.sqrt() + b.sqrt()))
        c_e = 1 / (a.sqrt() * (((1 - b) * a).sqrt() + ((1 - a) * b).sqrt()))
        return (x.double() + (b - a) * (c_x * x.double() - c_e * eps.double())).float()

    def eps(x, t):
        inputs.append(x)
        return model(x, torch.full((x.shape[0],), float(t)))

    seq = list(range(0, 1000, 1000 // steps))
    ets: list[torch.Tensor] = []
    for t, t_next in zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True):
        if len(ets) > 2:  # pseudo linear multistep (AB4)
            ets.append(eps(x, t))
            e = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        else:  # pseudo Runge-Kutta; only the first stage joins the history
            mid = (t + t_next) / 2
            e1 = eps(x, t)
            ets.append(e1)
            e2 = eps(transfer(x, t, mid, e1), mid)
            e3 = eps(transfer(x, t, mid, e2), mid)
            e4 = eps(transfer(x, t, t_next, e3), t_next)
            e = (e1 + 2 * e2 + 2 * e3 + e4) / 6
        x = transfer(x, t, t_next, e)
    return [*inputs, x]


def _converted_pipeline(tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path):
    from pndm.compat.pipeline import PNDMPipeline

    convert_checkpoint(tiny_checkpoint[1], tmp_path / "pipe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "config keys ... are ignored"
        pipe = PNDMPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample_both(pipe, original: OriginalModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(pipeline, original): every model input and the final image, stacked."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    inputs: list[torch.Tensor] = []
    with torch.no_grad():
        want = original_fpndm(original, x, steps=20)  # skip 50: integer mid times
        image = pipe(
            num_inference_steps=20,
            latents=x,
            output_type="pt",
            callback=lambda i, t, x: inputs.append(x.clone()),
        ).images
    assert len(inputs) == len(want) - 1 == 29  # N + 9 model calls
    want[-1] = (want[-1] / 2 + 0.5).clamp(0, 1)
    return torch.stack([*inputs, image]), torch.stack(want)


def _assert_same_run(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().amax(dim=(1, 2, 3, 4), keepdim=True)  # the samples grow to ~1e2
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-4)  # offset 0: 1e-2


def test_converted_folder_samples_like_the_original_code(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path
) -> None:
    """Converted folder + PNDMPipeline = the original code's F-PNDM run, call for call."""
    pipe = _converted_pipeline(tiny_checkpoint, tmp_path)
    assert pipe.scheduler.schedule.alpha_index_offset == 1
    got, want = _sample_both(pipe, tiny_checkpoint[0])
    _assert_same_run(got, want)
    config = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    pipe.scheduler.schedule = NoiseSchedule.from_config(config, alpha_index_offset=0)
    with pytest.raises(AssertionError):  # the offset matters
        _assert_same_run(_sample_both(pipe, tiny_checkpoint[0])[0], want)


def _prefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in state.items()}


@pytest.mark.parametrize(
    ("wrap", "expect"),
    [
        (lambda m, e: m, "model"),
        (lambda m, e: {"state_dict": m}, "model"),
        (lambda m, e: _prefixed(m), "model"),
        (lambda m, e: [_prefixed(m), {"state": {}}, 10, 100, _prefixed(e)], "ema"),
        (lambda m, e: {"model": m, "ema": e}, "ema"),
    ],
    ids=["bare", "state_dict", "module-prefix", "ermongroup-list", "model+ema"],
)
def test_checkpoint_forms(wrap, expect: str, tiny_checkpoint: tuple[OriginalModel, Path]) -> None:
    model = tiny_checkpoint[0].state_dict()
    ema = {k: v + 1 for k, v in model.items()}
    found = find_state_dict(wrap(model, ema))
    assert set(found) == set(model)
    want = ema if expect == "ema" else model
    assert all(torch.equal(found[k], want[k]) for k in model)


def test_ema_is_preferred_and_can_be_declined(tiny_checkpoint: tuple[OriginalModel, Path]) -> None:
    model = tiny_checkpoint[0].state_dict()
    ema = {k: v + 1 for k, v in model.items()}
    for ckpt in ([model, {"step": 1}, ema], {"model": model, "ema": ema}):
        assert torch.equal(find_state_dict(ckpt)["conv_in.weight"], ema["conv_in.weight"])
        assert torch.equal(
            find_state_dict(ckpt, ema=False)["conv_in.weight"], model["conv_in.weight"]
        )


# ----------------------------------------------------------------------------- errors


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        convert_checkpoint(tmp_path / "nope.pth", tmp_path / "out")


def test_unexpected_key_is_named(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path
) -> None:
    state = {**tiny_checkpoint[0].state_dict(), "extra.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"(?s)unexpected.*extra\.weight"):
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_key_is_named(tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path) -> None:
    state = dict(tiny_checkpoint[0].state_dict())
    del state["mid.attn_1.q.weight"]
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"(?s)missing.*mid_block\.attentions\.0\.to_q\.weight"):
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "out")


def test_wrong_named_config(tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"(?s)config 'cifar10' \(ch=128.*do not fit"):
        convert_checkpoint(tiny_checkpoint[1], tmp_path / "out", "cifar10")
    with pytest.raises(
        ValueError, match="config must be one of cifar10, celeba, lsun, got 'imagenet'"
    ):
        convert_checkpoint(tiny_checkpoint[1], tmp_path / "out", "imagenet")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"optimizer": {"lr": torch.tensor(1.0)}}, "no weights of the original"),
        (
            {"conv_in.weight": torch.zeros(1), "time_embedding.linear_1.weight": torch.zeros(1)},
            "already has diffusers key names",
        ),
        ({"conv_in.weight": torch.zeros(1)}, "not in the original DDPM/DDIM layout"),
    ],
)
def test_not_an_original_checkpoint(content: object, match: str, tmp_path: Path) -> None:
    torch.save(content, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=match):
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "out")


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "out")


# ----------------------------------------------------------------------------- CLI


def test_cli_convert(tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "pipe"
    assert main(["convert", str(tiny_checkpoint[1]), str(out)]) == 0
    assert "alpha_index_offset" in capsys.readouterr().err
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert_one_line_error(
        capsys, main(["convert", str(tiny_checkpoint[1]), str(out)]), "--overwrite"
    )
    assert main(["convert", str(tiny_checkpoint[1]), str(out), "--overwrite"]) == 0


def test_an_interrupted_overwrite_leaves_the_old_model(
    tiny_checkpoint: tuple[OriginalModel, Path], tmp_path: Path, monkeypatch
) -> None:
    """``convert --overwrite`` stopped while it writes (Ctrl-C) leaves the old model loading as
    before, and the user's own files; a finished one replaces it (the data loss of issue 21:
    the old model was deleted before the new one was written). Killed at any moment, see
    tests/files/test_destinations.py."""
    from pndm.compat.pipeline import PNDMPipeline

    out = tmp_path / "pipe"
    assert main(["convert", str(tiny_checkpoint[1]), str(out), "--sample-size", "32"]) == 0
    (out / "README.md").write_text("my notes")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = PNDMPipeline.save_pretrained

    def interrupted(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)
        (Path(folder) / "model_index.json").unlink()  # as if stopped before the last file
        raise KeyboardInterrupt

    monkeypatch.setattr(PNDMPipeline, "save_pretrained", interrupted)
    argv = ["convert", str(tiny_checkpoint[1]), str(out), "--overwrite", "--sample-size", "64"]
    assert main(argv) == 130
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no staging debris
    monkeypatch.setattr(PNDMPipeline, "save_pretrained", real)
    assert main(argv) == 0
    assert PNDMPipeline.from_pretrained(out).unet.config.sample_size == 64
    assert (out / "README.md").read_text() == "my notes"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["convert", "{tmp}/missing.pth", "{tmp}/out"], "checkpoint not found"),
        (["convert", "{ckpt}", "{tmp}/no/such/out"], "folder not found for DST"),
        (["convert", "{ckpt}", "{tmp}/out", "--config", "imagenet"], "invalid choice"),
        (["convert", "{ckpt}", "{tmp}/out", "--config", "cifar10"], "do not fit"),
    ],
)
def test_cli_convert_errors(
    argv: list[str],
    needle: str,
    tiny_checkpoint: tuple[OriginalModel, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint[1]) for a in argv]
    assert_one_line_error(capsys, main(argv), needle)
