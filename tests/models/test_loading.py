"""pndm.models.loading: the public weight loader that from_pretrained and convert share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SMALL_UNET

from pndm.models.loading import load_weights
from pndm.models.unet_2d import UNet2DModel


def test_load_weights_fills_a_meta_model() -> None:
    torch.manual_seed(0)
    source = UNet2DModel(**SMALL_UNET).eval()
    with torch.device("meta"):
        model = UNet2DModel(**SMALL_UNET)
    load_weights(model, source.state_dict(), Path("state"), torch.float64)
    assert model.device.type == "cpu" and model.dtype == torch.float64
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = source.double()(x, 10).sample
    torch.testing.assert_close(model.eval()(x, 10).sample, expected, rtol=0, atol=0)


def test_load_weights_names_the_source_and_the_missing_key() -> None:
    source = UNet2DModel(**SMALL_UNET)
    state = {k: v for k, v in source.state_dict().items() if k != "conv_out.bias"}
    with torch.device("meta"):
        model = UNet2DModel(**SMALL_UNET)
    with pytest.raises(
        ValueError, match=r"(?s)weights in here\.pt .*missing \(1\): conv_out\.bias"
    ):
        load_weights(model, state, Path("here.pt"), torch.float32)
