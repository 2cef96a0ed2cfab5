"""UNet2DModel: parity with diffusers (same keys, shapes, outputs), folders, legacy keys, errors."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import SMALL_UNET, assert_rounding_close
from safetensors.torch import save_file

from pndm.files import weights
from pndm.models.legacy import convert_legacy_state_dict
from pndm.models.unet_2d import DDPM_CIFAR10_CONFIG, UNet2DModel, UNet2DOutput

diffusers = pytest.importorskip("diffusers")
DiffusersUNet = diffusers.UNet2DModel


CIFAR10 = DDPM_CIFAR10_CONFIG


LSUN_SMALL = {  # google/ddpm-church-256 layout (6 levels, attention at 16x16), tiny channels
    **CIFAR10,
    "block_out_channels": [8, 8, 16, 16, 32, 32],
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "sample_size": 256,
}

CONFIGS = {
    "lsun-256-small": (LSUN_SMALL, (1, 3, 256, 256)),
    "scale-shift": ({**SMALL_UNET, "resnet_time_scale_shift": "scale_shift"}, (2, 3, 16, 16)),
    "flip-sin-to-cos-shift-0": (
        {**SMALL_UNET, "flip_sin_to_cos": True, "freq_shift": 0},
        (2, 3, 16, 16),
    ),
    "fourier": (
        {
            **SMALL_UNET,
            "time_embedding_type": "fourier",
            "center_input_sample": True,
            "mid_block_scale_factor": 2**0.5,
        },
        (2, 3, 16, 16),
    ),
    "multi-head": ({**SMALL_UNET, "attention_head_dim": 8}, (2, 3, 16, 16)),
    "misc": (  # mish, no mid attention, padding 1, non-square, wider time MLP, 1 output channel
        {
            **SMALL_UNET,
            "act_fn": "mish",
            "add_attention": False,
            "downsample_padding": 1,
            "time_embedding_dim": 48,
            "in_channels": 2,
            "out_channels": 1,
            "norm_eps": 1e-6,
        },
        (2, 2, 16, 8),
    ),
    "mid-attn-groups": (
        {**SMALL_UNET, "resnet_time_scale_shift": "scale_shift", "attn_norm_num_groups": 4},
        (1, 3, 8, 8),
    ),
}


# --- helpers ----------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")


def diffusers_model(config: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DiffusersUNet(**config).eval()


def ours_from(reference: torch.nn.Module) -> UNet2DModel:
    """Ours with the same config, sharing the reference's tensors (strict keys and shapes)."""
    config = {k: v for k, v in reference.config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = UNet2DModel(**config)
    theirs = reference.state_dict()
    mine = model.state_dict()
    assert set(theirs) == set(mine)
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in mine.items()}
    model.load_state_dict(theirs, strict=True, assign=True)
    model.reset_buffers("cpu")
    return model.eval()


def max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, t) -> float:
    with torch.no_grad():
        return (a(x, t).sample - b(x, t).sample).abs().max().item()


def assert_parity(reference: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor, t) -> None:
    """Ours agrees with diffusers up to float32 rounding: its error against diffusers' model in
    float64 is within `ROUNDING_FACTOR` times diffusers' own (the same operations, some fused or
    reordered; measured ~1e-6 on outputs of order 1). Seeded inputs; the bound follows the CPU's
    own rounding, so it holds under AVX2 and AVX-512 alike."""
    exact_model = copy.deepcopy(reference).double()
    t64 = t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
    with torch.no_grad():
        exact = exact_model(x.double(), t64).sample
        assert_rounding_close(model(x, t).sample, reference(x, t).sample, exact)


def noise(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- architecture and numerical parity -------------------------------------------------------


def test_constructor_arguments_and_defaults_equal_diffusers():
    ours = inspect.signature(UNet2DModel.__init__).parameters
    theirs = inspect.signature(DiffusersUNet.__init__).parameters
    assert list(ours) == list(theirs)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in theirs.items()}


