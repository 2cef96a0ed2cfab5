"""Configs as diffusers takes them: a frozen ``dict`` with attribute access, both ways round.

The oracle is diffusers itself: its ``from_config`` and ``PNDMPipeline`` must accept our objects
and give what they give with diffusers' own scheduler.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_UNET

import pndm
from pndm.config import FrozenConfig

diffusers = pytest.importorskip("diffusers")

# Non-default values of every diffusers PNDMScheduler key, so a dropped key would show.
NON_DEFAULT = dict(
    num_train_timesteps=500,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    set_alpha_to_one=True,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    steps_offset=1,
)


def pndm_unet_kwargs() -> dict:
    """An 8x8 one-channel UNet, the same for both libraries."""
    return {
        **SMALL_UNET,
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": (8, 16),
    }


def tiny_diffusers_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(**pndm_unet_kwargs()).eval()


def run_pipeline(pipe: object, steps: int = 2) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(num_inference_steps=steps, generator=torch.manual_seed(0), output_type="np").images


def test_config_is_a_dict_with_attribute_access() -> None:
    s = pndm.PNDMScheduler(**NON_DEFAULT)
    assert isinstance(s.config, dict) and isinstance(s.config, FrozenConfig)
    assert s.config.num_train_timesteps == s.config["num_train_timesteps"] == 500
    assert {**s.config} == dict(s.config) == s.config
    unet = pndm.UNet2DModel(**pndm_unet_kwargs())
    assert isinstance(unet.config, dict) and unet.config.block_out_channels == (8, 16)
    with pytest.raises(AttributeError, match="no key 'nope'"):
        _ = s.config.nope


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.__setitem__("steps_offset", 3),
        lambda c: c.__delitem__("steps_offset"),
        lambda c: c.update(steps_offset=3),
        lambda c: c.pop("steps_offset"),
        lambda c: c.popitem(),
        lambda c: c.setdefault("new", 1),
        lambda c: c.clear(),
        lambda c: c.__ior__({"steps_offset": 3}),
    ],
    ids=["setitem", "delitem", "update", "pop", "popitem", "setdefault", "clear", "ior"],
)
def test_config_is_frozen(mutate: object) -> None:
    s = pndm.PNDMScheduler(steps_offset=1)
    before = dict(s.config)
    with pytest.raises(TypeError, match="read-only"):
        mutate(s.config)
    with pytest.raises(AttributeError, match="read-only"):
        s.config.steps_offset = 3
    with pytest.raises(AttributeError, match="read-only"):
        del s.config.steps_offset
    assert dict(s.config) == before


def test_config_copies_pickles_and_serialises() -> None:
    config = pndm.PNDMScheduler(**NON_DEFAULT).config
    for other in (copy.copy(config), copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert type(other) is FrozenConfig and other == config
    assert json.loads(json.dumps(config)) == dict(config)
    assert config | {"steps_offset": 2} == {**config, "steps_offset": 2}  # a new plain dict


def test_save_config_still_writes_diffusers_json(tmp_path: Path) -> None:
    pndm.PNDMScheduler(**NON_DEFAULT).save_pretrained(tmp_path / "ours")
    diffusers.PNDMScheduler(**NON_DEFAULT).save_pretrained(tmp_path / "theirs")
    ours = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "scheduler_config.json").read_text())
    assert ours == theirs
    loaded = pndm.PNDMScheduler.from_pretrained(tmp_path / "ours")
    assert loaded.config == pndm.PNDMScheduler(**NON_DEFAULT).config


def test_diffusers_from_config_takes_ours() -> None:
    ours = pndm.PNDMScheduler(**NON_DEFAULT)
    theirs = diffusers.PNDMScheduler.from_config(ours.config)
    assert {k: theirs.config[k] for k in NON_DEFAULT} == NON_DEFAULT


def test_round_trip_ours_diffusers_ours_is_unchanged() -> None:
    ours = pndm.PNDMScheduler(**NON_DEFAULT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no key of ours is unknown to diffusers, none back
        theirs = diffusers.PNDMScheduler.from_config(ours.config)
        back = pndm.PNDMScheduler.from_config(theirs.config)
    assert back.config == ours.config
    assert list(back.config) == list(ours.config)


def test_diffusers_pipeline_with_our_scheduler_runs() -> None:
    ours = pndm.PNDMScheduler(skip_prk_steps=True)
    pipe = diffusers.PNDMPipeline(unet=tiny_diffusers_unet(), scheduler=ours)
    reference = diffusers.PNDMPipeline(
        unet=tiny_diffusers_unet(), scheduler=diffusers.PNDMScheduler(skip_prk_steps=True)
    )
    images = run_pipeline(pipe)
    assert images.shape == (1, 8, 8, 1) and np.isfinite(images).all()
    np.testing.assert_array_equal(images, run_pipeline(reference))


def test_swap_idiom_in_a_diffusers_pipeline_matches_diffusers() -> None:
    """README: ``pipe.scheduler = pndm.PNDMScheduler.from_config(pipe.scheduler.config)``."""
    config = dict(skip_prk_steps=True)
    reference = diffusers.PNDMPipeline(tiny_diffusers_unet(), diffusers.PNDMScheduler(**config))
    pipe = diffusers.PNDMPipeline(tiny_diffusers_unet(), diffusers.PNDMScheduler(**config))
    pipe.scheduler = pndm.PNDMScheduler.from_config(pipe.scheduler.config)
    assert isinstance(pipe.scheduler, pndm.PNDMScheduler)
    np.testing.assert_allclose(run_pipeline(pipe), run_pipeline(reference), atol=1e-5)


def test_diffusers_pipeline_runs_our_unet_too() -> None:
    theirs = tiny_diffusers_unet()
    ours = pndm.UNet2DModel(**pndm_unet_kwargs()).eval()
    ours.load_state_dict(theirs.state_dict())
    scheduler = pndm.PNDMScheduler(skip_prk_steps=True)
    images = run_pipeline(diffusers.PNDMPipeline(unet=ours, scheduler=scheduler))
    reference = run_pipeline(diffusers.PNDMPipeline(unet=theirs, scheduler=scheduler))
    np.testing.assert_allclose(images, reference, atol=1e-5)
