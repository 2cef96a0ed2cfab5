"""Tiny random Stable Diffusion and SDXL pipelines, built offline (no download).

Random ``UNet2DConditionModel``, ``AutoencoderKL`` and CLIP text encoder(s) with tiny configs, and
a ``CLIPTokenizer`` read from a small vocabulary written to a folder (letters, as words' last
letters too, no merges). Latents are 4 x 8 x 8 (images 16 x 16), so a UNet call takes
milliseconds on a CPU. For the tests and benchmarks of pndm in diffusers pipelines; needs diffusers
and transformers.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch

# Stable Diffusion 1.x's scheduler config (a PNDMScheduler in PLMS mode), and SDXL's (Euler).
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SD_SCHEDULER = {**SD_SCHEDULE, "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False}
SDXL_SCHEDULER = {**SD_SCHEDULE, "timestep_spacing": "leading", "steps_offset": 1}
HIDDEN = 16  # the text encoders' width


def tokenizer(folder: Path, max_length: int = 16) -> Any:
    """A CLIPTokenizer from a vocabulary of single letters written to ``folder``."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)


def text_encoder(vocab_size: int, projection: bool = False) -> Any:
    """A two-layer CLIP text encoder (with a projection: SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=vocab_size, max_position_embeddings=16, projection_dim=HIDDEN,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def unet(cross_attention_dim: int, sdxl: bool = False) -> Any:
    """A two-level conditional UNet on 4 x 8 x 8 latents (SDXL: with its added conditioning)."""
    from diffusers import UNet2DConditionModel

    extra = {}
    if sdxl:  # time ids (6 x 4) and the pooled text embedding (16)
        extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": 4,
                 "projection_class_embeddings_input_dim": 6 * 4 + HIDDEN,
                 "use_linear_projection": True}  # fmt: skip
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
        norm_num_groups=4, attention_head_dim=4, **extra,
    )  # fmt: skip


def vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, layers_per_block=1,
    )  # fmt: skip


def tiny_sd(folder: Path, seed: int = 0, **scheduler: Any) -> Any:
    """A StableDiffusionPipeline with SD 1.x's PNDMScheduler config (``scheduler`` overrides it,
    e.g. ``prediction_type="v_prediction"``); weights from ``torch.manual_seed(seed)``."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tok = tokenizer(folder)
    pipe = StableDiffusionPipeline(
        vae=vae(), text_encoder=text_encoder(len(tok)), tokenizer=tok, unet=unet(HIDDEN),
        scheduler=PNDMScheduler(**{**SD_SCHEDULER, **scheduler}), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl(folder: Path, seed: int = 0, **scheduler: Any) -> Any:
    """A StableDiffusionXLPipeline (two text encoders, the second with a projection) with SDXL's
    EulerDiscreteScheduler config (``scheduler`` overrides it)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tok = tokenizer(folder)
    pipe = StableDiffusionXLPipeline(
        vae=vae(), text_encoder=text_encoder(len(tok)), text_encoder_2=text_encoder(len(tok), True),
        tokenizer=tok, tokenizer_2=tok, unet=unet(2 * HIDDEN, sdxl=True),
        scheduler=EulerDiscreteScheduler(**{**SDXL_SCHEDULER, **scheduler}),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


class CallCounter:
    """Counts a module's forward calls (a forward pre-hook): ``with CallCounter(unet) as n``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.calls = module, 0

    def __enter__(self) -> CallCounter:
        self.handle = self.module.register_forward_pre_hook(self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _count(self, *args: object) -> None:
        self.calls += 1