def test_cifar10_config_parity():
    reference = diffusers_model(CIFAR10)
    model = ours_from(reference)
    assert sum(p.numel() for p in model.parameters()) == 35_746_307
    assert len(model.state_dict()) == 328
    x = noise((2, 3, 32, 32))
    assert_parity(reference, model, x, torch.tensor([10, 900]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_parity(name):
    config, shape = CONFIGS[name]
    reference = diffusers_model(config)
    model = ours_from(reference)
    x = noise(shape)
    batch = shape[0]
    fourier = config.get("time_embedding_type") == "fourier"
    times = [torch.linspace(0.5, 80.0, batch)] if fourier else [7, torch.tensor(999)]
    times.append(torch.arange(batch, dtype=torch.float32) * 3.5 + 1.25)  # fractional
    for t in times:
        assert_parity(reference, model, x, t)


def test_from_config_builds_the_same_model():
    reference = diffusers_model(SMALL_UNET)
    model = UNet2DModel.from_config(reference.config)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert dict(model.config) == {k: v for k, v in reference.config.items() if k[0] != "_"}


def test_timestep_forms_broadcast_to_the_batch():
    model = ours_from(diffusers_model(SMALL_UNET))
    x = noise((3, 3, 16, 16))
    with torch.no_grad():
        want = model(x, torch.full((3,), 41.5)).sample
        for t in (41.5, torch.tensor(41.5), torch.tensor([41.5]), torch.tensor(41.5).double()):
            assert torch.equal(model(x, t).sample, want)
        assert torch.equal(model(x, 41).sample, model(x, torch.tensor([41, 41, 41])).sample)
        with pytest.raises(ValueError, match="2 entries for a batch of 3"):
            model(x, torch.tensor([1.0, 2.0]))


def test_output_forms():
    model = ours_from(diffusers_model(SMALL_UNET))
    x = noise((1, 3, 16, 16))
    with torch.no_grad():
        out = model(x, 3)
        tup = model(x, 3, return_dict=False)
    assert isinstance(out, UNet2DOutput) and isinstance(tup, tuple) and len(tup) == 1
    assert torch.equal(out.sample, out[0]) and torch.equal(out["sample"], tup[0])
    assert out.sample.shape == x.shape


def test_channels_last_matches():
    reference = diffusers_model(SMALL_UNET)
    model = ours_from(reference).to(memory_format=torch.channels_last)
    x = noise((2, 3, 16, 16))
    assert_parity(reference, model, x.to(memory_format=torch.channels_last), 5)


def test_model_copies_and_pickles():
    model = ours_from(diffusers_model(SMALL_UNET))
    x = noise((1, 3, 16, 16))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.config == model.config
        assert max_diff(model, clone, x, 3) == 0.0


def test_half_cast_keeps_float32_frequencies():
    model = UNet2DModel(**SMALL_UNET).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.time_proj.freqs.dtype == torch.float32
    assert model.device == torch.device("cpu")


# --- folders ----------------------------------------------------------------------------------


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return diffusers_model(SMALL_UNET, seed=3)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_diffusers_flat_folder_loads(tmp_path, reference, safe):
    reference.save_pretrained(tmp_path, safe_serialization=safe)
    model = UNet2DModel.from_pretrained(tmp_path)
    assert not model.training and model.dtype == torch.float32
    assert_same_weights(model, reference)
    assert_parity(reference, model, noise((1, 3, 16, 16)), 11)


def test_diffusers_pipeline_folder_loads(tmp_path, reference):
    reference.save_pretrained(tmp_path / "unet")
    index = {"_class_name": "PNDMPipeline", "unet": ["diffusers", "UNet2DModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for model in (
        UNet2DModel.from_pretrained(tmp_path),
        UNet2DModel.from_pretrained(tmp_path, subfolder="unet"),
        UNet2DModel.from_pretrained(str(tmp_path / "unet")),
    ):
        assert_same_weights(model, reference)


def test_ours_loads_in_diffusers(tmp_path, reference):
    ours_from(reference).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == "UNet2DModel" and "_diffusers_version" in saved
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = DiffusersUNet.from_pretrained(tmp_path).eval()
    assert_same_weights(loaded, reference)

    def public(config):  # JSON turns tuples into lists
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k[0] != "_"}

    assert public(loaded.config) == public(reference.config)


def test_channels_last_model_saves(tmp_path, reference):
    ours_from(reference).to(memory_format=torch.channels_last).save_pretrained(tmp_path)
    assert_same_weights(UNet2DModel.from_pretrained(tmp_path), reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "bfloat16"])
def test_torch_dtype_loads(tmp_path, reference, dtype):
    reference.save_pretrained(tmp_path)
    model = UNet2DModel.from_pretrained(tmp_path, torch_dtype=dtype)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert model.dtype == dtype and all(p.dtype == dtype for p in model.parameters())
    assert model.time_proj.freqs.dtype == torch.float32
    x = noise((1, 3, 16, 16))
    with torch.no_grad():
        got = model(x.to(dtype), 20).sample.float()
        want = reference(x, 20).sample
    assert got.dtype == torch.float32 and (got - want).abs().max().item() < 0.1


def test_float16_file_loads_as_float32_by_default(tmp_path, reference):
    copy.deepcopy(reference).half().save_pretrained(tmp_path, variant="fp16")
    model = UNet2DModel.from_pretrained(tmp_path, variant="fp16")
    assert model.dtype == torch.float32
    assert max_diff(reference, model, noise((1, 3, 16, 16)), 9) < 0.05


# --- older key layouts ------------------------------------------------------------------------

_LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def to_legacy_attention(state: dict) -> dict:
    pattern = re.compile(r"\.attentions\.(\d+)\.(to_q|to_k|to_v|to_out\.0)\.")
    return {
        pattern.sub(lambda m: f".attentions.{m[1]}.{_LEGACY_ATTENTION[m[2]]}.", k): v
        for k, v in state.items()
    }


def to_ddpm_layout(state: dict, levels: int) -> dict:
    """diffusers keys -> the original DDPM (pytorch_diffusion) keys, written out independently."""
    leaf = {
        "time_emb_proj": "temb_proj",
        "conv_shortcut": "nin_shortcut",
        "group_norm": "norm",
        "to_q": "q",
        "to_k": "k",
        "to_v": "v",
        "to_out.0": "proj_out",
    }
    rules = [
        (r"^time_embedding\.linear_1\.", lambda m: "temb.dense.0."),
        (r"^time_embedding\.linear_2\.", lambda m: "temb.dense.1."),
        (r"^conv_norm_out\.", lambda m: "norm_out."),
        (r"^mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m[1]) + 1}."),
        (r"^mid_block\.attentions\.0\.", lambda m: "mid.attn_1."),
        (r"^down_blocks\.(\d+)\.resnets\.", lambda m: f"down.{m[1]}.block."),
        (r"^down_blocks\.(\d+)\.attentions\.", lambda m: f"down.{m[1]}.attn."),
        (r"^down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"down.{m[1]}.downsample."),
        (r"^up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m[1])}.block."),
        (r"^up_blocks\.(\d+)\.attentions\.", lambda m: f"up.{levels - 1 - int(m[1])}.attn."),
        (r"^up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m[1])}.upsample."),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        for a, b in leaf.items():
            new = new.replace(f".{a}.", f".{b}.")
        if (".attn" in new) and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original code used 1x1 convolutions
        out[new] = value
    return out


def write_folder(folder: Path, config: dict, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, folder / weights.WEIGHTS_NAME)


def test_legacy_attention_names_load(tmp_path, reference):
    state = to_legacy_attention(reference.state_dict())
    assert any(".query." in k for k in state) and not any(".to_q." in k for k in state)
    write_folder(tmp_path, dict(reference.config), state)
    assert_same_weights(UNet2DModel.from_pretrained(tmp_path), reference)


def test_original_ddpm_layout_loads(tmp_path):
    config = {**CIFAR10, "block_out_channels": [16, 32, 32], "norm_num_groups": 8}
    config["down_block_types"] = CIFAR10["down_block_types"][:3]
    config["up_block_types"] = CIFAR10["up_block_types"][1:]
    reference = diffusers_model(config)
    state = to_ddpm_layout(reference.state_dict(), levels=3)
    assert "temb.dense.0.weight" in state and "up.1.attn.0.q.weight" in state
    assert "up.2.upsample.conv.weight" in state and "up.0.upsample.conv.weight" not in state
    write_folder(tmp_path, config, state)
    model = UNet2DModel.from_pretrained(tmp_path)
    assert_same_weights(model, reference)
    assert_parity(reference, model, noise((1, 3, 16, 16)), 100)


def test_legacy_rename_never_overwrites_current_keys(reference):
    state = reference.state_dict()
    extra = {**state, "mid_block.attentions.0.query.weight": torch.zeros(1)}
    converted = convert_legacy_state_dict(extra, num_levels=2)
    assert torch.equal(
        converted["mid_block.attentions.0.to_q.weight"], state["mid_block.attentions.0.to_q.weight"]
    )
    assert "mid_block.attentions.0.query.weight" in converted  # left to be reported as unexpected


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int8, "float17"])
def test_bad_torch_dtype(tmp_path, reference, dtype):
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="torch_dtype must be a floating"):
        UNet2DModel.from_pretrained(tmp_path, torch_dtype=dtype)


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        UNet2DModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        UNet2DModel.from_pretrained(tmp_path / "nope")


