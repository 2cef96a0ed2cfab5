"""Initial noise: a generator argument that cannot draw this batch is one clear ValueError."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_unet

from pndm.noise import randn_tensor

SHAPE = (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("generator", "needle"),
    [
        ([], "got an empty list"),
        ((), "got an empty tuple"),
        ([torch.Generator() for _ in range(3)], "list of 3 generators for a batch of 2"),
        ([torch.Generator(), "seed"], "got str"),
        (7, "got int"),
    ],
)
def test_a_generator_that_cannot_draw_the_batch_is_a_value_error(generator, needle) -> None:
    with pytest.raises(ValueError, match="generator") as err:
        randn_tensor(SHAPE, generator=generator)
    assert needle in str(err.value)


@pytest.mark.parametrize("generator", [[], ()])
def test_the_pipeline_refuses_an_empty_generator_list_before_any_model_call(generator) -> None:
    from pndm.compat.pipeline import PNDMPipeline
    from pndm.compat.scheduler import PNDMScheduler

    unet = tiny_unet()
    unet.register_forward_pre_hook(lambda *_: pytest.fail("the model was called"))
    pipe = PNDMPipeline(unet=unet, scheduler=PNDMScheduler())
    with pytest.raises(ValueError, match="generator must be a torch.Generator or a list"):
        pipe(2, 4, generator=generator, output_type="np")
