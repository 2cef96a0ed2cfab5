"""benchmarks/roofline.py's profile: every operator lands in the class the report names, and the
operators run outside the UNet (the solver's) are told apart from those inside it."""

from __future__ import annotations

import pytest
import torch
from benchlib.opclass import CLASS_NAMES, class_times, op_class, profile_call
from conftest import tiny_unet
from torch.profiler import ProfilerActivity, profile

from pndm import PNDMPipeline, PNDMScheduler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name, cls",
    [
        ("aten::mkldnn_convolution", "convolutions"),
        ("aten::convolution", "convolutions"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_softmax", "attention"),
        ("aten::addmm", "matmul/linear"),
        ("aten::mm", "matmul/linear"),
        ("aten::bmm", "matmul/linear"),
        ("aten::native_group_norm", "norms"),
        ("aten::silu_", "activations"),
        ("aten::copy_", "conversions"),
        ("aten::to", "conversions"),
        ("aten::_to_copy", "conversions"),
        ("aten::contiguous", "conversions"),
        ("aten::clone", "conversions"),
        ("aten::add_", "elementwise"),
        ("aten::cat", "elementwise"),
        ("aten::view", "other"),
        ("aten::empty", "other"),
    ],
)
def test_operator_classes(name: str, cls: str) -> None:
    assert op_class(name) == cls and cls in CLASS_NAMES


def test_profile_splits_the_unet_from_the_solver() -> None:
    unet = tiny_unet()
    pipe = PNDMPipeline(unet, PNDMScheduler(skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    run = lambda: pipe(2, 3, torch.Generator().manual_seed(0))  # noqa: E731
    shares = profile_call(run, unet)["shares"]
    assert set(shares) == set(CLASS_NAMES) and abs(sum(shares.values()) - 1) < 1e-9
    assert shares["convolutions"] > 0 and shares["norms"] > 0 and shares["solver"] > 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # the UNet's ranges are gone
        run()
    seconds = class_times(prof.events())
    assert seconds["convolutions"] == 0 and seconds["solver"] > 0