def test_folder_without_weights(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    (tmp_path / weights.WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors or .*\.bin"):
        UNet2DModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_truncated_safetensors(tmp_path, reference, keep):
    reference.save_pretrained(tmp_path)
    path = tmp_path / weights.WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        UNet2DModel.from_pretrained(tmp_path)


def test_corrupt_bin(tmp_path, reference):
    reference.save_pretrained(tmp_path, safe_serialization=False)
    path = tmp_path / weights.LEGACY_WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        UNet2DModel.from_pretrained(tmp_path)


def test_config_that_does_not_fit_the_weights(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["block_out_channels"] = [16, 24]
    config["layers_per_block"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        UNet2DModel.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path / weights.WEIGHTS_NAME) in message
    assert "missing (" in message and "wrong shape (" in message and "more" in message
    assert "down_blocks.1.attentions.0.group_norm.weight (32,) (model wants (24,))" in message


def test_unexpected_and_missing_keys_are_named(tmp_path, reference):
    state = dict(reference.state_dict())
    state["extra.weight"] = state.pop("conv_out.bias")
    write_folder(tmp_path, dict(reference.config), state)
    with pytest.raises(
        ValueError, match=r"(?s)missing \(1\): conv_out\.bias.*unexpected \(1\): extra"
    ):
        UNet2DModel.from_pretrained(tmp_path)


def test_wrong_class_in_config(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "_class_name": "VQModel"}))
    with pytest.raises(ValueError, match="VQModel, not a UNet2DModel"):
        UNet2DModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")}, "CrossAttnDownBlock2D"),
        ({"up_block_types": ("AttnUpBlock2D", "SkipUpBlock2D")}, "must be one of"),
        (
            {"class_embed_type": "projection"},
            "class_embed_type",
        ),  # now supported: None/timestep/identity
        ({"num_class_embeds": 0}, "num_class_embeds"),
        ({"downsample_type": "resnet"}, "downsample_type"),
        ({"upsample_type": "resnet"}, "upsample_type"),
        ({"time_embedding_type": "learned"}, "time_embedding_type"),
        ({"resnet_time_scale_shift": "spatial"}, "resnet_time_scale_shift"),
        ({"act_fn": "tanhh"}, "act_fn"),
        ({"norm_num_groups": 5}, "norm_num_groups"),
        ({"attention_head_dim": 64}, "attention_head_dim"),
        ({"block_out_channels": (16, 32, 32)}, "one per block_out_channels entry"),
    ],
)
def test_unsupported_config_values(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        UNet2DModel(**{**SMALL_UNET, **override})


def test_unknown_block_type_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"down block type must be one of AttnDownBlock2D, DownBlock2D, got 'Nope'"
    ):
        UNet2DModel(**{**SMALL_UNET, "down_block_types": ("Nope", "DownBlock2D")})


