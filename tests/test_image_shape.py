"""One reading of a UNet config's sample_size (`pndm.images.image_shape`): an int is a square,
a pair is (H, W), none is refused in one line; pndm sample's plan names the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error

from pndm.cli import main
from pndm.images import image_shape
from pndm.noise import noise_shape


@pytest.mark.parametrize(
    ("config", "shape"),
    [({"in_channels": 3, "sample_size": 32}, (3, 32, 32)),
     ({"in_channels": 1, "sample_size": [16, 24]}, (1, 16, 24))],
)  # fmt: skip
def test_sample_size_int_or_height_width(config: dict, shape: tuple) -> None:
    assert image_shape(config) == shape
    assert noise_shape(config, 5) == (5, *shape)


def test_no_sample_size_is_refused_where_no_latents_give_it(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="no sample_size"):
        image_shape({"in_channels": 3, "sample_size": None})
    from pndm.assets import shipped_model_path
    from pndm.compat.pipeline import PNDMPipeline

    pipe = PNDMPipeline.from_pretrained(shipped_model_path())
    config = dict(pipe.unet.config, sample_size=None)
    pipe.unet.from_config(config).save_pretrained(tmp_path / "m" / "unet")
    pipe.scheduler.save_pretrained(tmp_path / "m" / "scheduler")
    code = main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(capsys, code, "unet/config.json: the UNet config has no sample_size")