def test_unknown_config_keys_warn(tmp_path, reference):
    with pytest.warns(UserWarning, match="not_a_key"):
        UNet2DModel.from_config({**reference.config, "not_a_key": 1})


def test_bad_sample_shapes():
    model = UNet2DModel(**SMALL_UNET)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.zeros(1, 3, 15, 16), 1)
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        model(torch.zeros(1, 4, 16, 16), 1)
    with pytest.raises(ValueError, match="class embedding"):
        model(torch.zeros(1, 3, 16, 16), 1, class_labels=torch.zeros(1))


def test_check_state_dict_lists_at_most_ten():
    expected = {f"w{i}": (1,) for i in range(25)}
    with pytest.raises(ValueError, match=r"missing \(25\): w0, .*, w9 \.\.\. and 15 more"):
        weights.check_state_dict({}, expected, "somewhere")


def test_save_state_dict_is_atomic(tmp_path):
    path = tmp_path / "w.safetensors"
    weights.save_state_dict(path, {"a": torch.ones(2)})
    shared = torch.zeros(2)
    with pytest.raises(RuntimeError):  # safetensors refuses shared storage mid-write
        weights.save_state_dict(path, {"a": shared, "b": shared})
    assert torch.equal(weights.read_weights(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_folder_copy_without_safetensors_uses_bin(tmp_path, reference):
    reference.save_pretrained(tmp_path / "a", safe_serialization=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert weights.find_weights(tmp_path / "b").name == weights.LEGACY_WEIGHTS_NAME
